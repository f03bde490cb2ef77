"""The container image (Containerfile), built and run with podman as a user would: its
Debian base made from Debian's packages with mmdebstrap (no registry is reachable
here), the image built with that base as its build argument, then run with its data
on a volume: a non-root daemon, healthy, that runs a turn with a command in
bubblewrap inside the container, and after a restart finds the session intact.
Without the documented security options it still serves, saying why bubblewrap is
unusable."""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
import pytest
from tests.deploy._podman import SANDBOX_OPTS, Container, run

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.allow_network]


def _events(api: httpx.Client) -> list[dict[str, Any]]:
    reply = api.get("/v1/agents/ops/sessions/main/events")
    assert reply.status_code == 200, reply.text
    events: list[dict[str, Any]] = reply.json()["events"]
    return events


def test_the_image(podman: str, image: str) -> None:
    """One test (one build, on one xdist worker): the image's size, then the image
    run as documented, then without the security options."""
    size = json.loads(run([podman, "image", "inspect", image]).stdout)[0]["Size"]
    # (docs/operations.md states the size; this guards against a stray layer.)
    assert size < 900 * 1024 * 1024, f"the image is {size / 2**20:.0f} MiB"
    _serves_sandboxes_and_keeps_its_data(podman, image)
    _without_the_options_it_says_why_bubblewrap_is_unusable(podman, image)


def _serves_sandboxes_and_keeps_its_data(podman: str, image: str) -> None:
    volume = f"agentd-test-{uuid.uuid4().hex[:8]}"
    box = Container(podman, image, opts=SANDBOX_OPTS, volume=volume)
    try:
        health = box.health()
        assert health["sandbox"] == "bubblewrap" and health["sandbox_isolated"], health
        assert box.exec("id", "-u").strip() != "0"  # the daemon's user: not root
        # tini is pid 1 (it reaps the sandboxes' orphans), the daemon its child.
        assert box.exec("cat", "/proc/1/comm").strip() == "tini"
        api = httpx.Client(base_url=box.url, timeout=120,
                           headers={"Authorization": f"Bearer {box.token()}"})
        made = api.post("/v1/agents", json={
            "name": "ops", "model": "scripted", "tools": ["shell"], "settings": {
                "policy": {"rules": [{"tool": "shell", "action": "allow"}]},
                "script": [{"tool_calls": [{"name": "shell", "arguments": {
                    "command": "hostname; echo kept > note.txt; cat note.txt"}}]},
                    {"text": "done"}]}})
        assert made.status_code == 201, made.text
        turn = api.post("/v1/agents/ops/sessions/main/messages",
                        json={"content": "go", "wait": True})
        assert turn.status_code == 200 and turn.json()["status"] == "completed", \
            (turn.text, box.logs()[-3000:])
        [finished] = [e["data"] for e in _events(api) if e["kind"] == "tool.finished"]
        assert finished["sandbox"] == {"backend": "bubblewrap"}, finished
        assert finished["output"].splitlines()[1:3] == ["sandbox", "kept"], finished
        before = _events(api)
        # The image's healthcheck (kept with --format docker) passes.
        assert run([podman, "healthcheck", "run", box.name], check=False).returncode == 0
        run([podman, "restart", "-t", "20", box.name])
        box.health()
        api.headers["Authorization"] = f"Bearer {box.token()}"
        after = _events(api)
        # The session, whole, from the volume (and the graceful stop's checkpoint).
        assert after[:len(before)] == before
        assert [e["kind"] for e in after[len(before):]] == ["checkpoint"]
        again = api.post("/v1/agents/ops/sessions/main/messages",
                         json={"content": "again", "wait": True})
        assert again.status_code == 200, again.text
        api.close()
    finally:
        box.remove()
        run([podman, "volume", "rm", "-f", volume], check=False)


def _without_the_options_it_says_why_bubblewrap_is_unusable(podman: str, image: str
                                                            ) -> None:
    box = Container(podman, image, opts=[])
    try:
        health = box.health()
        assert health["sandbox"] == "process" and not health["sandbox_isolated"]
        assert "Operation not permitted" in health["sandboxes"]["bubblewrap"], health
        assert "NOT isolated" in box.logs()
    finally:
        box.remove()
