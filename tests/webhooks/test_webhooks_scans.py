"""The webhooks service on a daemon with no webhook: the events its runs make are not a
reason to scan the store (a scan per batch of events cost a quarter of the event loop
under spread schedule fires); a quiet wait, or one made, is. Nor does it follow the
bus while no subscription is enabled: it subscribes when one is made."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import eventually

from agentd.assembly import Runtime
from agentd.config import Settings, TelemetryConfig, WebhooksConfig
from agentd.webhooks.service import WebhookIn


async def test_events_without_a_webhook_start_no_scans(settings: Settings,
                                                       tmp_path: Path) -> None:
    settings.database_url = f"sqlite:///{tmp_path / 'agentd.db'}"
    settings.webhooks = WebhooksConfig(poll_s=60)  # (the periodic scan: not in this test)
    rt = await Runtime.open(settings)
    try:
        service = rt.webhooks
        await eventually(lambda: service.figures["scans"] >= 1, what="the first scan")
        first = service.figures["scans"]
        await rt.create_agent(name="a")
        for i in range(20):
            sent = await rt.send("a", f"k{i % 4}", f"m{i}")
            assert (await rt.wait(sent.run.id)).status == "completed"
        # Each message's events reached the service's feed (and were not for delivery).
        assert service.figures["scans"] == first
        assert service.figures["made"] == 0
    finally:
        await rt.close()


async def test_the_bus_is_followed_only_while_a_subscription_is_enabled(
        settings: Settings, tmp_path: Path) -> None:
    """With no webhook the service holds no feed of the bus (every event would pass
    through it for nothing); one made here subscribes at once, not at the next scan
    (poll_s is a minute), and the events from then on become deliveries."""
    settings.database_url = f"sqlite:///{tmp_path / 'agentd.db'}"
    settings.webhooks = WebhooksConfig(poll_s=60, allow_hosts=["127.0.0.1"],
                                       allow_http=["127.0.0.1"])
    # (/metrics follows the bus with a feed of its own: off, the feeds are the hooks'.)
    settings.telemetry = TelemetryConfig(metrics=False)
    rt = await Runtime.open(settings)
    try:
        service = rt.webhooks
        await eventually(lambda: service.figures["scans"] >= 1, what="the first scan")
        await eventually(lambda: not rt.bus._feeds, what="the feed let go")
        await rt.create_agent(name="a")
        sent = await rt.send("a", "k", "before")
        assert (await rt.wait(sent.run.id)).status == "completed"
        assert not rt.bus._feeds and service.figures["made"] == 0
        # (a port nothing listens on: deliveries are made, their sending fails)
        await service.create("a", WebhookIn(url="http://127.0.0.1:9/hook",
                                            kinds=("run.completed",)))
        await eventually(lambda: len(rt.bus._feeds) == 1, what="the feed followed")
        sent = await rt.send("a", "k", "after")
        assert (await rt.wait(sent.run.id)).status == "completed"
        await eventually(lambda: service.figures["made"] == 1, what="one delivery made")
    finally:
        await rt.close()
