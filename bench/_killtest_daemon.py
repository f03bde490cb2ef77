"""The daemon under test: ``python -m agentd serve`` on one home, started and killed many
times (part of ``bench/killtest.py``)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from _killtest_common import TOKEN, free_port, info

BENCH_DIR = Path(__file__).resolve().parent


class Daemon:
    """``python -m agentd serve`` on one home and port, started and killed many times."""

    def __init__(self, workdir: Path, home: Path, effects_dir: Path,
                 database_url: str | None = None) -> None:
        self.workdir = workdir
        self.logs = workdir / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("AGENTD_") and k != "OPENAI_API_KEY"}
        # Absolute: the daemon runs in the work dir, where a relative entry (the usual
        # PYTHONPATH=src) would name nothing and the installed agentd would run instead.
        path = [str(BENCH_DIR), *(str(Path(p).resolve()) for p in
                                  os.environ.get("PYTHONPATH", "").split(os.pathsep) if p)]
        env.update(
            AGENTD_HOME=str(home),
            AGENTD_DEMO_AGENT="false",
            AGENTD_TOKEN=TOKEN,
            AGENTD_TOOL_MODULES='["killtest_tools"]',
            AGENTD_KILLTEST_DIR=str(effects_dir),
            PYTHONPATH=os.pathsep.join(path),
            PYTHONUNBUFFERED="1",
        )
        if database_url:
            env["AGENTD_DATABASE_URL"] = database_url
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.start_s: list[float] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.logs / f"agentd-{self.starts:04d}.log"

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def start(self, timeout_s: float) -> None:
        """Start and wait for /health; a port taken meanwhile moves to another one."""
        for attempt in range(3):
            self.starts += 1
            t0 = time.monotonic()
            with self.log_path.open("wb") as log:
                self.proc = subprocess.Popen(
                    [sys.executable, "-m", "agentd", "serve", "--port", str(self.port)],
                    env=self.env, cwd=self.workdir, stdin=subprocess.DEVNULL,
                    stdout=log, stderr=subprocess.STDOUT,
                    # Its own session: a Ctrl-C on the harness does not reach it; the
                    # finally block stops it.
                    start_new_session=True)
            if self._wait_healthy(timeout_s):
                self.start_s.append(time.monotonic() - t0)
                return
            tail = self.log_tail()
            self.kill()
            if "address already in use" in tail.lower() and attempt < 2:
                info(f"port {self.port} is taken; moving to another")
                self.port = free_port()
                continue
            raise RuntimeError(f"agentd did not become healthy (start {self.starts}); "
                               f"log tail:\n{tail}")

    def _wait_healthy(self, timeout_s: float) -> bool:
        assert self.proc is not None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                response = httpx.get(f"{self.url}/health", timeout=2.0)
                if response.status_code == 200 and response.json().get("status") == "ok":
                    return True
            except (httpx.HTTPError, ValueError):
                pass
            time.sleep(0.02)
        return False

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=30)

    def stop(self, timeout_s: float = 30.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout_s``. Returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                info(f"agentd still running {timeout_s:.0f}s after SIGTERM; killing it")
                self.kill()
        return self.proc.returncode
