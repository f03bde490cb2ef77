"""Sandbox uids are reclaimed (issue 27, chain 5): churning agents never uses up the
range, a uid is given again only once nothing of its previous agent can remain (files,
processes, IPC objects, on every node that used it), and a tenant holds at most its
cap. On SQLite and PostgreSQL, with real sandboxes under root."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import WORKER_UID_BASE

from agentd.assembly import Runtime
from agentd.config import Settings
from agentd.errors import AgentNotFound, Conflict, QuotaExceeded, ToolError
from agentd.sandbox import limits as _limits
from agentd.sandbox import reclaim as _reclaim
from agentd.sandbox.backends import BubblewrapBackend, ProcessBackend
from agentd.sandbox.caps import TenantCaps
from agentd.sandbox.limits import Limits, spawn_kwargs
from agentd.store import open_store
from agentd.store import store as store_module
from agentd.store._schema import MIGRATIONS

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="per-agent uids need a root "
                                "daemon (without root every sandbox keeps its uid)")

ALLOW = {"policy": {"rules": [{"tool": "shell", "action": "allow"}]}}


def shell(command: str) -> dict[str, Any]:
    return {"tool_calls": [{"name": "shell", "arguments": {"command": command}}]}


async def run_commands(runtime: Runtime, agent: str, commands: list[str]) -> list[str]:
    """The outputs of ``commands``, run by the agent's shell tool one per step."""
    await runtime.update_agent(agent, {"settings": {
        **(await runtime.get_agent(agent)).settings,
        "script": [*(shell(c) for c in commands), {"text": "done"}]}})
    sent = await runtime.send(agent, f"k{len(commands)}", "go")
    assert (await runtime.wait(sent.run.id)).status == "completed"
    return [e.data["output"] for e in await runtime.read_events(sent.session.id)
            if e.kind == "tool.finished"]


# Ranges of this worker's own (tests/conftest.py): a sweep of a range another worker's
# test uses at the same time would kill its sandboxes.
R0, R1, R2 = (WORKER_UID_BASE + 19_000 + 100 * k for k in range(3))


def small_range(settings: Settings, store_url: str, base: int, count: int) -> Settings:
    settings.database_url = store_url
    settings.sandbox = settings.sandbox.model_copy(update={"uid_base": base,
                                                           "uid_count": count})
    return settings


# -- churn ------------------------------------------------------------------------------


@needs_root
async def test_create_and_delete_churn_never_uses_up_the_range(
        settings: Settings, store_url: str) -> None:
    """On main: every agent took a uid for good, the 51st create was 409
    sandbox_uids_exhausted for every tenant."""
    runtime = await Runtime.open(small_range(settings, store_url, R0, 50))
    try:
        for i in range(160):
            agent = await runtime.create_agent(name=f"churn{i}", model="scripted")
            uid = await runtime.sandboxes.user(agent.id)
            assert uid is not None and R0 <= uid[0] < R0 + 50
            await runtime.delete_agent(agent.name)
        kept = [await runtime.create_agent(name=f"kept{i}", model="scripted")
                for i in range(50)]
        uids = {await runtime.sandboxes.user(a.id) for a in kept}
        assert len(uids) == 50  # fifty live agents, fifty distinct uids
        with pytest.raises(Conflict) as full:
            await runtime.create_agent(name="one-too-many", model="scripted")
        assert full.value.code == "sandbox_uids_exhausted"
    finally:
        await runtime.close()


@needs_root
async def test_agents_that_ran_commands_get_their_uids_reclaimed(
        settings: Settings, store_url: str) -> None:
    """Each agent runs a command (so its uid was used here) and is deleted: with two
    uids in the range, the third agent already needs a swept one."""
    runtime = await Runtime.open(small_range(settings, store_url, R1, 2))
    try:
        seen = []
        for i in range(6):
            await runtime.create_agent(name=f"a{i}", model="scripted", tools=["shell"],
                                       settings=ALLOW)
            [out] = await run_commands(runtime, f"a{i}", ["id -u"])
            seen.append(int(out.splitlines()[1]))
            await runtime.delete_agent(f"a{i}")
        assert set(seen) <= {R1, R1 + 1} and len(set(seen)) == 2
    finally:
        await runtime.close()


# -- nothing of the previous holder -------------------------------------------------------


def _world_writable() -> list[str]:
    """The host's world-writable directories near the top of its tree (where a uid of
    the process backend could leave files, were the host not read-only to it)."""
    found = subprocess.run(
        ["find", "/", "-xdev", "-maxdepth", "3", "-type", "d", "-perm", "-0002",
         "-not", "-path", "/proc/*"], capture_output=True, text=True, check=False)
    places = {line for line in found.stdout.splitlines() if line}
    return sorted(places | {"/tmp", "/var/tmp", "/dev/shm"})


