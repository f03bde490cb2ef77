"""Traces end to end: real daemons export the spans of their runs to real OTLP
receivers (HTTP/protobuf and gRPC, decoded with opentelemetry-proto's types), built
from the log by the follower; a run's trace continues its caller's (``traceparent``)
and a child run's continues its parent's; a receiver that is down is retried and a
crash loses no trace; with traces off nothing of the SDK is imported."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.conftest import wait_until
from tests.daemons import Spawn, ThreadDaemon, clean_env, create_agent
from tests.telemetry._receiver import GrpcReceiver, HttpReceiver, Span, parse_otlp_json
from typer.testing import CliRunner

from agentd.cli import app
from agentd.config import TelemetryConfig
from agentd.telemetry import follower
from agentd.telemetry.spans import default_trace_id

pytestmark = pytest.mark.e2e

CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"
TRACEPARENT = f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"


@pytest.fixture
def http_receiver() -> Iterator[HttpReceiver]:
    receiver = HttpReceiver()
    yield receiver
    receiver.close()


def _agents(client: httpx.Client) -> None:
    create_agent(client, "helper", model="scripted", settings={"script": [{"text": "done"}]})
    create_agent(client, "asker", model="scripted",
                 tools=["agent_call", "calculator"],
                 settings={"delegation": {"calls": {"allow": ["helper"]}}, "script": [
                     {"tool_calls": [{"name": "calculator",
                                      "arguments": {"expression": "6*7"}}]},
                     {"tool_calls": [{"name": "agent_call",
                                      "arguments": {"agent": "helper", "message": "hi"}}]},
                     {"text": "thanks"}]})


def _send(client: httpx.Client, agent: str, headers: dict[str, str] | None = None
          ) -> dict[str, Any]:
    reply = client.post(f"/v1/agents/{agent}/sessions/main/messages",
                        json={"content": "go", "wait": True}, headers=headers or {})
    assert reply.status_code == 200, reply.text
    run: dict[str, Any] = reply.json()
    assert run["status"] == "completed", run
    return run


def _of(spans: list[Span], name: str) -> list[Span]:
    return [s for s in spans if s.name == name]


def _check_tree(spans: list[Span], service: str) -> None:
    asker = _of(spans, "invoke_agent asker")[0]
    helper = _of(spans, "invoke_agent helper")[0]
    assert (asker.trace_id, asker.parent_id) == (CALLER_TRACE, CALLER_SPAN)
    # The child run (an agent call) continues the trace, under the calling run.
    assert (helper.trace_id, helper.parent_id) == (CALLER_TRACE, asker.span_id)
    chats = [s for s in spans if s.name.startswith("chat ") and s.parent_id == asker.span_id]
    assert len(chats) == 3
    tools = {s.attributes["gen_ai.tool.name"]: s for s in spans
             if s.name.startswith("execute_tool")}
    assert set(tools) == {"calculator", "agent_call"}
    assert all(t.parent_id == asker.span_id and t.trace_id == CALLER_TRACE
               for t in tools.values())
    assert asker.attributes["gen_ai.operation.name"] == "invoke_agent"
    assert asker.attributes["gen_ai.agent.name"] == "asker"
    assert chats[0].attributes["gen_ai.operation.name"] == "chat"
    assert chats[0].attributes["gen_ai.provider.name"] == "scripted"
    assert chats[0].kind == 3  # CLIENT
    assert asker.kind == 1  # INTERNAL
    assert "gen_ai.response.time_to_first_chunk" in chats[0].attributes
    assert asker.start_ns <= chats[0].start_ns <= chats[0].end_ns <= asker.end_ns
    assert {s.service for s in spans} == {service}
    # Only names and sizes: no content unless capture_content is on.
    assert not any("gen_ai.input.messages" in s.attributes for s in spans)


def test_runs_are_exported_over_otlp_http_from_the_standard_variables(
        spawn: Spawn, http_receiver: HttpReceiver) -> None:
    daemon = spawn(env={"OTEL_TRACES_EXPORTER": "otlp",
                        "OTEL_EXPORTER_OTLP_ENDPOINT": http_receiver.url,
                        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
                        "OTEL_SERVICE_NAME": "agentd-test"})
    with daemon.client() as client:
        _agents(client)
        _send(client, "asker", {"traceparent": TRACEPARENT})
        spans = http_receiver.receiver.wait_for(
            lambda got: _of(got, "invoke_agent asker") and _of(got, "invoke_agent helper"))
        _check_tree(spans, "agentd-test")
        # (Counted once recorded as exported, just after the receiver took them.)
        wait_until(lambda: client.get("/health").json()["traces"]["exported_runs"] >= 2,
                   what="both runs counted as exported in /health")


def test_runs_are_exported_over_otlp_grpc(tmp_path: Path) -> None:
    receiver = GrpcReceiver()
    daemon = ThreadDaemon(tmp_path / "home", tmp_path / "agentd.log", token="t" * 40,
                          telemetry=TelemetryConfig(traces_exporter="otlp",
                                                    otlp_endpoint=receiver.url,
                                                    otlp_protocol="grpc",
                                                    service_name="grpc-svc")).start()
    try:
        with daemon.client() as client:
            _agents(client)
            _send(client, "asker", {"traceparent": TRACEPARENT})
            spans = receiver.receiver.wait_for(
                lambda got: _of(got, "invoke_agent asker") and _of(got, "invoke_agent helper"))
            _check_tree(spans, "grpc-svc")
    finally:
        daemon.cleanup()
        receiver.close()


def test_a_receiver_that_is_down_is_retried_and_a_crash_loses_no_trace(
        spawn: Spawn, http_receiver: HttpReceiver) -> None:
    env = {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_ENDPOINT": http_receiver.url}
    http_receiver.receiver.refuse = True
    daemon = spawn(env=env)
    with daemon.client() as client:
        create_agent(client, "helper", model="scripted",
                     settings={"script": [{"text": "done"}]})
        run = _send(client, "helper")
        # Refused: the daemon keeps serving, says so in /health, and retries.
        wait_until(lambda: client.get("/health").json()["traces"]["failures"] >= 1,
                   what="a failed export in /health")
        health = client.get("/health").json()["traces"]
        assert health["pending_runs"] >= 1 and health["last_error"]
        second = _send(client, "helper")
    daemon.signal_and_wait(signal.SIGKILL)
    assert not http_receiver.receiver.spans
    http_receiver.receiver.refuse = False
    daemon.start()  # the same home: the start-up scan finds the runs not exported
    spans = http_receiver.receiver.wait_for(
        lambda got: {s.trace_id for s in _of(got, "invoke_agent helper")}
        >= {default_trace_id(run["id"]), default_trace_id(second["id"])})
    roots = _of(spans, "invoke_agent helper")
    assert sorted(s.attributes["agentd.run.id"] for s in roots) \
        == sorted([run["id"], second["id"]])


def test_traces_on_demand_and_agentd_trace(tmp_path: Path, http_receiver: HttpReceiver
                                           ) -> None:
    token = "t" * 40
    daemon = ThreadDaemon(tmp_path / "home", tmp_path / "agentd.log", token=token).start()
    try:
        with daemon.client() as client:
            _agents(client)
            run = _send(client, "asker", {"traceparent": "00-bogus"})
            assert client.get("/health").json()["traces"] == {"exporter": "none"}
            reply = client.get(f"/v1/runs/{run['id']}/trace")
            assert reply.status_code == 200, reply.text
            request = parse_otlp_json(reply.json())
            spans = request.resource_spans[0].scope_spans[0].spans
            # A bad traceparent is ignored: the run starts a trace of its own.
            assert spans[0].trace_id.hex() == default_trace_id(run["id"])
            assert [s.name for s in spans].count("execute_tool calculator") == 1
            assert client.get("/v1/runs/r_nope/trace").status_code == 404
            session = client.get("/v1/agents/asker/sessions/main/trace")
            assert session.status_code == 200
            assert client.get("/v1/agents/asker/sessions/nope/trace").status_code == 404
        runner = CliRunner()
        base = ["--url", daemon.url, "--token", token, "trace"]
        result = runner.invoke(app, [*base, run["id"], "--otlp", http_receiver.url])
        assert result.exit_code == 0, result.output
        got = http_receiver.receiver.wait_for(lambda s: _of(s, "invoke_agent asker"))
        assert len(got) == len(spans)
        out = tmp_path / "trace.json"
        result = runner.invoke(app, [*base, "main", "--agent", "asker", "--out", str(out)])
        assert result.exit_code == 0, result.output
        assert parse_otlp_json(out.read_bytes()).resource_spans
        shown = runner.invoke(app, [*base, run["id"]])
        assert "invoke_agent asker" in shown.output and "execute_tool" in shown.output
        bad = runner.invoke(app, [*base, "main"])
        assert bad.exit_code != 0 and "--agent" in bad.output
        down = runner.invoke(app, [*base, run["id"], "--otlp", "http://127.0.0.1:9"])
        assert down.exit_code != 0 and "could not post" in down.output
    finally:
        daemon.cleanup()


def test_with_traces_off_nothing_of_the_sdk_is_imported(tmp_path: Path) -> None:
    script = """
