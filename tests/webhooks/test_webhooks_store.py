"""Deliveries in the store, SQLite and PostgreSQL: one per event however often and by
however many nodes the log is scanned; a subscription starts after what was logged
before it; leases keep two nodes from sending one delivery, and a dead node's lease
expires."""

from __future__ import annotations

import asyncio
from typing import Any

from agentd.config import WebhooksConfig
from agentd.runtime.bus import EventBus
from agentd.store import NewEvent, Store
from agentd.store.webhooks import delivery_id
from agentd.webhooks import WebhookIn, Webhooks

URL = "http://127.0.0.1:9/hook"  # never sent to here: nothing starts the sender


def _service(store: Store, node: str = "n1") -> Webhooks:
    config = WebhooksConfig(allow_hosts=["127.0.0.1"], allow_http=["127.0.0.1"])
    return Webhooks(store, bus=EventBus(), config=config, node_id=node, daemon_ports=(),
                    exclusive=False)


async def _log(store: Store, session_id: str, count: int, kind: str = "message.assistant"
               ) -> None:
    for start in range(0, count, 250):
        await store.append(session_id, [NewEvent(kind=kind, data={"text": f"t{i}"})
                                        for i in range(start, min(start + 250, count))])


async def _all(store: Store, hook_id: str) -> list[Any]:
    return await store.list_deliveries(hook_id, limit=100_000)


async def test_each_event_makes_one_delivery_however_often_it_is_scanned(store: Store
                                                                         ) -> None:
    agent = await store.create_agent(name="a", model="scripted", instructions="",
                                     tools=[], settings={})
    before = await store.accept_message(agent_id=agent.id, key="old", content="before")
    one, two = _service(store, "n1"), _service(store, "n2")
    hook = await one.create("a", WebhookIn(url=URL, kinds=("*",)))
    only_runs = await one.create("a", WebhookIn(url=URL, kinds=("run.*",)))
    await _log(store, before.run.session_id, 3)
    fresh = await store.accept_message(agent_id=agent.id, key="new", content="hello")
    await _log(store, fresh.run.session_id, 1200)  # more than one ingest batch

    # Sessions with nothing new for a subscription are told apart by a read.
    assert set(await one.store.behind_among([before.run.session_id, "nope"])) == {
        before.run.session_id}
    # Two nodes catching up at once, then each again: every event once.
    made = await asyncio.gather(one.catch_up(), two.catch_up())
    assert await one.catch_up() == 0 and await two.catch_up() == 0
    deliveries = await _all(store, hook.id)
    old_session = await store.get_session(agent.id, "old")
    new_session = await store.get_session(agent.id, "new")
    expected = {delivery_id(hook.id, old_session.id, seq)
                for seq in range(3, old_session.last_seq + 1)}  # after the 2 it had
    expected |= {delivery_id(hook.id, new_session.id, seq)
                 for seq in range(1, new_session.last_seq + 1)}
    assert {d.id for d in deliveries} == expected
    assert len(deliveries) == len(expected) == 3 + 2 + 1200
    assert sum(made) >= len(expected)  # (the two nodes' counts include the second hook)
    runs = await _all(store, only_runs.id)
    assert [d.kind for d in runs] == ["run.queued"]
    assert all(d.status == "pending" and d.attempts == 0 for d in deliveries)


