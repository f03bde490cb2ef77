"""A message with an image, acknowledged, then the real daemon SIGKILLed while its run
is in the model call: after the restart the run resumes from the log and the model
gets the image again, read from the store (the log holds only its reference)."""

from __future__ import annotations

import base64
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import wait_until
from tests.daemons import Daemon
from tests.media.images import png

from agentd.testing import StubLLMServer

pytestmark = pytest.mark.e2e

IMAGE = png(12, 34)


@pytest.fixture
def stub() -> Iterator[StubLLMServer]:
    with StubLLMServer() as server:
        yield server


@pytest.fixture
def daemons(tmp_path: Path) -> Iterator[list[Daemon]]:
    started: list[Daemon] = []
    try:
        yield started
    finally:
        for daemon in started:
            daemon.cleanup()


def start(daemons: list[Daemon], tmp_path: Path) -> Daemon:
    daemon = Daemon(tmp_path / "home", tmp_path / f"agentd-{len(daemons)}.log", args=(),
                    env={"AGENTD_DEMO_AGENT": "false"})
    daemons.append(daemon)
    return daemon.start()


def images(body: dict[str, Any]) -> list[bytes]:
    return [base64.b64decode(p["image_url"]["url"].split(",", 1)[1])
            for m in body["messages"] if isinstance(m.get("content"), list)
            for p in m["content"] if p.get("type") == "image_url"]


def test_sigkill_mid_call_resumes_with_the_image(daemons: list[Daemon], stub: StubLLMServer,
                                                 tmp_path: Path) -> None:
    daemon = start(daemons, tmp_path)
    with daemon.client() as api:
        made = api.post("/v1/agents", json={
            "name": "eye", "model": "openai-compatible:stub-model",
            "settings": {"base_url": stub.base_url, "max_retries": 0}})
        assert made.status_code == 201, made.text
        stub.enqueue(fault="stall")  # the first call hangs: the daemon is killed in it
        stub.enqueue("I see a red image")
        sent = api.post("/v1/agents/eye/sessions/k/messages", json={"wait": False, "content": [
            {"type": "text", "text": "what is this?"},
            {"type": "image", "data": base64.b64encode(IMAGE).decode()}]})
        assert sent.status_code == 202, sent.text
        run_id = sent.json()["id"]
    wait_until(lambda: len(stub.requests) == 1, what="the first model call")
    assert images(stub.requests[0]) == [IMAGE]
    daemon.signal_and_wait(signal.SIGKILL)

    daemon = start(daemons, tmp_path)
    with daemon.client() as api:
        wait_until(lambda: api.get(f"/v1/runs/{run_id}").json()["status"] == "completed",
                   what=lambda: f"the resumed run: {api.get(f'/v1/runs/{run_id}').text}\n"
                                f"{daemon.log()}")
        assert api.get(f"/v1/runs/{run_id}").json()["output"] == "I see a red image"
    assert len(stub.requests) == 2
    assert images(stub.requests[1]) == [IMAGE]  # read again from the store
