"""The blob store (migration 26): images' and files' bytes kept once per tenant, written
with the message that refers to them, read only through a session's own reference,
freed with the last session that refers to them, counted in the tenant's quota.

Every test runs on SQLite and, with AGENTD_TEST_POSTGRES_URL, on PostgreSQL."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable

import pytest

from agentd.errors import NotFound, QuotaExceeded
from agentd.store import Quota, Store, open_store
from agentd.store import blobs as _blobs
from agentd.store import store as store_module
from agentd.store._schema import MIGRATIONS
from agentd.store.engine import Tx
from agentd.store.log import Accepted
from agentd.store.records import NewBlob


def blob(data: bytes, media_type: str = "image/png") -> NewBlob:
    return NewBlob(sha256=hashlib.sha256(data).hexdigest(), media_type=media_type,
                   size=len(data), width=1, height=1, data=data)


async def agent(store: Store, name: str = "a", tenant: str = "t1") -> str:
    record = await store.create_agent(name=name, model="scripted", instructions="",
                                      tools=[], settings={"tenant": tenant})
    return record.id


def writing(tenant: str, blobs: list[NewBlob], store: Store, quota: Quota | None = None
            ) -> Callable[[Tx, Accepted], None]:
    def also(tx: Tx, accepted: Accepted) -> None:
        _blobs.put(tx, accepted.session.id, tenant, blobs, 1.0, quota=quota,
                   dialect=store.dialect)
    return also


async def count(store: Store, table: str) -> int:
    row = await store.engine.read(lambda tx: tx.one(f"SELECT COUNT(*) FROM {table}"))
    assert row is not None
    return int(row[0])


async def test_a_blob_is_written_with_its_message_and_read_through_its_session(
        store: Store) -> None:
    a = await agent(store)
    b = blob(b"\x89PNG one")
    sent = await store.accept_message(agent_id=a, key="k", content="x",
                                      also=writing("t1", [b], store))
    assert await store.blob(sent.session.id, b.sha256) == ("image/png", b"\x89PNG one")
    assert await store.blob_data(sent.session.id, [b.sha256, "f" * 64]) == {
        b.sha256: b"\x89PNG one"}
    assert await store.blob_meta("t1", [b.sha256]) == {b.sha256: ("image/png", 8, 1, 1)}
    # Another tenant holds nothing of that hash, and another session reads nothing.
    assert await store.blob_meta("t2", [b.sha256]) == {}
    other = await store.accept_message(agent_id=a, key="other", content="y")
    assert await store.blob(other.session.id, b.sha256) is None


async def test_a_refused_message_leaves_no_blob(store: Store) -> None:
    a = await agent(store)
    b = blob(b"bytes")

    def then_fail(tx: Tx, accepted: Accepted) -> None:
        writing("t1", [b], store)(tx, accepted)
        raise RuntimeError("refused after the blob was written")

    with pytest.raises(RuntimeError):
        await store.accept_message(agent_id=a, key="k", content="x", also=then_fail)
    assert await count(store, "blobs") == 0
    assert await count(store, "blob_refs") == 0


async def test_a_hash_the_tenant_does_not_hold_is_refused(store: Store) -> None:
    a = await agent(store, "a", "t1")
    b = await agent(store, "b", "t2")
    data = blob(b"t2's secret")
    await store.accept_message(agent_id=b, key="k", content="x",
                               also=writing("t2", [data], store))
    guess = NewBlob(sha256=data.sha256, media_type="", size=0)  # no bytes: by hash
    with pytest.raises(NotFound) as caught:
        await store.accept_message(agent_id=a, key="k", content="x",
                                   also=writing("t1", [guess], store))
    assert caught.value.code == "blob_not_found"
    assert [s.key for s in await store.list_sessions(a)] == []


async def test_the_same_bytes_are_kept_once_per_tenant(store: Store) -> None:
    a = await agent(store, "a", "t1")
    b = await agent(store, "b", "t2")
    data = blob(b"shared bytes")
    for agent_id, tenant in ((a, "t1"), (a, "t1"), (b, "t2")):
        for key in ("k1", "k2"):
            await store.accept_message(agent_id=agent_id, key=key, content="x",
                                       also=writing(tenant, [data], store))
    assert await count(store, "blobs") == 2  # one per tenant
    assert await count(store, "blob_refs") == 4  # one per session


async def test_deleting_the_last_session_that_refers_to_a_blob_frees_it(
        store: Store) -> None:
    a = await agent(store)
    shared, own = blob(b"shared"), blob(b"own")
    await store.accept_message(agent_id=a, key="k1", content="x",
                               also=writing("t1", [shared, own], store))
    await store.accept_message(agent_id=a, key="k2", content="x",
                               also=writing("t1", [shared], store))
    await store.delete_session(a, "k1")
    assert await store.blob_meta("t1", [shared.sha256, own.sha256]) == {
        shared.sha256: ("image/png", 6, 1, 1)}
    await store.delete_session(a, "k2")
    assert await count(store, "blobs") == 0


async def test_deleting_an_agent_frees_its_blobs_but_not_its_tenants_others(
        store: Store) -> None:
    a = await agent(store, "a")
    b = await agent(store, "b")
    shared = blob(b"shared")
    await store.accept_message(agent_id=a, key="k", content="x",
                               also=writing("t1", [shared, blob(b"a's")], store))
    await store.accept_message(agent_id=b, key="k", content="x",
                               also=writing("t1", [shared], store))
    await store.delete_agent("a")
    assert list(await store.blob_meta("t1", [shared.sha256])) == [shared.sha256]
    assert await count(store, "blobs") == 1


async def test_expired_sessions_free_their_blobs(store: Store) -> None:
    a = await agent(store)
    sent = await store.accept_message(agent_id=a, key="k", content="x",
                                      also=writing("t1", [blob(b"old")], store))
    await store.engine.write(lambda tx: tx.execute(
        "UPDATE runs SET status = 'completed' WHERE session_id = ?", (sent.session.id,)))
    gone = await store.expire_sessions(idle_before=store.clock.time() + 10)
    assert [g[0] for g in gone] == [sent.session.id]
    assert await count(store, "blobs") == 0


async def test_a_fork_copies_references_not_bytes(store: Store) -> None:
    a = await agent(store)
    data = blob(b"forked")
    sent = await store.accept_message(agent_id=a, key="k", content="x",
                                      also=writing("t1", [data], store))
    await store.engine.write(lambda tx: tx.execute(
        "UPDATE runs SET status = 'completed' WHERE session_id = ?", (sent.session.id,)))
    fork = await store.fork_session(sent.session.id, key="f", seq=sent.events[-1].seq,
                                    source={"agent": "a", "session": "k"})
    assert await store.blob(fork.id, data.sha256) == ("image/png", b"forked")
    assert await count(store, "blobs") == 1
    await store.delete_session(a, "k")
    assert await store.blob(fork.id, data.sha256) == ("image/png", b"forked")
    await store.delete_session(a, "f")
    assert await count(store, "blobs") == 0


async def test_storage_quota_counts_bytes_once_and_refuses_past_it(store: Store) -> None:
    a = await agent(store)
    quota = Quota("t1", "storage_bytes", 10)
    await store.accept_message(agent_id=a, key="k1", content="x",
                               also=writing("t1", [blob(b"123456")], store, quota))
    # The same bytes again cost nothing more.
    await store.accept_message(agent_id=a, key="k2", content="x",
                               also=writing("t1", [blob(b"123456")], store, quota))
    with pytest.raises(QuotaExceeded) as caught:
        await store.accept_message(agent_id=a, key="k3", content="x",
                                   also=writing("t1", [blob(b"abcdefg")], store, quota))
    assert caught.value.details["quota"] == "storage_bytes"
    assert await count(store, "blobs") == 1
    assert (await store.tenant_usage("t1"))["storage_bytes"] == 6


async def test_a_delete_and_a_new_reference_racing_keep_the_blob_if_referred_to(
        store: Store) -> None:
    """Deleting the only session that refers to a blob while another message refers to
    it: whichever commits first, the blob is there exactly while a reference is."""
    a = await agent(store)
    data = blob(b"raced")
    for round_ in range(10):
        await store.accept_message(agent_id=a, key="old", content="x",
                                   also=writing("t1", [data], store))
        await asyncio.gather(
            store.delete_session(a, "old"),
            store.accept_message(agent_id=a, key=f"new{round_}", content="x",
                                 also=writing("t1", [data], store)))
        refs = await count(store, "blob_refs")
        assert refs == round_ + 1
        assert await count(store, "blobs") == 1


@pytest.mark.empty_schema
async def test_migration_26_keeps_version_25_data(store_url: str,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store_module, "MIGRATIONS", [m for m in MIGRATIONS if m[0] < 26])
    old = await open_store(store_url)
    try:
        assert await old.schema_version() == 25
        a = await agent(old)
        sent = await old.accept_message(agent_id=a, key="k", content="before")
    finally:
        await old.close()
    monkeypatch.setattr(store_module, "MIGRATIONS", MIGRATIONS)
    store = await open_store(store_url)
    try:
        assert await store.schema_version() >= 26
        assert [e.data["content"] for e in await store.read_events(sent.session.id, after=0)
                if e.kind == "message.user"] == ["before"]
        data = blob(b"after")
        await store.accept_message(agent_id=a, key="k", content="x",
                                   also=writing("t1", [data], store))
        assert await store.blob(sent.session.id, data.sha256) == ("image/png", b"after")
    finally:
        await store.close()
