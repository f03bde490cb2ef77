"""`agentd approvals`, `approve` and `deny` against the real app over a socket."""

from __future__ import annotations

import json
from typing import Any

from tests.cli.conftest import Invoke, one_error_line, wait_for_status
from tests.conftest import wait_until

from agentd.client import Client


def _ask_agent(live_url: str, name: str, turns: list[dict[str, Any]]) -> None:
    with Client(live_url) as client:
        client.create_agent(name, model="scripted", tools=["calculator"], settings={
            "script": turns,
            "policy": {"rules": [{"tool": "calculator", "action": "ask"}]}})


def _pending(live_url: str, name: str, count: int = 1) -> list[dict[str, Any]]:
    with Client(live_url) as client:
        return wait_until(lambda: p if len(p := client.approvals(name)) >= count else None,
                          what=f"{count} approval request(s) of {name}")


def _run(live_url: str, run_id: str, status: str) -> dict[str, Any]:
    with Client(live_url) as client:
        return wait_for_status(client, run_id, status)


def test_list_approve_with_edited_arguments_and_deny(cli: Invoke, live_url: str,
                                                     agent_name: str) -> None:
    call = {"tool_calls": [{"name": "calculator", "arguments": {"expression": "6*7"}}]}
    _ask_agent(live_url, agent_name, [call, {"text": "first"}, call, {"text": "second"}])
    result = cli("approvals", "--agent", agent_name)
    assert result.exit_code == 0 and "nothing waits" in result.stdout
    with Client(live_url) as client:
        first = client.send(agent_name, "k", "go", wait=False)["id"]
    [request] = _pending(live_url, agent_name)
    listed = cli("approvals")
    assert listed.exit_code == 0, listed.output
    assert request["approval_id"] in listed.stdout and "calculator" in listed.stdout
    as_json = json.loads(cli("approvals", "--agent", agent_name, "--json").stdout)
    assert as_json[0]["arguments"] == {"expression": "6*7"}

    bad = cli("approve", request["approval_id"], "--args", "[1, 2]")
    assert bad.exit_code == 2 and "JSON object" in bad.output
    ok = cli("approve", request["approval_id"], "--args", '{"expression": "2+3"}')
    assert ok.exit_code == 0, ok.output
    assert f"{request['approval_id']} approved" in ok.stdout
    run = _run(live_url, first, "completed")
    assert run["output"] == "first"
    again = cli("approve", request["approval_id"])
    assert "no pending approval" in one_error_line(again)

    with Client(live_url) as client:
        second = client.send(agent_name, "k", "again", wait=False)["id"]
    [request] = _pending(live_url, agent_name)
    denied = cli("deny", request["approval_id"], "--reason", "not now", "--json")
    assert denied.exit_code == 0, denied.output
    decision = json.loads(denied.stdout)
    assert decision["action"] == "deny" and decision["reason"] == "not now"
    assert decision["by"]  # who decided, for the audit trail
    _run(live_url, second, "completed")


def test_remember_and_bad_input(cli: Invoke, live_url: str, agent_name: str) -> None:
    call = {"tool_calls": [{"name": "calculator", "arguments": {"expression": "1+1"}}]}
    _ask_agent(live_url, agent_name, [call, call, {"text": "done"}])
    with Client(live_url) as client:
        run_id = client.send(agent_name, "k", "go", wait=False)["id"]
    [request] = _pending(live_url, agent_name)
    wrong = cli("approve", request["approval_id"], "--remember", "forever")
    assert wrong.exit_code == 2
    ok = cli("approve", request["approval_id"], "--remember", "arguments")
    assert ok.exit_code == 0 and "remembered" in ok.stdout
    assert _run(live_url, run_id, "completed")["output"] == "done"  # not asked twice
    with Client(live_url) as client:
        rules = client.get_agent(agent_name)["settings"]["policy"]["rules"]
    assert rules[0]["action"] == "allow" and rules[0]["exact_args"] == {"expression": "1+1"}
    assert "no pending approval" in one_error_line(cli("deny", "ap_missing"))


