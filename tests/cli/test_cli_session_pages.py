"""Pages of an agent's sessions through agentd.client (sessions_page) and the CLI
(agentd sessions --limit / --match / --after) against the real app over a socket."""

from __future__ import annotations

import importlib
import json
import shlex
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.cli.conftest import Invoke, one_error_line

from agentd.client import APIError, Client
from agentd.security.tokens import read_token

KEYS = ["user:1", "user:2", "User:3", "telegram:4", "a_b", "100%", "axb"]


@pytest.fixture
def client(live_url: str, live_home: Path) -> Iterator[Client]:
    with Client(live_url, token=read_token(live_home), timeout=30.0) as c:
        yield c


def with_sessions(client: Client, agent: str) -> list[str]:
    """The agent, a session per key (one after the other: the last is the most recent);
    the keys most recent first."""
    client.create_agent(agent)
    for key in KEYS:
        assert client.send(agent, key, "hi")["status"] == "completed"
    return list(reversed(KEYS))


def test_the_client_pages_sessions(client: Client, agent_name: str) -> None:
    recent_first = with_sessions(client, agent_name)
    assert [s["key"] for s in client.list_sessions(agent_name)] == recent_first
    seen: list[str] = []
    after = None
    while True:
        page = client.sessions_page(agent_name, limit=3, after=after)
        assert set(page) == {"sessions", "next_after"}
        seen += [s["key"] for s in page["sessions"]]
        after = page["next_after"]
        if after is None:
            break
    assert seen == recent_first
    found = client.sessions_page(agent_name, q="USER:")
    assert [s["key"] for s in found["sessions"]] == ["User:3", "user:2", "user:1"]
    assert [s["key"] for s in client.sessions_page(agent_name, q="_")["sessions"]] == ["a_b"]
    with pytest.raises(APIError) as info:
        client.sessions_page(agent_name, after="not-a-cursor")
    assert (info.value.status, info.value.code) == (422, "invalid_input")
    assert "query.after" in str(info.value.details)


def test_the_cli_pages_sessions_and_prints_the_next_command(
        cli: Invoke, client: Client, agent_name: str) -> None:
    recent_first = with_sessions(client, agent_name)
    first = cli("sessions", agent_name, "--limit", "4")
    assert first.exit_code == 0, first.output
    hint = first.stdout.strip().splitlines()[-1]
    assert hint.startswith("4 shown, more: agentd sessions "), first.stdout
    words = shlex.split(hint.split("more: ", 1)[1])
    assert words[:3] == ["agentd", "sessions", agent_name] and "--limit" in words
    rest = cli(*words[1:], "--json")
    assert rest.exit_code == 0, rest.output
    # --json prints the sessions alone, an array; the last page has no hint.
    assert [s["key"] for s in json.loads(rest.stdout)] == recent_first[4:]
    assert "more:" not in rest.stderr
    for key in recent_first[:4]:
        assert key in first.stdout
    last = cli(*words[1:])
    assert "more:" not in last.stdout

    matched = json.loads(cli("sessions", agent_name, "--match", "user:", "--json").stdout)
    assert [s["key"] for s in matched] == ["User:3", "user:2", "user:1"]
    none = cli("sessions", agent_name, "--match", "nothing-like-it")
    assert none.exit_code == 0 and "match 'nothing-like-it'" in none.stdout
    # Without paging options: every session, a JSON list, as before.
    assert [s["key"] for s in json.loads(
        cli("sessions", agent_name, "--json").stdout)] == recent_first
    bad = one_error_line(cli("sessions", agent_name, "--after", "bogus"))
    assert bad == ("error: --after: not a cursor this daemon gave; use the command a page "
                   "of sessions printed after it, as it is [invalid_input]"), bad
    assert cli("sessions", agent_name, "--limit", "0").exit_code == 2


def test_show_lists_the_most_recent_sessions_and_the_way_to_the_rest(
        cli: Invoke, client: Client, agent_name: str, monkeypatch: pytest.MonkeyPatch
        ) -> None:
    app_module = importlib.import_module("agentd.cli.app")  # (agentd.cli.app: the Typer)
    recent_first = with_sessions(client, agent_name)
    monkeypatch.setattr(app_module, "SHOWN_SESSIONS", 3)
    shown = cli("show", agent_name)
    assert shown.exit_code == 0, shown.output
    for key in recent_first[:3]:
        assert key in shown.stdout
    assert recent_first[3] not in shown.stdout
    hint = shown.stdout.strip().splitlines()[-1]
    assert hint.startswith("the 3 most recent sessions; more: agentd sessions "), hint
    rest = json.loads(cli(*shlex.split(hint.split("more: ", 1)[1])[1:], "--json").stdout)
    assert [s["key"] for s in rest] == recent_first[3:]
    # --json prints the Agent alone (agentd sessions --json lists the sessions).
    assert json.loads(cli("show", agent_name, "--json").stdout) == client.get_agent(agent_name)
    # All of them fit: no hint.
    monkeypatch.setattr(app_module, "SHOWN_SESSIONS", 20)
    assert "more:" not in cli("show", agent_name).stdout
