"""Subtasks over a socket: the client's ``subtasks`` and ``agentd subtasks`` against a
live daemon (GET /v1/runs/{id}/subtasks)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.cli.conftest import Invoke, one_error_line

from agentd.client import APIError, Client
from agentd.security.tokens import read_token


@pytest.fixture
def client(live_url: str, live_home: Path) -> Iterator[Client]:
    with Client(live_url, token=read_token(live_home), timeout=30.0) as c:
        yield c


def test_a_runs_subtasks_are_listed_by_the_client_and_the_cli(
        client: Client, cli: Invoke, agent_name: str) -> None:
    worker = f"{agent_name}-w"
    client.create_agent(worker, model="scripted", instructions="I work.")
    start = [{"name": "subtask_start", "arguments": {
        "title": f"part {i}", "instructions": f"job {i}", "agent": worker}} for i in (1, 2)]
    client.create_agent(agent_name, model="scripted",
                        tools=["subtask_start", "subtask_wait"], settings={
                            "delegation": {"calls": {"allow": [worker]}},
                            "script": [{"tool_calls": start},
                                       {"tool_calls": [{"name": "subtask_wait",
                                                        "arguments": {}}]},
                                       {"text": "merged"}]})
    run = client.send(agent_name, "k", "go")
    assert run["status"] == "completed" and run["output"] == "merged"
    found = client.subtasks(run["id"])
    assert [(s["title"], s["agent"], s["status"], s["output"], s["n"]) for s in found] == [
        ("part 1", worker, "completed", "echo: job 1", 1),
        ("part 2", worker, "completed", "echo: job 2", 2)]
    assert found[0]["session"] == f"sub:{run['id']}:1"
    assert client.get_run(found[0]["run_id"])["agent"] == worker

    shown = cli("subtasks", run["id"])
    assert shown.exit_code == 0, shown.output
    assert found[0]["id"] in shown.stdout and "completed" in shown.stdout
    as_json = cli("subtasks", run["id"], "--json")
    assert json.loads(as_json.stdout) == found
    none = cli("subtasks", found[0]["run_id"])
    assert "started no subtasks" in none.stdout


def test_an_unknown_run_is_a_404(client: Client, cli: Invoke) -> None:
    with pytest.raises(APIError) as info:
        client.subtasks("r_nope")
    assert info.value.status == 404 and info.value.code == "run_not_found"
    assert "not found" in one_error_line(cli("subtasks", "r_nope"))
