"""`agentd send` against the real daemon process, saying on stderr what a run waits for:
a run ahead of it in the session, and a model nobody answers for (the error names the
model and the cause instead of blaming the daemon)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from tests.daemons import Daemon, create_agent, send

pytestmark = pytest.mark.e2e

MODEL = "openai-compatible:stub"


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    root = tmp_path_factory.mktemp("send-waits")
    # Short back-offs: a model that is down is retried within a second.
    daemon = Daemon(root / "home", root / "agentd.log", args=(),
                    env={"AGENTD_RETRY_BASE_S": "0.05", "AGENTD_RETRY_MAX_S": "0.2"})
    try:
        yield daemon.start()
    finally:
        daemon.cleanup()


@pytest.fixture
def api(daemon: Daemon) -> Iterator[httpx.Client]:
    with daemon.client() as client:
        yield client


def agentd(daemon: Daemon, *args: str) -> subprocess.CompletedProcess[str]:
    """The CLI as a user runs it (its own process; the token from AGENTD_HOME)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTD_")}
    env.update(AGENTD_HOME=str(daemon.home), COLUMNS="300")
    return subprocess.run([sys.executable, "-m", "agentd", "--url", daemon.url, *args],
                          env=env, capture_output=True, text=True, timeout=120,
                          cwd=daemon.home.parent)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def unreachable(api: httpx.Client, name: str, **settings: Any) -> None:
    create_agent(api, name, model=MODEL, settings={
        "base_url": f"http://127.0.0.1:{closed_port()}/v1", **settings})


def test_send_behind_a_running_run_says_it_is_queued(daemon: Daemon,
                                                     api: httpx.Client) -> None:
    # The first run lasts long enough for the CLI (a new process) to start and send
    # behind it even on a loaded machine.
    create_agent(api, "busy", model="scripted", settings={"script": [
        {"text": "first answer", "delay_ms": 6000}, {"text": "second answer"}]})
    first = send(api, "busy", "cli", "one", wait=False)
    assert first.status_code == 202, first.text
    result = agentd(daemon, "send", "busy", "two")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "second answer\n"
    [line] = result.stderr.splitlines()
    assert line.startswith("waiting: queued behind another run in this session")
    assert first.json()["id"] in line


def test_send_to_a_model_that_fails_names_the_model_and_the_cause(
        daemon: Daemon, api: httpx.Client) -> None:
    unreachable(api, "far", on_outage="fail")
    result = agentd(daemon, "send", "far", "hello")
    assert result.returncode == 1, result.stdout
    lines = result.stderr.splitlines()
    # Said once per model and reason, not at every retry.
    assert len(lines) == 2, result.stderr
    assert lines[0].startswith(f"waiting: {MODEL} failed (")
    assert "connect" in lines[0].lower() and "retrying in" in lines[0]
    assert lines[1].startswith("error: run r_") and " failed: " in lines[1]
    assert MODEL in lines[1] and "connect" in lines[1].lower()
    assert "daemon" not in result.stderr and "Traceback" not in result.stderr


def test_send_to_a_model_that_is_down_says_so_until_it_gives_up(
        daemon: Daemon, api: httpx.Client) -> None:
    unreachable(api, "down")  # on_outage "wait": the run parks until a model answers
    result = agentd(daemon, "send", "down", "hello", "--timeout", "3")
    assert result.returncode == 1, result.stdout
    lines = result.stderr.splitlines()
    assert any(line.startswith(f"waiting: {MODEL} unreachable (") for line in lines), lines
    last = lines[-1]
    assert "is still running after 3s" in last
    # What it waited for last: the outage (a failed probe while parked is not news).
    assert f"(waiting: {MODEL} unreachable (" in last and "connect" in last.lower()
    assert "daemon" not in last.replace("agentd run", "")
    run_id = last.split()[2]
    cancelled = api.post(f"/v1/runs/{run_id}/cancel")
    assert cancelled.status_code == 200, cancelled.text
