"""The spans of a run, built from its events: names, kinds, parents and attributes by
OpenTelemetry's GenAI conventions, checked against the conventions' own registry (the
``opentelemetry-semantic-conventions`` package's attribute names)."""

from __future__ import annotations

import pytest
from opentelemetry.semconv._incubating.attributes import gen_ai_attributes
from opentelemetry.semconv.attributes import error_attributes, server_attributes
from tests.telemetry._receiver import parse_otlp_json

from agentd.telemetry.export import otlp_json, traces_url
from agentd.telemetry.logs import Redactor
from agentd.telemetry.spans import (
    MAX_ATTRIBUTE_CHARS,
    RunInfo,
    build_run_spans,
    default_trace_id,
    parse_traceparent,
    span_id,
)

RUN = RunInfo(run_id="r_1", session_id="s_1", agent_id="a_1", agent_name="helper",
              session_key="main", status="completed", created_at=100.0, started_at=100.5,
              finished_at=103.0, trace_id=default_trace_id("r_1"))

EVENTS = [
    ("message.user", {"content": "add 1 and 1"}, 100.0),
    ("run.queued", {}, 100.0),
    ("run.started", {}, 100.5),
    ("message.assistant", {
        "text": "", "tool_calls": [{"id": "c1", "name": "calculator",
                                    "arguments": {"expression": "1+1"}}],
        "usage": {"input_tokens": 50, "output_tokens": 7, "cached_tokens": 20,
                  "cost_usd": 0.001},
        "finish_reason": "tool_calls", "model": "openai:gpt-4.1-mini", "step": 1,
        "queue": {"class": "interactive", "lane": "openai", "wait_ms": 3.5},
        "recalled": {"query": "add 1 and 1", "entries": [{"id": "m1", "score": 0.9,
                                                          "tainted": False}],
                     "tokens": 12, "duration_ms": 30.0},
        "attempts": [{"model": "openai:gpt-4.1-mini", "code": "model_unavailable"}],
        "duration_ms": 800.0, "ttfc_ms": 120.0}, 101.4),
    ("tool.started", {"call_id": "c1", "name": "calculator",
                      "arguments": {"expression": "1+1"}, "effect_id": "e1",
                      "policy": {"action": "allow", "rule": "default", "reason": ""}},
     101.5),
    ("tool.finished", {"call_id": "c1", "name": "calculator", "output": "2",
                       "is_error": False, "duration_ms": 200.0}, 101.7),
    ("message.assistant", {
        "text": "2", "tool_calls": [], "usage": {"input_tokens": 70, "output_tokens": 1,
                                                 "cached_tokens": 0},
        "recalled": {"query": "add 1 and 1", "entries": [], "tokens": 12},
        "finish_reason": "stop", "model": "openai:gpt-4.1-mini", "step": 2,
        "duration_ms": 400.0}, 102.5),
    ("run.completed", {"output": "2"}, 103.0),
]


def test_a_run_is_an_invoke_agent_span_with_chat_and_tool_children() -> None:
    spans = build_run_spans(RUN, EVENTS)
    root, recall, chat1, tool, _ = spans
    assert root.name == "invoke_agent helper" and root.kind == "INTERNAL"
    # Auto-recall's search, once (the second step shows the same recall).
    assert recall.name == "retrieval memory" and recall.parent_id == root.span_id
    assert recall.attributes["gen_ai.operation.name"] == "retrieval"
    assert recall.attributes["agentd.memory.entries"] == 1
    assert (recall.start, recall.end) == (pytest.approx(100.57), pytest.approx(100.6))
    assert root.parent_id is None and root.status == "OK"
    assert (root.start, root.end) == (100.0, 103.0)
    assert [s.name for s in spans[1:]] == ["retrieval memory", "chat gpt-4.1-mini",
                                           "execute_tool calculator", "chat gpt-4.1-mini"]
    assert {s.parent_id for s in spans[1:]} == {root.span_id}
    assert {s.trace_id for s in spans} == {default_trace_id("r_1")}
    assert chat1.kind == "CLIENT" and tool.kind == "INTERNAL"
    assert chat1.start == pytest.approx(100.6) and chat1.end == 101.4
    assert tool.start == pytest.approx(101.5) and tool.end == 101.7
    a = chat1.attributes
    assert a["gen_ai.operation.name"] == "chat"
    assert a["gen_ai.provider.name"] == "openai"
    assert a["gen_ai.request.model"] == "gpt-4.1-mini"
    assert a["gen_ai.conversation.id"] == "s_1"
    assert (a["gen_ai.usage.input_tokens"], a["gen_ai.usage.output_tokens"]) == (50, 7)
    assert a["gen_ai.usage.cache_read.input_tokens"] == 20
    assert a["gen_ai.response.time_to_first_chunk"] == pytest.approx(0.12)
    assert a["gen_ai.response.finish_reasons"] == ["tool_calls"]
    assert (a["agentd.queue.wait_ms"], a["agentd.retries"]) == (3.5, 1)
    assert a["agentd.usage.cost_usd"] == 0.001
    t = tool.attributes
    assert (t["gen_ai.operation.name"], t["gen_ai.tool.name"], t["gen_ai.tool.call.id"]) \
        == ("execute_tool", "calculator", "c1")
    assert t["agentd.policy.action"] == "allow"
    r = root.attributes
    assert (r["gen_ai.usage.input_tokens"], r["gen_ai.usage.output_tokens"]) == (120, 8)
    assert r["agentd.queue.wait_ms"] == 500.0
    # No content unless asked for.
    assert not any(k in s.attributes for s in spans for k in (
        "gen_ai.input.messages", "gen_ai.output.messages", "gen_ai.tool.call.arguments",
        "gen_ai.tool.call.result"))


