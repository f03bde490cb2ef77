"""compose.yaml brought up by podman-compose as a user would: two agentd nodes on one
PostgreSQL (a stand-in for the official postgres image, made from Debian's packages:
tests/deploy/postgres), each healthy on PostgreSQL; an agent made through one node
answers a turn sent through the other, its command run in bubblewrap, and both nodes
read the same session."""

from __future__ import annotations

import os
import secrets
import shutil
import sys
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.deploy._podman import ROOT, build, run, wait_healthy

from agentd.testing.live import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.allow_network]

POSTGRES = "localhost/agentd-test-postgres:15"


def _compose() -> str:
    found = shutil.which("podman-compose") or str(Path(sys.executable).parent
                                                  / "podman-compose")
    if not Path(found).exists():
        pytest.fail("podman-compose is a test dependency (pip install -e '.[test]')")
    return found


def test_two_nodes_on_postgresql(podman: str, image: str,
                                 tmp_path_factory: pytest.TempPathFactory) -> None:
    postgres = build(podman, tmp_path_factory.mktemp("pg"), POSTGRES,
                     ROOT / "tests/deploy/postgres/Containerfile", ROOT / "tests/deploy/postgres")
    ports = free_port(), free_port()
    token = secrets.token_hex(24)
    env = {**os.environ, "AGENTD_IMAGE": image, "POSTGRES_IMAGE": postgres,
           "POSTGRES_PASSWORD": secrets.token_hex(12), "AGENTD_TOKEN": token,
           "AGENTD_PORT_1": str(ports[0]), "AGENTD_PORT_2": str(ports[1])}
    compose = [_compose(), "-p", f"agentdtest{uuid.uuid4().hex[:8]}",
               "-f", str(ROOT / "compose.yaml")]
    run([*compose, "up", "-d"], env=env, timeout=600)
    try:
        urls = [f"http://127.0.0.1:{port}" for port in ports]
        health = [wait_healthy(url, url) for url in urls]
        assert [h["store"] for h in health] == ["postgresql", "postgresql"], health
        assert health[0]["node"] != health[1]["node"]
        assert all(h["sandbox"] == "bubblewrap" for h in health), health
        headers = {"Authorization": f"Bearer {token}"}
        one, two = (httpx.Client(base_url=url, headers=headers, timeout=120) for url in urls)
        made = one.post("/v1/agents", json={
            "name": "ops", "model": "scripted", "tools": ["shell"], "settings": {
                "policy": {"rules": [{"tool": "shell", "action": "allow"}]},
                "script": [{"tool_calls": [{"name": "shell", "arguments": {
                    "command": "echo from the cluster"}}]}, {"text": "done"}]}})
        assert made.status_code == 201, made.text
        sent = two.post("/v1/agents/ops/sessions/main/messages",
                        json={"content": "go", "wait": True})
        assert sent.status_code == 200 and sent.json()["status"] == "completed", sent.text

        def events(client: httpx.Client) -> list[dict[str, Any]]:
            got: list[dict[str, Any]] = client.get(
                "/v1/agents/ops/sessions/main/events").json()["events"]
            return got

        seen = events(one)
        assert seen == events(two)
        [finished] = [e["data"] for e in seen if e["kind"] == "tool.finished"]
        assert finished["sandbox"] == {"backend": "bubblewrap"}
        assert "from the cluster" in finished["output"]
        one.close()
        two.close()
    finally:
        run([*compose, "down", "-v", "-t", "5"], env=env, check=False, timeout=300)
