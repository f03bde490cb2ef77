"""The webhooks service on a daemon with no webhook: the events its runs make are not a
reason to scan the store (a scan per batch of events cost a quarter of the event loop
under spread schedule fires); a quiet wait, or one made, is."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import eventually

from agentd.assembly import Runtime
from agentd.config import Settings, WebhooksConfig


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