def test_the_same_events_give_the_same_ids() -> None:
    first = build_run_spans(RUN, EVENTS)
    again = build_run_spans(RUN, EVENTS)
    assert [(s.trace_id, s.span_id) for s in first] == [(s.trace_id, s.span_id) for s in again]
    assert first[0].span_id == span_id("r_1", "run")
    assert len({s.span_id for s in first}) == len(first)


#: Names of the GenAI memory conventions (open-telemetry/semantic-conventions-genai,
#: model/gen-ai/registry.yaml, development stability), newer than the registry the
#: opentelemetry-semantic-conventions package was generated from: checked by name here
#: until the package has them.
MEMORY_ATTRIBUTES = {"gen_ai.memory.store.id", "gen_ai.memory.record.id",
                     "gen_ai.memory.record.count", "gen_ai.memory.query.text"}
MEMORY_OPERATIONS = {"search_memory", "create_memory", "update_memory", "upsert_memory",
                     "delete_memory", "create_memory_store", "delete_memory_store"}

MEMORY_EVENTS = [
    ("message.user", {"content": "remember and recall"}, 200.0),
    ("run.started", {}, 200.1),
    ("message.assistant", {
        "text": "", "tool_calls": [
            {"id": "m1", "name": "remember", "arguments": {"content": "likes tea"}},
            {"id": "m2", "name": "recall", "arguments": {"query": "drinks"}},
            {"id": "m3", "name": "forget", "arguments": {"entry_id": "e_9"}},
            {"id": "m4", "name": "memory_append", "arguments": {"label": "human",
                                                                "text": "x"}}],
        "usage": {"input_tokens": 5, "output_tokens": 5}, "model": "scripted",
        "step": 1}, 200.5),
    *[(kind, {"call_id": c, "name": n, "arguments": a, "output": "ok", "duration_ms": 10.0},
       200.6 + i / 10)
      for i, (c, n, a) in enumerate([("m1", "remember", {"content": "likes tea"}),
                                     ("m2", "recall", {"query": "drinks"}),
                                     ("m3", "forget", {"entry_id": "e_9"}),
                                     ("m4", "memory_append", {"label": "human", "text": "x"})])
      for kind in ("tool.started", "tool.finished")],
    ("run.completed", {"output": "done"}, 201.5),
]


def test_memory_tools_get_memory_operation_spans() -> None:
    run = RunInfo(**{f: getattr(RUN, f) for f in RUN.__slots__ if f != "run_id"},
                  run_id="r_m")
    spans = build_run_spans(run, MEMORY_EVENTS, capture_content=True)
    tools = {s.attributes["gen_ai.tool.name"]: s for s in spans
             if s.name.startswith("execute_tool")}
    memory = {s.name: s for s in spans
              if s.attributes["gen_ai.operation.name"] in MEMORY_OPERATIONS}
    assert set(memory) == {"create_memory entries", "search_memory entries",
                           "delete_memory entries", "update_memory blocks"}
    search = memory["search_memory entries"]
    assert search.parent_id == tools["recall"].span_id
    assert (search.start, search.end) == (tools["recall"].start, tools["recall"].end)
    assert search.attributes["gen_ai.memory.query.text"] == "drinks"
    assert "gen_ai.memory.record.count" not in search.attributes
    delete = memory["delete_memory entries"].attributes
    assert (delete["gen_ai.memory.record.id"], delete["gen_ai.memory.record.count"]) \
        == ("e_9", 1)
    assert memory["update_memory blocks"].attributes["gen_ai.memory.record.id"] == "human"
    # Content only when asked for.
    quiet = build_run_spans(run, MEMORY_EVENTS)
    assert not any("gen_ai.memory.query.text" in s.attributes for s in quiet)


def test_every_gen_ai_name_is_in_the_conventions_registry() -> None:
    registry = {v for k, v in vars(gen_ai_attributes).items()
                if k.startswith("GEN_AI_") and isinstance(v, str)}
    registry.update({error_attributes.ERROR_TYPE, server_attributes.SERVER_ADDRESS})
    registry |= MEMORY_ATTRIBUTES
    spans = [*build_run_spans(RUN, EVENTS, capture_content=True, legacy=True),
             *build_run_spans(RUN, MEMORY_EVENTS, capture_content=True)]
    names = {k for s in spans for k in s.attributes if not k.startswith("agentd.")}
    assert names - registry == set()
    operations = {s.attributes["gen_ai.operation.name"] for s in spans}
    values = {m.value for m in gen_ai_attributes.GenAiOperationNameValues}
    assert operations <= values | MEMORY_OPERATIONS


