"""Servers for the termo-agent tests: `agentd serve --adapter` (the real daemon
process) and a real termo-agent server from PyPI (its CLI), both over real sockets,
both loading agentd.testing.termo_adapter (the same deterministic adapter)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.conftest import free_port, listening, wait_until
from tests.daemons import Daemon

import agentd

SRC = Path(agentd.__file__).resolve().parents[1]
ADAPTER = "agentd.testing.termo_adapter"
#: The termo token both servers accept (termo-agent's TERMO_TOKEN).
TOKEN = "termo-test-token"
WAIT_S = 60.0


class TermoServer:
    """A real termo-agent server (``python -m termo_agent.cli``) on a free port."""

    def __init__(self, workdir: Path, adapter: str = ADAPTER) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / "termo-agent.log"
        workdir.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("AGENTD_", "TERMO_"))}
        env.update(PYTHONPATH=str(SRC), TERMO_TOKEN=TOKEN, PYTHONUNBUFFERED="1")
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "termo_agent.cli", "--adapter", adapter,
                 "--host", "127.0.0.1", "--port", str(self.port)],
                env=env, cwd=workdir, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT)
        wait_until(self._healthy, what=lambda: f"termo-agent answering:\n{self.log()}",
                   interval=0.05)

    def _healthy(self) -> bool:
        if self.proc.poll() is not None:
            pytest.fail(f"termo-agent exited with {self.proc.returncode}:\n{self.log()}")
        if not listening(self.port):  # (cheap: no httpx request until it listens)
            return False
        try:
            return httpx.get(f"{self.url}/health", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=WAIT_S)


def agentd_env(home: Path, *, timeout_s: float = 120.0, extra_toml: str = ""
               ) -> dict[str, str]:
    """The daemon's environment: this tree's agentd, TERMO_TOKEN, a short adapter
    timeout (the hanging adapter's test), no demo agent."""
    home.mkdir(parents=True, exist_ok=True)
    (home / "agentd.toml").write_text(f"[adapters]\ntimeout_s = {timeout_s}\n"
                                      + extra_toml)
    return {"PYTHONPATH": str(SRC), "TERMO_TOKEN": TOKEN, "AGENTD_DEMO_AGENT": "false",
            "TERMO_TEST_SLOW_S": "0.3"}


SpawnAgentd = Callable[..., Daemon]


@pytest.fixture
def spawn_agentd(tmp_path: Path) -> Iterator[SpawnAgentd]:
    """Start `agentd serve --adapter ...` daemons (one home unless given); each is
    killed at the end."""
    daemons: list[Daemon] = []

    def factory(*args: str, home: Path | None = None, timeout_s: float = 120.0,
                env: dict[str, str] | None = None, extra_toml: str = "") -> Daemon:
        where = home or tmp_path / "home"
        daemon = Daemon(where, tmp_path / f"agentd-{len(daemons)}.log",
                        env={**agentd_env(where, timeout_s=timeout_s,
                                          extra_toml=extra_toml), **(env or {})},
                        args=args)
        daemons.append(daemon)
        return daemon.start()

    try:
        yield factory
    finally:
        for daemon in daemons:
            daemon.cleanup()


@pytest.fixture
def termo_server(tmp_path: Path) -> Iterator[TermoServer]:
    server = TermoServer(tmp_path / "termo")
    try:
        yield server
    finally:
        server.stop()


def frames(body: str) -> list[dict[str, Any]]:
    """termo-agent's SSE frames (``data: {...}``) as dicts, in order."""
    out: list[dict[str, Any]] = []
    for block in body.split("\n\n"):
        block = block.strip()
        if block.startswith("data: "):
            out.append(json.loads(block[len("data: "):]))
    return out
