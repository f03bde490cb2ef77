"""`agentd stop` with a run in flight says what it waits for, with the real daemon."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e


@pytest.fixture
def env(tmp_path: Path) -> Iterator[dict[str, str]]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTD_")}
    env.update(AGENTD_HOME=str(tmp_path / "home"), AGENTD_PORT=str(port),
               AGENTD_SHUTDOWN_GRACE_S="1")
    yield env
    if (tmp_path / "home" / "agentd.pid").exists():
        subprocess.run([sys.executable, "-m", "agentd", "stop", "--timeout", "10", "--force"],
                       env=env, capture_output=True, timeout=60)


def agentd(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "agentd", *args], env=env,
                          capture_output=True, text=True, timeout=120)


def test_stop_says_what_it_waits_for_and_when_it_is_done(env: dict[str, str]) -> None:
    assert agentd(env, "start", "--wait", "90").returncode == 0
    script = json.dumps([{"text": "slow", "delay_ms": 30000}])
    assert agentd(env, "create", "slow", "--setting", f"script={script}").returncode == 0
    assert agentd(env, "send", "slow", "take your time", "--no-wait").returncode == 0
    status = json.loads(agentd(env, "status", "--json").stdout)
    assert status["health"]["active_runs"] == 1

    stopped = agentd(env, "stop")
    assert stopped.returncode == 0, stopped.stderr
    assert ("1 run is in flight: waiting up to 1 s (AGENTD_SHUTDOWN_GRACE_S) for its "
            "current step to finish; what is left resumes at the next start"
            ) in stopped.stdout
    assert "agentd stopped (after " in stopped.stdout

    # The parked run resumes at the next start; with nothing in flight, no word of runs.
    assert agentd(env, "start", "--wait", "90").returncode == 0
    assert agentd(env, "stop-agent", "slow").returncode == 0
    quiet = agentd(env, "stop")
    assert quiet.returncode == 0 and "in flight" not in quiet.stdout
