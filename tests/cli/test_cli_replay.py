"""``agentd replay RUN`` and ``Client.replay_run`` against a live daemon (a real
socket, SQLite)."""

from __future__ import annotations

import json

from tests.cli.conftest import Invoke, one_error_line

from agentd.client import Client


def test_replay_a_finished_run(cli: Invoke, live_url: str, agent_name: str) -> None:
    client = Client(live_url)
    client.create_agent(agent_name, settings={"script": [{"text": "one"}]})
    run = client.send(agent_name, "k", "hi", wait=True)
    assert run["status"] == "completed"
    answer = client.replay_run(run["id"])
    assert answer["matches"] is True and answer["model_calls"] == 0
    assert answer["session"] == f"replay:{run['id']}:1"
    result = cli("replay", run["id"])
    assert result.exit_code == 0, result.output
    assert "matches" in result.output and f"replay:{run['id']}:2" in result.output
    result = cli("replay", run["id"], "--json")
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    assert body["matches"] is True and body["first_divergence"] is None
    assert body["tools_executed"] == 0 and body["run_id"] != run["id"]


def test_replay_refuses_what_it_cannot(cli: Invoke, live_url: str, agent_name: str) -> None:
    assert "not found" in one_error_line(cli("replay", "r_doesnotexist"))
    client = Client(live_url)
    client.create_agent(agent_name, settings={"script": [{"text": "slow",
                                                          "delay_ms": 60_000}]})
    run = client.send(agent_name, "k", "hi", wait=False)
    line = one_error_line(cli("replay", run["id"]))
    assert "can be replayed once it has ended" in line, line
    client.cancel_run(run["id"])