def test_failures_and_unfinished_tools_are_errors() -> None:
    events = [*EVENTS[:5], ("run.failed", {"error": {"code": "tool_timeout",
                                                     "message": "took too long"}}, 102.0)]
    run = RunInfo(**{f: getattr(RUN, f) for f in RUN.__slots__ if f != "status"},
                  status="failed")
    root, _, _, tool = build_run_spans(run, events)
    assert (root.status, root.status_message) == ("ERROR", "took too long")
    assert root.attributes["error.type"] == "tool_timeout"
    assert tool.status == "ERROR" and tool.attributes["error.type"] == "unfinished"
    assert tool.end == 102.0


def test_content_is_cut_and_hostile_data_is_ignored() -> None:
    huge = "x" * (MAX_ATTRIBUTE_CHARS * 10)
    events = [("message.user", {"content": huge}, 100.0),
              ("message.assistant", {"text": huge, "tool_calls": "nope", "usage": "bad",
                                     "model": 42, "step": True, "queue": [1],
                                     "duration_ms": "soon", "ttfc_ms": None}, 101.0),
              ("tool.started", {"call_id": 7, "name": None}, 101.0),
              ("tool.finished", {"call_id": "ghost", "name": "x", "output": huge,
                                 "is_error": True, "duration_ms": -5}, 101.5),
              ("run.completed", {}, 102.0)]
    spans = build_run_spans(RUN, events, capture_content=True)
    for span in spans:
        for value in span.attributes.values():
            if isinstance(value, str):
                assert len(value) <= MAX_ATTRIBUTE_CHARS + 1
        assert span.start <= span.end
    assert spans[1].attributes["gen_ai.provider.name"] == "unknown"
    assert spans[2].name == "execute_tool x" and spans[2].status == "ERROR"


def test_traceparent() -> None:
    good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    parsed = parse_traceparent(good)
    assert parsed is not None and parsed.trace_id == "4bf92f3577b34da6a3ce929d0e0e4736"
    for bad in ("", "00-" + "0" * 32 + "-00f067aa0ba902b7-01",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-" + "0" * 16 + "-01",
                good.upper(), good + "-x", "01" + good[2:], None, 7, "00-zz" + good[5:]):
        assert parse_traceparent(bad) is None


def test_otlp_json_is_what_the_official_types_read() -> None:
    document = otlp_json(build_run_spans(RUN, EVENTS), service_name="svc")
    request = parse_otlp_json(document)
    spans = request.resource_spans[0].scope_spans[0].spans
    assert spans[0].name == "invoke_agent helper"
    assert spans[1].parent_span_id.hex() == spans[0].span_id.hex()
    assert spans[0].trace_id.hex() == default_trace_id("r_1")
    assert spans[0].start_time_unix_nano == 100_000_000_000
    assert traces_url("http://h:4318") == "http://h:4318/v1/traces"
    assert traces_url("http://h:4318/v1/traces/") == "http://h:4318/v1/traces"


def test_a_call_to_a_remote_agent_is_a_client_span_under_its_tool_span() -> None:
    events = [("run.started", {}, 100.0),
              ("tool.started", {"call_id": "c9", "name": "a2a_call", "effect_id": "e",
                                "arguments": {"url": "http://peer.example:8721/a2a/x",
                                              "message": "hi"}}, 100.5),
              ("tool.finished", {"call_id": "c9", "name": "a2a_call", "output": "ok",
                                 "is_error": False, "duration_ms": 300.0}, 101.0),
              ("tool.started", {"call_id": "bad", "name": "a2a_call", "effect_id": "f",
                                "arguments": {"url": "http://[::1", "message": "x"}}, 101.2),
              ("run.completed", {}, 102.0)]
    spans = build_run_spans(RUN, events)
    tool = next(s for s in spans if s.span_id == span_id("r_1", "tool:c9"))
    client = next(s for s in spans if s.span_id == span_id("r_1", "a2a:c9"))
    assert (client.kind, client.parent_id, client.name) == (
        "CLIENT", tool.span_id, "invoke_agent peer.example")
    assert client.attributes["gen_ai.operation.name"] == "invoke_agent"
    assert client.attributes["server.address"] == "peer.example"
    assert (client.start, client.end) == (tool.start, tool.end)
    unfinished = next(s for s in spans if s.span_id == span_id("r_1", "a2a:bad"))
    assert unfinished.name == "invoke_agent remote" and unfinished.end == 102.0


def test_captured_content_goes_through_the_logs_redaction() -> None:
    key = "sk-proj-" + "a1B2" * 12
    events = [("message.user", {"content": f"use {key}"}, 100.0),
              ("message.assistant", {"text": f"ok {key}", "tool_calls": [], "step": 1,
                                     "model": "openai:m"}, 101.0),
              ("run.completed", {}, 102.0)]
    spans = build_run_spans(RUN, events, capture_content=True, redact=Redactor())
    shown = [v for s in spans for v in s.attributes.values() if isinstance(v, str)]
    assert any("use " in v for v in shown) and any("ok " in v for v in shown)
    assert not any(key in v for v in shown)