async def test_leases_keep_two_nodes_from_sending_one_delivery(store: Store) -> None:
    agent = await store.create_agent(name="a", model="scripted", instructions="",
                                     tools=[], settings={})
    service = _service(store)
    hook = await service.create("a", WebhookIn(url=URL))
    accepted = await store.accept_message(agent_id=agent.id, key="k", content="x")
    await _log(store, accepted.run.session_id, 40)
    await service.catch_up()
    now = 1e12  # everything is due
    first, second = await asyncio.gather(
        store.claim_deliveries(owner="n1", now=now, lease_s=60, limit=30),
        store.claim_deliveries(owner="n2", now=now, lease_s=60, limit=30))
    ids1, ids2 = {d.id for d, _, _ in first}, {d.id for d, _, _ in second}
    assert not ids1 & ids2
    assert len(ids1 | ids2) == 42  # 2 events of the message, 40 more
    assert all(url == URL and secret == hook.secret for _, url, secret in first)
    # Only the lease's holder records the outcome.
    some = next(iter(ids1))
    assert not await store.finish_attempt(some, owner="n2", now=now, delivered=True,
                                          next_attempt_at=None, status_code=200,
                                          error=None)
    assert await store.finish_attempt(some, owner="n1", now=now, delivered=True,
                                      next_attempt_at=None, status_code=200, error=None)
    assert (await store.get_delivery(some)).status == "delivered"
    # n1 dies: nothing is due until its leases expire, then another node takes them.
    assert await store.claim_deliveries(owner="n3", now=now + 1, lease_s=60,
                                        limit=100) == []
    taken = await store.claim_deliveries(owner="n3", now=now + 61, lease_s=60, limit=100)
    assert {d.id for d, _, _ in taken} == (ids1 | ids2) - {some}
    # A node that starts again drops its own leases at once.
    assert await store.release_deliveries("n3") == 41
    # A disabled subscription's deliveries wait (and are not due) until it is enabled.
    await service.update(hook.id, {"enabled": False})
    assert await store.claim_deliveries(owner="n1", now=now + 62, lease_s=60,
                                        limit=100) == []
    assert await store.next_delivery_due() is None
    await service.update(hook.id, {"enabled": True})
    assert await store.next_delivery_due() is not None
    again = await store.claim_deliveries(owner="n1", now=now + 62, lease_s=60, limit=100)
    assert len(again) == 41


async def test_old_finished_deliveries_are_pruned_and_never_made_again(store: Store
                                                                      ) -> None:
    agent = await store.create_agent(name="a", model="scripted", instructions="",
                                     tools=[], settings={})
    now = [1_000.0]
    config = WebhooksConfig(allow_hosts=["127.0.0.1"], allow_http=["127.0.0.1"],
                            keep_deliveries_s=100.0)
    service = Webhooks(store, bus=EventBus(), config=config, node_id="n1",
                       daemon_ports=(), exclusive=True, clock=lambda: now[0])
    hook = await service.create("a", WebhookIn(url=URL))
    accepted = await store.accept_message(agent_id=agent.id, key="k", content="x")
    await _log(store, accepted.run.session_id, 10)
    await service.catch_up()
    made = await _all(store, hook.id)
    assert len(made) == 12
    created = made[0].created_at
    # Six delivered, three failed, three still pending.
    for i in range(9):
        claimed = await store.claim_deliveries(owner="n1", now=1e12, lease_s=60, limit=1)
        assert claimed
        await store.finish_attempt(claimed[0][0].id, owner="n1", now=1e12,
                                   delivered=i < 6, next_attempt_at=None,
                                   status_code=200 if i < 6 else 500, error=None)
    statuses = sorted(d.status for d in await _all(store, hook.id))
    assert statuses.count("delivered") == 6 and statuses.count("pending") == 3
    # Not old enough yet: nothing goes.
    now[0] = created + 50
    assert await service.prune() == 0
    now[0] = created + 101
    assert await service.prune() == 9
    left = await _all(store, hook.id)
    assert sorted(d.status for d in left) == ["pending"] * 3
    # The cursor stays: a rescan makes none of the pruned ones again.
    assert await service.catch_up() == 0
    assert len(await _all(store, hook.id)) == 3
    off = Webhooks(store, bus=EventBus(), config=config.model_copy(
        update={"keep_deliveries_s": 0.0}), node_id="n1", daemon_ports=(),
        exclusive=True, clock=lambda: 1e15)
    assert await off.prune() == 0
