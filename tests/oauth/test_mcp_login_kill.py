"""A login acknowledged is not lost: the daemon (a real ``agentd serve`` process) is
killed with SIGKILL between giving the link and the person coming back; the restarted
daemon finishes the login from the store (the flow's row, sealed with the secrets key
in the home), and the agent's run then calls the OAuth MCP server with the token."""

from __future__ import annotations

import signal

import pytest
from tests.daemons import Spawn, create_agent, read_events, send, wait_for_run
from tests.oauth.authserver import Person
from tests.oauth.conftest import Protected, call, oauth_server

pytestmark = [pytest.mark.e2e, pytest.mark.no_replay]


def test_a_login_survives_a_sigkill_of_the_daemon(spawn: Spawn, protected: Protected,
                                                   person: Person) -> None:
    daemon = spawn()
    with daemon.client() as api:
        create_agent(api, "a", model="scripted", settings={
            "mcp": [oauth_server(protected.url)],
            "script": [call("gh__whoami"), {"text": "done"}]})
        started = api.post("/v1/agents/a/mcp/gh/login")
        assert started.status_code == 201, started.text
    link, redirect = started.json()["authorization_url"], started.json()["redirect_uri"]
    assert redirect.startswith(daemon.url)
    assert daemon.signal_and_wait(signal.SIGKILL) == -signal.SIGKILL
    # The person signs in while the daemon is down; the browser waits at the redirect.
    back = person.authorize(link, stop_at=redirect)
    assert back.is_redirect
    daemon.start()  # (its own port again: the redirect URI is still its own)
    with daemon.client() as api:
        done = api.get(back.headers["location"].removeprefix(daemon.url),
                       headers={"Accept": "application/json"})
        assert done.status_code == 200, done.text
        assert api.get("/v1/agents/a/mcp").json()["servers"][0]["authorized"] is True
        sent = send(api, "a", "k", "go")
        assert sent.status_code in (200, 202), sent.text
        run = wait_for_run(api, sent.json()["id"], {"completed", "failed"})
        assert run["status"] == "completed", run
        [finished] = [e["data"] for e in read_events(api, "a", "k")
                      if e["kind"] == "tool.finished"]
        assert finished["output"] == "subject=alice", finished
