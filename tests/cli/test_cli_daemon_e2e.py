"""`agentd start`, `status` and `stop` with the real daemon process."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.conftest import free_port

pytestmark = pytest.mark.e2e


@pytest.fixture
def env(tmp_path: Path) -> Iterator[dict[str, str]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTD_")}
    env.update(AGENTD_HOME=str(tmp_path / "home"), AGENTD_PORT=str(free_port()))
    yield env
    # Never leave a daemon behind, whatever the test did.
    pid_file = tmp_path / "home" / "agentd.pid"
    if pid_file.exists():
        subprocess.run(
            [sys.executable, "-m", "agentd", "stop", "--timeout", "10", "--force"],
            env=env,
            capture_output=True,
            timeout=60,
        )


def running(pid: int) -> bool:
    """Alive and not a zombie (an orphan's zombie lingers where nobody reaps it)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split(") ", 1)[1].startswith("Z"))


def agentd(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agentd", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_start_status_send_stop(env: dict[str, str]) -> None:
    home = Path(env["AGENTD_HOME"])
    url = f"http://127.0.0.1:{env['AGENTD_PORT']}"

    started = agentd(env, "start", "--wait", "90")
    assert started.returncode == 0, started.stderr
    assert url in started.stdout
    pid = int((home / "agentd.pid").read_text().strip())
    assert f"pid {pid}" in started.stdout
    assert (home / "agentd.log").exists()

    again = agentd(env, "start", "--wait", "90")
    assert again.returncode == 1
    assert "already running" in again.stderr

    status = agentd(env, "status")
    assert status.returncode == 0, status.stderr
    assert f"running (pid {pid}) at {url}" in status.stdout
    sandbox = next(line for line in status.stdout.splitlines() if "sandbox:" in line)
    if os.geteuid() == 0:  # (a uid per agent needs root)
        assert "a uid per agent" in sandbox, status.stdout
    assert "memory per" in sandbox, status.stdout

    # The CLI finds the daemon from AGENTD_PORT alone.
    assert agentd(env, "create", "e2e-agent").returncode == 0
    sent = agentd(env, "send", "e2e-agent", "hello")
    assert sent.stdout == "echo: hello\n", sent.stderr

    stopped = agentd(env, "stop")
    assert stopped.returncode == 0, stopped.stderr
    assert "stopped" in stopped.stdout
    assert not (home / "agentd.pid").exists()
    assert not running(pid)

    status = agentd(env, "status")
    assert status.returncode == 1
    assert "not running" in status.stdout

    # State outlives the process.
    assert agentd(env, "start", "--wait", "90").returncode == 0
    history = agentd(env, "history", "e2e-agent")
    assert "user: hello" in history.stdout, history.stderr
    assert agentd(env, "stop").returncode == 0


@pytest.mark.parametrize("listen", [True, False], ids=["listening", "bound"])
def test_start_reports_a_port_it_cannot_use(env: dict[str, str], listen: bool) -> None:
    # Listening: start sees it before spawning. Only bound: the daemon fails to bind
    # and exits, and start says so with the end of the log instead of hanging.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", int(env["AGENTD_PORT"])))
        if listen:
            sock.listen()
        result = agentd(env, "start", "--wait", "20")
    assert result.returncode == 1
    assert result.stderr.startswith("error:")
    if listen:
        assert "already listening" in result.stderr
    else:
        assert "exited with code" in result.stderr
        assert "last lines of" in result.stderr
    assert not (Path(env["AGENTD_HOME"]) / "agentd.pid").exists()