LEAVE = ("for d in {places} .; do echo a-secret > $d/left-by-a 2>/dev/null && "
         "chmod 600 $d/left-by-a && echo wrote $d; done; "
         "(setsid sleep 600 >/dev/null 2>&1 &); ipcmk -M 4096 >/dev/null; "
         "ipcmk -Q >/dev/null; echo left")
LOOK = ("for d in {places} .; do cat $d/left-by-a 2>/dev/null; done; "
        # (a zombie is dead: here pid 1 may not reap what the kill left)
        "ps -u $(id -u) -o s=,comm= | awk '$1 != \"Z\" {{print $2}}' | grep -v -e '^ps$' "
        "-e '^sh$' -e '^bash$' -e '^grep$' -e '^awk$' -e '^timeout$'; "
        "ipcs -m -q -c | grep -c \" $(id -u) \"; echo looked")


@needs_root
@pytest.mark.parametrize("backend", [ProcessBackend, BubblewrapBackend])
async def test_a_reclaimed_uid_never_sees_its_previous_holders_files(
        settings: Settings, store_url: str, backend: type[Any]) -> None:
    if backend.unavailable() is not None:
        pytest.skip(f"{backend.name}: {backend.unavailable()}")
    places = " ".join(_world_writable())
    runtime = await Runtime.open(small_range(settings, store_url, R2, 1))
    sandbox = {"sandbox": {"backend": backend.name}, **ALLOW}
    try:
        a = await runtime.create_agent(name="a", model="scripted", tools=["shell"],
                                       settings=sandbox)
        uid = await runtime.sandboxes.user(a.id)
        assert uid is not None
        [left] = await run_commands(runtime, "a", [LEAVE.format(places=places)])
        assert "left" in left, left
        await runtime.delete_agent("a")
        # The one uid of the range: b can only be given a's, once it is swept.
        b = await runtime.create_agent(name="b", model="scripted", tools=["shell"],
                                       settings=sandbox)
        assert await runtime.sandboxes.user(b.id) == uid
        [looked] = await run_commands(runtime, "b", [LOOK.format(places=places)])
        assert "a-secret" not in looked, looked
        assert "sleep" not in looked, looked
        assert looked.splitlines()[1:] == ["0", "looked"], looked
        # On the host too: no file, process or IPC object of the uid is left.
        for place in places.split():
            path = Path(place) / "left-by-a"
            assert not (path.exists() and path.stat().st_uid == uid[0]), path
        assert _reclaim.processes_of([uid[0]]) == {}
        assert _reclaim._ipc_of({uid[0]}) == []
    finally:
        await runtime.close()


@needs_root
def test_nothing_starts_as_a_uid_being_reclaimed(tmp_path: Path) -> None:
    """A sandbox of the deleted agent asked for meanwhile is refused, even one whose
    start was prepared before the sweep began (checked again in the child)."""
    user = (313_500, 313_500)
    prepared = spawn_kwargs(Limits(), user=user)
    _limits.retire([user[0]])
    try:
        with pytest.raises(ToolError) as refused:
            spawn_kwargs(Limits(), user=user)
        assert refused.value.code == "sandbox_unavailable"
        with pytest.raises(subprocess.SubprocessError):
            subprocess.run(["true"], env={}, check=False, **prepared)
    finally:
        _limits.reinstate([user[0]])
    assert subprocess.run(["true"], env={}, check=False, **prepared).returncode == 0


# -- per-tenant caps ----------------------------------------------------------------------


@needs_root
async def test_a_tenant_holds_at_most_its_cap_of_uids(runtime: Runtime) -> None:
    caps = {"t1": TenantCaps(sandbox_uids=2)}
    runtime.sandboxes.caps_of = lambda tenant: caps.get(tenant, TenantCaps())
    for name in ("t1a", "t1b"):
        await runtime.create_agent(name=name, model="scripted", settings={"tenant": "t1"})
    with pytest.raises(QuotaExceeded) as refused:
        await runtime.create_agent(name="t1c", model="scripted", settings={"tenant": "t1"})
    assert refused.value.status == 403 and refused.value.code == "quota_exceeded"
    assert "'t1'" in refused.value.message and "2 sandbox uids" in refused.value.message
    assert refused.value.details == {"tenant": "t1", "quota": "sandbox_uids", "limit": 2}
    assert "t1c" not in [a.name for a in await runtime.list_agents()]  # nothing kept
    for i in range(3):  # another tenant is not held back
        await runtime.create_agent(name=f"t2{i}", model="scripted", settings={"tenant": "t2"})
    await runtime.delete_agent("t1a")
    await runtime.create_agent(name="t1c", model="scripted", settings={"tenant": "t1"})
    # An agent moved into the tenant counts for it from then on.
    await runtime.delete_agent("t1b")
    await runtime.update_agent("t20", {"settings": {"tenant": "t1"}})
    with pytest.raises(QuotaExceeded, match="quota"):
        await runtime.create_agent(name="t1d", model="scripted", settings={"tenant": "t1"})