import sys, httpx
from agentd.config import Settings
from agentd.testing.live import LiveServer
settings = Settings(home=sys.argv[1], token="t" * 40)
with LiveServer(settings) as server:
    h = {"Authorization": "Bearer " + "t" * 40}
    r = httpx.post(server.url + "/v1/agents/demo/sessions/k/messages",
                   json={"content": "hi", "wait": True}, headers=h, timeout=60)
    assert r.status_code == 200, r.text
    print(sorted(m for m in sys.modules if m.startswith("opentelemetry.sdk")
                 or m.startswith("opentelemetry.exporter")))
"""
    result = subprocess.run([sys.executable, "-c", script, str(tmp_path / "home")],
                            env=clean_env(), capture_output=True, text=True, timeout=120,
                            check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout.strip().splitlines()[-1].replace("'", '"')) == []


def test_a_receiver_down_for_long_costs_bounded_memory(
        tmp_path: Path, http_receiver: HttpReceiver, monkeypatch: pytest.MonkeyPatch) -> None:
    """Past the queue's size, runs that end while the receiver is down are not held in
    memory: they are read back from the store once the queue is out."""
    monkeypatch.setattr(follower, "_MAX_PENDING", 2)
    http_receiver.receiver.refuse = True
    daemon = ThreadDaemon(tmp_path / "home", tmp_path / "agentd.log", token="t" * 40,
                          telemetry=TelemetryConfig(traces_exporter="otlp",
                                                    otlp_endpoint=http_receiver.url)).start()
    try:
        with daemon.client() as client:
            create_agent(client, "helper", model="scripted",
                         settings={"script": [{"text": "done"}]})
            runs = [_send(client, "helper")["id"] for _ in range(5)]
            health = wait_until(
                lambda: (h := client.get("/health").json()["traces"])["failures"] >= 1
                and h["overflowed_runs"] >= 1 and h,
                what="a failed export and runs past the queue in /health")
            assert health["pending_runs"] <= 2
            http_receiver.receiver.refuse = False
            spans = http_receiver.receiver.wait_for(
                lambda got: len(_of(got, "invoke_agent helper")) >= 5)
            assert sorted(s.attributes["agentd.run.id"]
                          for s in _of(spans, "invoke_agent helper")) == sorted(runs)
    finally:
        daemon.cleanup()


def test_an_otlp_protocol_it_cannot_speak_stops_the_start_with_a_message(
        tmp_path: Path) -> None:
    env = {**clean_env(), "AGENTD_HOME": str(tmp_path / "home"),
           "OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}
    result = subprocess.run([sys.executable, "-m", "agentd", "serve", "--port", "9"],
                            env=env, capture_output=True, text=True, timeout=120,
                            check=False)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "invalid settings: OTLP protocol 'http/json' is not supported" in result.stderr
    assert "Traceback" not in result.stderr
