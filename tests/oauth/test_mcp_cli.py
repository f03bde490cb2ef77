"""`agentd mcp login|status|logout` against a daemon on a real socket, a real
authorization server and a real OAuth MCP server: the person opens the link the CLI
printed, signs in, and the authorization server's redirect reaches the daemon's
callback over HTTP (its page says so); ``--wait`` returns once that happened."""

from __future__ import annotations

import html
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import Result
from tests.daemons import ThreadDaemon
from tests.oauth.authserver import AuthServer, Person
from tests.oauth.conftest import Protected, oauth_server
from typer.testing import CliRunner

pytestmark = pytest.mark.no_replay

TOKEN = "cli-oauth-token-0123456789abcdefghij"


@pytest.fixture(scope="module")
def daemon(protected: Protected, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[ThreadDaemon]:
    folder = tmp_path_factory.mktemp("daemon")
    found = ThreadDaemon(folder / "home", folder / "agentd.log", token=TOKEN,
                         demo_agent=False).start()
    try:
        with found.client() as api:
            for name in ("a", "b"):
                made = api.post("/v1/agents", json={
                    "name": name, "model": "scripted",
                    "settings": {"mcp": [oauth_server(protected.url)]}})
                assert made.status_code == 201, made.text
        yield found
    finally:
        found.cleanup()


def _cli(daemon: ThreadDaemon, *args: str) -> Result:
    from agentd.cli import app

    return CliRunner().invoke(app, ["--url", daemon.url, "--token", TOKEN, *args],
                              env={"COLUMNS": "200"})


def test_login_prints_the_link_and_the_callback_page_says_authorized(
        daemon: ThreadDaemon, authserver: AuthServer, person: Person) -> None:
    before = _cli(daemon, "mcp", "status", "a")
    assert before.exit_code == 0, before.output
    assert "gh" in before.stdout and " no " in before.stdout
    started = _cli(daemon, "mcp", "login", "a", "gh")
    assert started.exit_code == 0, started.output
    link = next(line for line in started.stdout.splitlines() if line.startswith("http"))
    assert link.startswith(authserver.metadata()["authorization_endpoint"])
    # The person opens it; the redirect lands on the daemon's callback over HTTP.
    page = person.authorize(link)
    assert page.status_code == 200, page.text
    assert str(page.url).startswith(f"{daemon.url}/v1/mcp/oauth/callback?")
    assert "authorized" in page.text and "MCP server 'gh'" in html.unescape(page.text)
    after = json.loads(_cli(daemon, "mcp", "status", "a", "--json").stdout)
    assert after[0]["authorized"] is True and after[0]["login_pending"] is False
    for result in (started, before):
        assert "access_token" not in result.output
    gone = _cli(daemon, "mcp", "logout", "a", "gh")
    assert gone.exit_code == 0 and "logged out" in gone.stdout
    again = _cli(daemon, "mcp", "logout", "a", "gh")
    assert again.exit_code == 1 and "holds no tokens" in again.stderr
    assert "Traceback" not in again.output


def test_bad_input_is_one_error_line(daemon: ThreadDaemon) -> None:
    for args, said in ((("mcp", "login", "nobody", "gh"), "not found"),
                       (("mcp", "login", "a", "nope"), "has no MCP server 'nope'"),
                       (("mcp", "status", "nobody"), "not found")):
        result = _cli(daemon, *args)
        assert result.exit_code == 1, result.output
        assert said in result.stderr and "Traceback" not in result.output


def test_login_wait_returns_once_the_person_signed_in(
        daemon: ThreadDaemon, tmp_path: Path) -> None:
    env = {**os.environ, "AGENTD_URL": daemon.url, "AGENTD_TOKEN": TOKEN,
           "AGENTD_HOME": str(tmp_path), "COLUMNS": "400"}
    proc = subprocess.Popen([sys.executable, "-m", "agentd", "mcp", "login", "b", "gh",
                             "--wait"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    link = ""
    for line in proc.stdout:
        if line.startswith("http"):
            link = line.strip()
            break
    assert link, proc.stderr.read() if proc.stderr else ""
    person = Person("bob")
    signed: list[int] = []
    worker = threading.Thread(target=lambda: signed.append(person.authorize(link)
                                                           .status_code))
    worker.start()
    worker.join(120)
    person.close()
    out, err = proc.communicate(timeout=120)
    assert signed == [200]
    assert proc.returncode == 0, err
    assert "authorized: scope" in out
