"""A real agentd app served by uvicorn on a free 127.0.0.1 port, for client and CLI tests
that go over a socket."""

from __future__ import annotations

import itertools
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

import pytest
from typer.testing import CliRunner, Result

_names = itertools.count(1)

AUTH_TOKEN = "test-token-0123456789"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def live_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("agentd-home")


@contextmanager
def serve(home: Path, **settings: Any) -> Iterator[str]:
    """Serve ``create_app(Settings(home=home, ...))`` with uvicorn in a thread; yield its URL."""
    import uvicorn

    from agentd.config import Settings
    from agentd.server.app import create_app

    with pytest.MonkeyPatch.context() as mp:
        # No token, no agentd.toml or env from the machine running the tests.
        mp.setenv("AGENTD_HOME", str(home))
        for var in ("AGENTD_TOKEN", "AGENTD_TOKENS", "AGENTD_URL", "AGENTD_DATABASE_URL"):
            mp.delenv(var, raising=False)
        port = _free_port()
        app = create_app(Settings(home=home, demo_agent=False, **settings))
        config = uvicorn.Config(
            app, host="127.0.0.1", port=port, lifespan="on", log_level="warning"
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, name="agentd-test-server", daemon=True)
        thread.start()
        deadline = time.monotonic() + 30
        while not server.started:
            if not thread.is_alive():
                pytest.fail("the test server did not start (see the log above)")
            if time.monotonic() > deadline:
                server.should_exit = True
                pytest.fail("the test server did not start within 30 s")
            time.sleep(0.02)
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            server.should_exit = True
            thread.join(timeout=30)


@pytest.fixture(scope="module")
def live_url(live_home: Path) -> Iterator[str]:
    """URL of a daemon (app + runtime + SQLite store under a temporary home), no auth."""
    with serve(live_home) as url:
        yield url


@pytest.fixture(scope="module")
def auth_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of a daemon that wants ``Authorization: Bearer {AUTH_TOKEN}``."""
    with serve(tmp_path_factory.mktemp("agentd-auth"), tokens=[AUTH_TOKEN]) as url:
        yield url


@pytest.fixture
def auth_token() -> str:
    """The token ``auth_url`` accepts."""
    return AUTH_TOKEN


@pytest.fixture
def agent_name(request: pytest.FixtureRequest) -> str:
    """A fresh agent name per test (the server is shared by a module)."""
    base = request.node.name.split("[")[0].removeprefix("test_")[:40].replace("_", "-")
    return f"{base}-{next(_names)}"


class Invoke(Protocol):
    def __call__(self, *args: str, input: str | None = None) -> Result: ...


@pytest.fixture
def cli(live_url: str, live_home: Path, monkeypatch: pytest.MonkeyPatch) -> Invoke:
    """Run the CLI in-process against the live app (``--url``), with its home."""
    monkeypatch.setenv("AGENTD_HOME", str(live_home))
    monkeypatch.delenv("AGENTD_TOKEN", raising=False)
    runner = CliRunner()

    def invoke(*args: str, input: str | None = None) -> Result:
        from agentd.cli import app

        return runner.invoke(app, ["--url", live_url, *args], input=input)

    return invoke


def one_error_line(result: Result) -> str:
    """The single ``error:`` line a failed command prints (and no traceback)."""
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error:")
    return lines[0]