# -- the rows: nodes, quarantine, migration --------------------------------------------------


async def test_a_uid_is_free_only_once_every_node_that_used_it_swept_it(
        store_url: str) -> None:
    store = await open_store(store_url)
    try:
        async def agent(name: str) -> str:
            return (await store.create_agent(name=name, model="scripted", instructions="",
                                             tools=[], settings={})).id

        first = await agent("first")
        uid = await store.sandbox_uid(first, base=500_000, count=1, node="n1")
        assert await store.sandbox_uid(first, base=500_000, count=1, node="n2") == uid
        await store.delete_agent("first")
        with pytest.raises(AgentNotFound):  # a late node cannot record a use any more
            await store.sandbox_uid(first, base=500_000, count=1, node="n3")
        assert await store.quarantined_uids("n1") == [(uid, first)]
        assert await store.quarantined_uids("n3") == []
        second = await agent("second")
        assert await store.sandbox_uids_swept("n1", [uid]) == 0  # n2 still has to
        with pytest.raises(Conflict) as waiting:
            await store.sandbox_uid(second, base=500_000, count=1)
        assert waiting.value.code == "sandbox_uids_exhausted" and waiting.value.retryable
        assert await store.sandbox_uids_swept("n2", [uid]) == 1
        assert await store.sandbox_uid(second, base=500_000, count=1, node="n1") == uid

        # Used once where the host was writable to it: never given again.
        await store.sandbox_uid(second, base=500_000, count=1, node="n2", sealed=False)
        await store.delete_agent("second")
        assert await store.quarantined_uids("n2") == []
        assert await store.sandbox_uids_swept("n1", [uid]) == 0
        assert await store.sandbox_uids_swept("n2", [uid]) == 0
        third = await agent("third")
        with pytest.raises(Conflict, match=r"sandbox\.uid_count"):
            await store.sandbox_uid(third, base=500_000, count=1)
        # A uid no node used is free as soon as its agent is gone.
        assert await store.sandbox_uid(third, base=500_000, count=2) == uid + 1
        await store.delete_agent("third")
        fourth = await agent("fourth")
        assert await store.sandbox_uid(fourth, base=500_000, count=2) == uid + 1
    finally:
        await store.close()


@pytest.mark.empty_schema
async def test_migration_17_never_gives_again_a_uid_given_before(
        store_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Uids given before 17 were used where the process backend could write to the
    host: a deleted agent's stays out of use; a live agent keeps its own, counted for
    its tenant."""
    monkeypatch.setattr(store_module, "MIGRATIONS", [m for m in MIGRATIONS if m[0] < 17])
    # (that schema has no agent revisions: migration 24)
    note_revision = store_module.note_revision
    monkeypatch.setattr(store_module, "note_revision", lambda *args, **kwargs: None)
    old = await open_store(store_url)
    try:
        live = (await old.create_agent(name="live", model="scripted", instructions="",
                                       tools=[], settings={"tenant": "acme"})).id
        await old.engine.write(lambda tx: tx.executemany(
            "INSERT INTO sandbox_uids (uid, agent_id, created_at) VALUES (?, ?, 1)",
            [(600_000, live), (600_001, "a_gone")]))
    finally:
        await old.close()
    monkeypatch.setattr(store_module, "MIGRATIONS", MIGRATIONS)
    monkeypatch.setattr(store_module, "note_revision", note_revision)
    store = await open_store(store_url)
    try:
        assert await store.sandbox_uid(live, base=600_000, count=2) == 600_000
        newer = (await store.create_agent(name="newer", model="scripted", instructions="",
                                          tools=[], settings={"tenant": "acme"})).id
        with pytest.raises(Conflict) as full:
            await store.sandbox_uid(newer, base=600_000, count=2,
                                    cap_of=lambda tenant: None)
        assert full.value.code == "sandbox_uids_exhausted"
        with pytest.raises(QuotaExceeded) as capped:
            await store.sandbox_uid(newer, base=600_000, count=3,
                                    cap_of=lambda tenant: 1 if tenant == "acme" else None)
        assert capped.value.code == "quota_exceeded"
        await store.delete_agent("live")
        assert await store.quarantined_uids("") == []  # (never swept: not sealed)
        assert await store.sandbox_uid(newer, base=600_000, count=3) == 600_002
    finally:
        await store.close()
