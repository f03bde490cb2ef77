"""Webhooks through the real daemon process, killed (SIGKILL) twice: once while the
receiver is down (events committed, deliveries failing), once while it is up and
right after a message was acknowledged. After the last restart every event of the log
reached the receiver at least once, signed, and no event got two deliveries."""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import free_port, wait_until
from tests.daemons import (
    Spawn,
    create_agent,
    read_events,
    send,
)
from tests.webhooks._receiver import Receiver

from agentd.store import NewEvent, open_store

pytestmark = pytest.mark.e2e

ENV = {"AGENTD_WEBHOOKS": json.dumps({
    "allow_hosts": ["127.0.0.1"], "allow_http": ["127.0.0.1"], "backoff_s": 0.2,
    "backoff_max_s": 0.5, "poll_s": 0.2, "max_attempts": 100, "timeout_s": 5})}
KEYS = ("user:a", "user:b")


def _deliveries(client: Any, hook_id: str) -> list[dict[str, Any]]:
    response = client.get(f"/v1/webhooks/{hook_id}/deliveries", params={"limit": 1000})
    assert response.status_code == 200, response.text
    found: list[dict[str, Any]] = response.json()["deliveries"]
    return found


async def _commit_behind_the_daemons_back(home: Path) -> None:
    store = await open_store(f"sqlite:///{home / 'agentd.db'}")
    try:
        agent = await store.get_agent("hooked")
        session = await store.get_session(agent.id, "user:d")
        await store.append(session.id, [NewEvent(kind="message.proactive",
                                                 data={"content": f"note {i}"})
                                        for i in range(3)])
    finally:
        await store.close()


def test_sigkill_loses_no_delivery_and_makes_none_twice(spawn: Spawn, home: Path
                                                         ) -> None:
    port = free_port()  # the receiver: nothing listens there yet
    daemon = spawn(env=ENV)
    with daemon.client() as client:
        create_agent(client, "hooked")
        made = client.post("/v1/agents/hooked/webhooks",
                           json={"url": f"http://127.0.0.1:{port}/hook"})
        assert made.status_code == 201, made.text
        hook = made.json()
        for i in range(6):
            sent = send(client, "hooked", KEYS[i % 2], f"down {i}", wait=True)
            assert sent.status_code in (200, 201), sent.text
        # Deliveries were made and tried (refused connections), none delivered.
        wait_until(lambda: any(d["attempts"] >= 1 for d in _deliveries(client, hook["id"])),
                   what="a failed attempt")
        assert all(d["status"] == "pending" for d in _deliveries(client, hook["id"]))
    daemon.signal_and_wait(signal.SIGKILL)

    receiver = Receiver(port=port, secret=hook["secret"])
    try:
        daemon = spawn(env=ENV)
        with daemon.client() as client:
            for i in range(6):
                sent = send(client, "hooked", KEYS[i % 2], f"up {i}", wait=True)
                assert sent.status_code in (200, 201), sent.text
            # A run that ends just before the kill (its session gets nothing after the
            # restart: only the catch-up scan finds what was not yet a delivery), and a
            # message acknowledged, then killed at once.
            ended = send(client, "hooked", "user:d", "ended, then killed", wait=True)
            assert ended.status_code in (200, 201), ended.text
            last = send(client, "hooked", "user:c", "acknowledged, then killed")
            assert last.status_code in (200, 201, 202), last.text
        daemon.signal_and_wait(signal.SIGKILL)
        # Events committed that no daemon turned into deliveries (what a kill between
        # the commit and the ingest leaves): only the catch-up scan at start finds them,
        # as user:d gets nothing new after the restart.
        asyncio.run(_commit_behind_the_daemons_back(home))

        daemon = spawn(env=ENV)
        with daemon.client() as client:
            def settled() -> dict[tuple[str, int], dict[str, Any]] | None:
                logged: dict[tuple[str, int], dict[str, Any]] = {}
                for key in (*KEYS, "user:c", "user:d"):
                    events = read_events(client, "hooked", key)
                    ended = [e for e in events if e["kind"] in ("run.completed",
                                                                 "run.failed")]
                    if not ended:
                        return None
                    logged.update({(key, e["seq"]): e for e in events})
                deliveries = _deliveries(client, hook["id"])
                if len(deliveries) < len(logged) or any(
                        d["status"] != "delivered" for d in deliveries):
                    return None
                return logged

            logged = wait_until(settled, what="every event delivered after the restarts")
            deliveries = _deliveries(client, hook["id"])
    finally:
        receiver.close()

    # No event got two deliveries: one delivery per logged event, and no more.
    assert len(deliveries) == len(logged), (len(deliveries), len(logged))
    assert len({d["id"] for d in deliveries}) == len(deliveries)
    # A delivery cut by the SIGKILL while its body was on the wire arrives short (its
    # signature fails, so no receiver takes it) and is sent again after the restart.
    complete = [r for r in receiver.received
                if len(r.body) == int(r.headers.get("content-length") or 0)]
    assert all(not r.verified for r in receiver.received if r not in complete)
    # Every event reached the receiver (at least once), signed, as logged.
    assert all(r.verified for r in complete)
    got: dict[tuple[str, int], set[str]] = {}
    for request in complete:
        body = request.json
        assert body["id"] == request.id
        place = (body["session"], body["event"]["seq"])
        assert body["event"] == logged[place]
        got.setdefault(place, set()).add(request.id)
    assert set(got) == set(logged)
    # ... each under one delivery id, however often it was sent.
    assert all(len(ids) == 1 for ids in got.values())
    assert {i for ids in got.values() for i in ids} == {d["id"] for d in deliveries}
