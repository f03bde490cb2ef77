"""Two daemons (runtimes) sharing one PostgreSQL database, both delivering: every event
reaches the receiver, one delivery per event, each sent by one node only (leases)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import asgi_client, eventually
from tests.webhooks._receiver import Receiver

from agentd.assembly import Runtime
from agentd.config import Settings, WebhooksConfig

pytestmark = pytest.mark.postgres


def _settings(home: Path, url: str, node: str) -> Settings:
    return Settings(home=home, demo_agent=False, shutdown_grace_s=2.0, database_url=url,
                    node_id=node, webhooks=WebhooksConfig(
                        allow_hosts=["127.0.0.1"], allow_http=["127.0.0.1"],
                        backoff_s=0.05, backoff_max_s=0.2, poll_s=0.2, concurrency=4))


async def test_two_nodes_send_each_delivery_once(tmp_path: Path, pg_url: str) -> None:
    receiver = Receiver()
    one = await Runtime.open(_settings(tmp_path / "a", pg_url, "node-a"))
    two = await Runtime.open(_settings(tmp_path / "b", pg_url, "node-b"))
    try:
        async with asgi_client(one.settings, one) as a, \
                asgi_client(two.settings, two) as b:
            assert (await a.post("/v1/agents", json={"name": "bot"})).status_code == 201
            made = await a.post("/v1/agents/bot/webhooks", json={"url": receiver.url})
            assert made.status_code == 201, made.text
            hook = made.json()
            receiver.secret = hook["secret"]

            async def say(api: Any, key: str, i: int) -> None:
                response = await api.post(f"/v1/agents/bot/sessions/{key}/messages",
                                          json={"content": f"m{i}", "wait": True})
                assert response.status_code in (200, 201), response.text

            await asyncio.gather(*(say(a if i % 2 else b, f"s{i % 4}", i)
                                   for i in range(16)))
            logged: set[tuple[str, int]] = set()
            for n in range(4):
                events = (await a.get(f"/v1/agents/bot/sessions/s{n}/events")).json()
                logged |= {(f"s{n}", e["seq"]) for e in events["events"]}

            def received() -> set[tuple[str, int]] | None:
                got = {(r.json["session"], r.json["event"]["seq"])
                       for r in receiver.received}
                return got if logged <= got else None

            await eventually(received, what="every event delivered")
            # ... and every delivery the receiver took recorded as delivered by the node
            # that sent it (one still reading its answer would be cut by the close).
            await eventually(lambda: one.webhooks.figures["delivered"]
                             + two.webhooks.figures["delivered"] == len(receiver.ids()),
                             what="the senders' records of what was delivered")
            page = (await a.get(f"/v1/webhooks/{hook['id']}/deliveries",
                                params={"limit": 1000})).json()["deliveries"]
    finally:
        await one.close()
        await two.close()
        receiver.close()
    ids = receiver.ids()
    assert all(r.verified for r in receiver.received)
    assert len(page) == len({d["id"] for d in page}) >= len(logged)
    assert len(ids) == len(set(ids)), "a delivery was sent twice"
    # Both nodes did some of the work (the leases shared it out), or one did it all.
    assert one.webhooks.figures["delivered"] + two.webhooks.figures["delivered"] == len(ids)
