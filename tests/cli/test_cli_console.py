"""``agentd console``: the console's address over a real socket, and plain messages
when the daemon is down or does not serve it."""

from __future__ import annotations

from pathlib import Path

from tests.cli.conftest import Invoke, serve
from typer.testing import CliRunner

from agentd.testing.live import free_port


def test_console_prints_the_address_and_where_the_token_is(cli: Invoke, live_url: str
                                                           ) -> None:
    result = cli("console")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == f"{live_url}/ui/"
    assert "Sign in with" in result.stderr


def test_console_says_when_the_daemon_is_down_or_the_console_off(
        tmp_path: Path) -> None:
    from agentd.cli import app

    runner = CliRunner()
    down = runner.invoke(app, ["--url", f"http://127.0.0.1:{free_port()}", "console"])
    assert down.exit_code == 1
    assert "does not answer" in down.stderr and "agentd start" in down.stderr
    with serve(tmp_path / "off", console=False) as url:
        off = runner.invoke(app, ["--url", url, "console"])
    assert off.exit_code == 1
    assert "console = false" in off.stderr