def test_send_says_what_waits_and_exits_3(cli: Invoke, live_url: str, agent_name: str
                                          ) -> None:
    call = {"tool_calls": [{"name": "calculator", "arguments": {"expression": "2*2"}}]}
    _ask_agent(live_url, agent_name, [call, {"text": "four"}])
    # (Were the CLI to poll a waiting run, it would give up after --timeout: exit 1.)
    result = cli("send", agent_name, "compute", "--session", "k", "--timeout", "5")
    assert result.exit_code == 3, result.output
    [request] = _pending(live_url, agent_name)
    assert "waits for approval of calculator" in result.stderr
    assert f"agentd approve {request['approval_id']}" in result.stderr
    assert cli("approve", request["approval_id"]).exit_code == 0


def test_run_says_what_a_run_that_has_not_ended_waits_for(
        cli: Invoke, live_url: str, agent_name: str) -> None:
    call = {"tool_calls": [{"name": "calculator", "arguments": {"expression": "2*3"}}]}
    _ask_agent(live_url, agent_name, [call, {"text": "six"}, {"text": "next"}])
    with Client(live_url) as client:
        first = client.send(agent_name, "k", "go", wait=False)["id"]
        [request] = _pending(live_url, agent_name)
        second = client.send(agent_name, "k", "then this", wait=False)["id"]
        assert client.get_run(second)["status"] == "queued"
    asked = cli("run", first)
    assert asked.exit_code == 0, asked.output
    assert "waiting: approval of calculator" in asked.stdout
    assert f"agentd approve {request['approval_id']}" in asked.stdout
    queued = cli("run", second)
    assert queued.exit_code == 0, queued.output
    assert (f"waiting: queued behind another run in this session (run {first} is ahead "
            "of it)") in " ".join(queued.stdout.split())
    assert json.loads(cli("run", second, "--json").stdout)["status"] == "queued"
    assert cli("approve", request["approval_id"]).exit_code == 0
    _run(live_url, second, "completed")
    done = cli("run", first)
    assert "six" in done.stdout and "waiting" not in done.stdout


def _shown_once(cli: Invoke, client: Client, agent: str, run_id: str, kind: str) -> str:
    """What `agentd run` prints once the run (in session ``k``) has logged ``kind``."""
    wait_until(lambda: any(e["kind"] == kind and e["run_id"] == run_id
                           for e in client.events(agent, "k")),
               what=f"{kind} of run {run_id}")
    shown = cli("run", run_id)
    assert shown.exit_code == 0, shown.output
    return str(shown.stdout)


def test_run_says_a_running_run_waits_for_its_model(cli: Invoke, live_url: str,
                                                    agent_name: str) -> None:
    down = {"error": "provider down", "retryable": True}
    with Client(live_url) as client:
        client.create_agent(agent_name, model="scripted", settings={"script": [down] * 50})
        run_id = client.send(agent_name, "k", "hello", wait=False)["id"]
        shown = _shown_once(cli, client, agent_name, run_id, "run.waiting")
        assert "waiting: " in shown and "provider down" in shown
        client.cancel_run(run_id)
        wait_for_status(client, run_id, "cancelled")


def test_run_says_a_running_run_is_in_a_tool_call(cli: Invoke, live_url: str,
                                                  agent_name: str) -> None:
    call = {"tool_calls": [{"name": "shell", "arguments": {"command": "sleep 120"}}]}
    with Client(live_url) as client:
        client.create_agent(agent_name, model="scripted", tools=["shell"], settings={
            "script": [call, {"text": "slept"}],
            "policy": {"rules": [{"tool": "shell", "action": "allow"}]}})
        run_id = client.send(agent_name, "k", "sleep", wait=False)["id"]
        shown = _shown_once(cli, client, agent_name, run_id, "tool.started")
        assert "in a tool call: shell(" in shown and "sleep 120" in shown
        client.cancel_run(run_id)
        wait_for_status(client, run_id, "cancelled")
