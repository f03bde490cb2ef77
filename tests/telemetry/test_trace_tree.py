"""One trace across everything a run can start, exported by two real daemon processes
to one real OTLP receiver: a run that uses a tool, writes to its memory, starts a subtask on
another agent, asks a team and calls an agent of the other daemon over A2A. Every span is in the
caller's trace, each child under the span that started it, the remote daemon's run
under the ``invoke_agent`` CLIENT span whose ``traceparent`` the call sent."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.daemons import Daemon, create_agent
from tests.telemetry._receiver import HttpReceiver, Span

from agentd.security.tokens import read_token

pytestmark = pytest.mark.e2e

CALLER_TRACE = "0af7651916cd43dd8448eb211c80319c"
CALLER_SPAN = "b7ad6b7169203331"
_ALLOW = [{"tool": "*", "action": "allow", "tainted": True}, {"tool": "*", "action": "allow"}]


@pytest.fixture
def receiver() -> Iterator[HttpReceiver]:
    got = HttpReceiver()
    yield got
    got.close()


def _daemon(root: Path, receiver: HttpReceiver, service: str) -> Daemon:
    root.mkdir(parents=True, exist_ok=True)
    return Daemon(root / "home", root / "agentd.log", args=(), env={
        "AGENTD_DEMO_AGENT": "false", "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url, "OTEL_SERVICE_NAME": service})


def _one(spans: list[Span], name: str) -> Span:
    found = [s for s in spans if s.name == name]
    assert len({s.span_id for s in found}) == 1, (name, [s.name for s in spans])
    return found[0]


def test_a_trace_follows_a_tool_a_subtask_a_team_and_an_a2a_call(
        tmp_path: Path, receiver: HttpReceiver) -> None:
    remote = _daemon(tmp_path / "remote", receiver, "remote-svc").start()
    local = _daemon(tmp_path / "local", receiver, "local-svc")
    local.home.mkdir(parents=True)
    (local.home / "agentd.toml").write_text(
        f'[sandbox]\nprivate_endpoints = ["127.0.0.1:{remote.port}"]\n'
        f'[a2a]\nremote_tokens = {{"http://127.0.0.1:{remote.port}" = "REMOTE_TOKEN"}}\n')
    local.env["REMOTE_TOKEN"] = read_token(remote.home) or ""
    local.start()
    try:
        with remote.client() as api:
            create_agent(api, "faraway")
        with local.client() as api:
            create_agent(api, "worker", settings={"script": [{"text": "worked"}]})
            create_agent(api, "m1")
            create_agent(api, "m2")
            create_agent(api, "crew", settings={"team": {"pattern": "pipeline",
                                                        "members": ["m1", "m2"]}})
            create_agent(api, "boss", tools=[
                "calculator", "subtask_start", "subtask_wait", "agent_call", "a2a_call",
                "remember"],
                settings={
                    "policy": {"network": True, "rules": _ALLOW},
                    "delegation": {"calls": {"allow": ["worker", "crew"]}},
                    "script": [
                        {"tool_calls": [
                            {"name": "calculator", "arguments": {"expression": "6*7"}},
                            {"name": "remember", "arguments": {"content": "likes tea"}},
                            {"name": "subtask_start", "arguments": {
                                "title": "work", "instructions": "do it",
                                "agent": "worker"}},
                            {"name": "a2a_call", "arguments": {
                                "url": f"{remote.url}/a2a/faraway", "message": "hi"}}]},
                        {"tool_calls": [
                            {"name": "subtask_wait", "arguments": {}},
                            {"name": "agent_call", "arguments": {"agent": "crew",
                                                                 "message": "go"}}]},
                        {"text": "all done"}]})
            reply = api.post("/v1/agents/boss/sessions/main/messages",
                             json={"content": "start", "wait": True},
                             headers={"traceparent": f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"})
            assert reply.status_code == 200, reply.text
            assert reply.json()["status"] == "completed", reply.text
        names = ("invoke_agent boss", "invoke_agent worker", "invoke_workflow crew",
                 "invoke_agent m1", "invoke_agent m2", "invoke_agent faraway")
        spans = receiver.receiver.wait_for(
            lambda got: all(any(s.name == n for s in got) for n in names))
        boss = _one(spans, "invoke_agent boss")
        assert (boss.trace_id, boss.parent_id) == (CALLER_TRACE, CALLER_SPAN)
        assert {s.trace_id for s in spans} == {CALLER_TRACE}
        tools = {s.attributes["gen_ai.tool.name"]: s for s in spans
                 if s.name.startswith("execute_tool") and s.parent_id == boss.span_id}
        assert set(tools) == {"calculator", "subtask_start", "a2a_call", "subtask_wait",
                              "agent_call", "remember"}
        assert _one(spans, "create_memory entries").parent_id == tools["remember"].span_id
        # The subtask's run and the team's run are children of the run that started them.
        assert _one(spans, "invoke_agent worker").parent_id == boss.span_id
        crew = _one(spans, "invoke_workflow crew")
        assert crew.parent_id == boss.span_id
        assert crew.attributes["gen_ai.operation.name"] == "invoke_workflow"
        for member in ("m1", "m2"):
            assert _one(spans, f"invoke_agent {member}").parent_id == crew.span_id
        # The A2A call: a CLIENT span under the tool's; the other daemon's run under it.
        client = next(s for s in spans if s.kind == 3 and s.name.startswith("invoke_agent")
                      and s.parent_id == tools["a2a_call"].span_id)
        far = _one(spans, "invoke_agent faraway")
        assert far.parent_id == client.span_id
        assert far.service == "remote-svc" and boss.service == "local-svc"
        # Every span's parent is in the trace (or is the caller's).
        ids = {s.span_id for s in spans} | {CALLER_SPAN}
        assert all(s.parent_id in ids for s in spans), [
            s.name for s in spans if s.parent_id not in ids]
    finally:
        local.cleanup()
        remote.cleanup()
