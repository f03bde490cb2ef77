"""`agentd compact` and the client's compact()/context() against the real app over a
socket (see conftest.live_url)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from tests.cli.conftest import Invoke, one_error_line

from agentd.client import APIError, Client


@pytest.fixture
def client(live_url: str) -> Iterator[Client]:
    with Client(live_url, timeout=30.0) as c:
        yield c


def talk(client: Client, agent: str, key: str, *texts: str) -> None:
    for text in texts:
        run = client.send(agent, key, text)
        assert run["status"] == "completed", run


def test_compact_prints_the_range_and_the_summary(cli: Invoke, client: Client,
                                                  agent_name: str) -> None:
    assert cli("create", agent_name).exit_code == 0
    talk(client, agent_name, "s", "north wind blows", "south sea calm", "east", "west")
    last = client.get_session(agent_name, "s")["last_seq"]

    done = cli("compact", agent_name, "s")
    assert done.exit_code == 0, done.output
    lines = done.stdout.splitlines()
    assert lines[0].startswith(f"compacted {agent_name}/s at seq {last + 1}: events 1-")
    assert "summarised (4 messages); about " in lines[0] and " tokens" in lines[0]
    assert lines[1:] == ["Summary:", "- user: north wind blows",
                         "- assistant: echo: north wind blows", "- user: south sea calm",
                         "- assistant: echo: south sea calm"]
    # The history shows the compaction; the model's view starts at the kept turns.
    history = cli("history", agent_name, "-s", "s")
    assert history.exit_code == 0, history.output
    assert "· compacted: events 1-" in history.stdout
    assert "north wind blows" in history.stdout  # the log keeps the originals
    context = client.context(agent_name, "s")
    assert [m.get("content") for m in context["messages"] if m["kind"] == "user"] == [
        "east", "west"]
    assert context["summary"] == "\n".join(lines[1:])

    # Nothing left to compact: one error line, exit 1, nothing written.
    error = one_error_line(cli("compact", agent_name, "s"))
    assert "nothing_to_compact" in error
    assert client.get_session(agent_name, "s")["last_seq"] == last + 1


def test_compact_json_and_options(cli: Invoke, client: Client, agent_name: str) -> None:
    assert cli("create", agent_name, "--tool", "calculator").exit_code == 0
    talk(client, agent_name, "t", '/tool calculator {"expression": "3 * 3"}', "b", "c")
    done = cli("compact", agent_name, "t", "--strategy", "clear_tool_results",
               "--keep-turns", "1", "--json")
    assert done.exit_code == 0, done.output
    body = json.loads(done.stdout)
    assert (body["strategy"], body["messages"], body["summary"]) == (
        "clear_tool_results", 1, None)

    bad = cli("compact", agent_name, "t", "--strategy", "shorten")
    assert bad.exit_code == 2 and "summarize or clear_tool_results" in bad.output
    assert cli("compact", agent_name, "t", "--keep-turns", "0").exit_code == 2
    assert "session_not_found" in one_error_line(cli("compact", agent_name, "nope"))

    # The client says the same things.
    with pytest.raises(APIError) as info:
        client.compact(agent_name, "t", strategy="clear_tool_results", keep_turns=1)
    assert (info.value.status, info.value.code) == (409, "nothing_to_compact")
    summary = client.compact(agent_name, "t", keep_turns=1)
    assert summary["summary"].startswith("Summary:\n- user: /tool calculator")
    assert client.context(agent_name, "t")["summary"] == summary["summary"]
