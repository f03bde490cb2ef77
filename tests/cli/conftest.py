"""A real agentd app on a free 127.0.0.1 port (agentd.testing.LiveServer), for client and
CLI tests that go over a socket; the CLI runner and run polling they share."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

import pytest
from tests.conftest import wait_until
from typer.testing import CliRunner, Result

from agentd.client import Client
from agentd.testing.live import LiveServer

_names = itertools.count(1)

AUTH_TOKEN = "test-token-0123456789"


@pytest.fixture(scope="module")
def live_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("agentd-home")


@contextmanager
def serve(home: Path, **settings: Any) -> Iterator[str]:
    """Serve ``create_app(Settings(home=home, ...))`` on a real socket (LiveServer);
    yield its URL."""
    from agentd.config import Settings

    with pytest.MonkeyPatch.context() as mp:
        # No token, no agentd.toml or env from the machine running the tests.
        mp.setenv("AGENTD_HOME", str(home))
        for var in ("AGENTD_TOKEN", "AGENTD_TOKENS", "AGENTD_URL", "AGENTD_DATABASE_URL"):
            mp.delenv(var, raising=False)
        with LiveServer(Settings(home=home, demo_agent=False, **settings),
                        startup_timeout_s=30, reload_from=lambda: Settings(
                            home=home, demo_agent=False, **settings)) as server:
            yield server.url


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


def wait_for_status(client: Client, run_id: str, *statuses: str) -> dict[str, Any]:
    """Poll a run until it reaches one of ``statuses``; the run."""
    last: dict[str, Any] = {}

    def reached() -> dict[str, Any] | None:
        last.update(client.get_run(run_id))
        return dict(last) if last["status"] in statuses else None

    return wait_until(reached, what=lambda: f"run {run_id} ({last.get('status')}) reaching "
                                            f"{statuses}")


def one_error_line(result: Result, code: int = 1) -> str:
    """The single ``error:`` line a failed command prints (and no traceback); it exits
    with ``code``: 1 for what the daemon refuses, 2 for a usage error."""
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error:")
    return lines[0]
