"""bench/turns.py --termo-url measures a termo-agent echo server someone else runs
(bench/instructions.py's, under callgrind): the turns go to it, the server is left
running, and its CPU is not the bench's to read. Bad combinations are one line and
exit 2 (figures are not judged here: timing belongs to the bench)."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from tests.daemons import clean_env, run_bench, run_refused

from agentd.testing.live import free_port

pytestmark = pytest.mark.e2e

BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.fixture
def termo(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """bench/termo_echo.py on a free port (tried again if another server took it)."""
    for _ in range(3):
        port = free_port()
        log = (tmp_path / f"termo-{port}.log").open("wb")
        proc = subprocess.Popen([sys.executable, str(BENCH / "termo_echo.py"),
                                 "--port", str(port)], env=clean_env(), stdout=log,
                                stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        if proc.poll() is None:
            try:
                yield url, proc
            finally:
                proc.terminate()
                proc.wait(30)
            return
    pytest.fail("bench/termo_echo.py did not start on three free ports")


def test_the_turns_go_to_the_running_server_and_it_is_left_running(
        termo: tuple[str, subprocess.Popen[bytes]], tmp_path: Path) -> None:
    url, proc = termo
    figures, result = run_bench(BENCH / "turns.py", [
        "--skip-agentd", "--termo-url", url, "--waited-only", "--clients", "2",
        "--turns", "20", "--warmup", "0"], tmp_path)
    assert result.returncode == 0, (figures, result.stderr[-4000:])
    assert figures["termo_turns"] == 20 and figures["termo_errors"] == 0
    assert figures["termo_version"]  # (its /health, read from the server given)
    assert figures["termo_server_cpu_ms_per_turn"] is None  # not the bench's process
    assert figures["termo_server_sys_ms_per_turn"] is None
    assert proc.poll() is None
    assert httpx.post(f"{url}/api/send", json={"message": "still", "session_key": "k"},
                      timeout=10).json()["response"] == "echo: still"


@pytest.mark.parametrize(("args", "message"), [
    (["--termo-url", "http://127.0.0.1:9", "--skip-termo"],
     "--termo-url names the termo-agent server to measure; not with --skip-termo"),
    (["--termo-url", "http://example.com:9"], "--termo-url must be on 127.0.0.1 / localhost"),
    (["--termo-url", "http://127.0.0.1:9", "--termo-uvloop"],
     "--termo-uvloop starts the termo server; not with --termo-url"),
])
def test_a_bad_termo_url_option_is_one_clear_line(args: list[str], message: str,
                                                  tmp_path: Path) -> None:
    assert message in run_refused(BENCH / "turns.py", args, tmp_path)
