"""A run's spans, built from its events in the log (no OpenTelemetry import here).

Every step of a run is committed to its session's log before the next starts, with
what a trace needs: when the run was accepted, started and ended, each model call's
model, usage, cost, queue wait, retries and timings (``message.assistant``), each tool
call's verdict, duration and outcome (``tool.started`` / ``tool.finished``), the child
runs it started (``subtask.started``). So the trace of a run is a function of its
events, computed after the fact by a follower (:mod:`agentd.telemetry.follower`), off
the path that serves the turn, and computed again identically after a crash.

Names follow OpenTelemetry's GenAI semantic conventions (``invoke_agent``, ``chat``,
``execute_tool`` operations; ``gen_ai.*`` attributes); what the conventions do not
name is under ``agentd.*``. Ids are derived from the run's ids (a span's id is a hash
of its run id and its place in the run), so exporting a run twice gives the same spans
and a receiver can tell a repeat from a new trace.

Trace ids: a run sent with a W3C ``traceparent`` continues that trace, as a child of
the caller's span; a child run (a subtask, a call to another agent) continues its
parent run's trace, as a child of the parent's ``invoke_agent`` span; any other run
starts a trace of its own, whose id is :func:`default_trace_id` of the run's id.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit

import orjson

from agentd.logcontext import default_trace_id, span_id

__all__ = [
    "MAX_ATTRIBUTE_CHARS",
    "RunInfo",
    "SpanData",
    "TraceParent",
    "build_run_spans",
    "default_trace_id",
    "parse_traceparent",
    "provider_name",
    "span_id",
]

#: A string attribute longer than this is cut (and ``…`` appended): a tool's output or
#: a prompt can be megabytes, receivers refuse large spans (docs/operations.md).
MAX_ATTRIBUTE_CHARS = 4096

AttrValue = str | bool | int | float | list[str]
SpanKind = Literal["INTERNAL", "CLIENT", "SERVER"]
StatusCode = Literal["UNSET", "OK", "ERROR"]

_TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")

#: agentd's provider names (``provider:model``) as the conventions' well-known
#: ``gen_ai.provider.name`` values; others are passed as they are.
_PROVIDERS = {"openai": "openai", "anthropic": "anthropic", "groq": "groq",
              "mistral": "mistral_ai", "deepseek": "deepseek", "xai": "x_ai",
              "perplexity": "perplexity", "gemini": "gcp.gemini"}


#: The memory tools' operations (the GenAI memory conventions' names) and the store
#: each works on: ``entries`` (long-term memory) or ``blocks`` (core memory blocks).
_MEMORY_OPERATIONS: dict[str, tuple[str, str]] = {
    "remember": ("create_memory", "entries"),
    "recall": ("search_memory", "entries"),
    "update_memory": ("update_memory", "entries"),
    "forget": ("delete_memory", "entries"),
    "memory_append": ("update_memory", "blocks"),
    "memory_replace": ("update_memory", "blocks"),
    "memory_rewrite": ("update_memory", "blocks"),
}


@dataclass(frozen=True, slots=True)
class TraceParent:
    trace_id: str
    span_id: str
    sampled: bool


def parse_traceparent(value: object) -> TraceParent | None:
    """A W3C ``traceparent`` header (version 00), or None if it is not one (an
    invalid header is ignored, as the W3C recommendation says: a new trace starts)."""
    if not isinstance(value, str) or len(value) != 55:
        return None
    match = _TRACEPARENT.match(value)
    if match is None:
        return None
    trace, span, flags = match.groups()
    if trace == "0" * 32 or span == "0" * 16:
        return None
    return TraceParent(trace, span, bool(int(flags, 16) & 1))


def provider_name(model: str | None) -> str:
    """``gen_ai.provider.name`` of an agentd model string (``openai:gpt-4.1``)."""
    if not model:
        return "unknown"
    provider = model.partition(":")[0] if ":" in model else model
    return _PROVIDERS.get(provider, provider)


@dataclass(slots=True)
class SpanData:
    """One span, in the neutral form :mod:`agentd.telemetry.export` turns into OTLP."""

    trace_id: str
    span_id: str
    parent_id: str | None
    name: str
    kind: SpanKind
    start: float
    end: float
    attributes: dict[str, AttrValue] = field(default_factory=dict)
    status: StatusCode = "UNSET"
    status_message: str = ""


@dataclass(frozen=True, slots=True)
class RunInfo:
    """What the spans of a run need besides its events."""

    run_id: str
    session_id: str
    agent_id: str
    agent_name: str
    session_key: str
    status: str
    created_at: float
    started_at: float | None
    finished_at: float | None
    #: The trace the run belongs to and the span its ``invoke_agent`` span is a child
    #: of (the caller's, or the parent run's), resolved by the caller.
    trace_id: str
    parent_span_id: str | None = None
    tenant: str | None = None


def _cut(value: str) -> str:
    return value if len(value) <= MAX_ATTRIBUTE_CHARS else \
        value[:MAX_ATTRIBUTE_CHARS] + "…"


def _usage(usage: Mapping[str, Any] | None, attrs: dict[str, AttrValue]) -> None:
    if not usage:
        return
    for key, name in (("input_tokens", "gen_ai.usage.input_tokens"),
                      ("output_tokens", "gen_ai.usage.output_tokens"),
                      ("cached_tokens", "gen_ai.usage.cache_read.input_tokens"),
                      ("cache_write_tokens", "gen_ai.usage.cache_creation.input_tokens")):
        value = usage.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            attrs[name] = value
    cost = usage.get("cost_usd")
    if isinstance(cost, int | float) and not isinstance(cost, bool):
        attrs["agentd.usage.cost_usd"] = float(cost)


def _number(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _kernel(data: Mapping[str, Any], attrs: dict[str, AttrValue]) -> None:
    """What the kernel recorded about a model call: time to first chunk, queue, retries,
    fallback."""
    ttfc = _number(data.get("ttfc_ms"))
    if ttfc is not None:
        attrs["gen_ai.response.time_to_first_chunk"] = round(ttfc / 1000, 6)
    queue = data.get("queue")
    if isinstance(queue, Mapping):
        wait = _number(queue.get("wait_ms"))
        if wait is not None:
            attrs["agentd.queue.wait_ms"] = wait
        for key in ("lane", "class"):
            if isinstance(queue.get(key), str):
                attrs[f"agentd.queue.{key}"] = queue[key]
    attempts = data.get("attempts")
    if isinstance(attempts, list) and attempts:
        attrs["agentd.retries"] = len(attempts)
    if data.get("fallback") is True:
        attrs["agentd.fallback"] = True


class _Builder:
    """The spans of one run, from its events in order."""

    def __init__(self, run: RunInfo, *, capture_content: bool, legacy: bool,
                 redact: Callable[[str], str] | None = None) -> None:
        self.run = run
        self.capture = capture_content
        self.redact = redact
        self.legacy = legacy
        self.root = span_id(run.run_id, "run")
        self.spans: list[SpanData] = []
        self.tools: dict[str, SpanData] = {}
        #: Spans under a tool's and timed as it is (a remote agent's call, a memory
        #: operation), by call id.
        self.remote: dict[str, SpanData] = {}
        self.recalls: set[str] = set()
        self.last_at: float | None = None
        self.steps = 0
        self.model: str | None = None
        self.input_tokens = 0
        self.output_tokens = 0
        self.cost = 0.0
        self.user_text: str | None = None
        self.output: str | None = None
        self.error: tuple[str, str] | None = None
        #: A team's pattern, when the run is a team's (``invoke_workflow``).
        self.workflow: str | None = None

    def _shown(self, text: str) -> str:
        """Content put on a span (``capture_content``): redacted as the logs are,
        then cut."""
        return _cut(self.redact(text) if self.redact is not None else text)

    def _common(self, operation: str) -> dict[str, AttrValue]:
        return {"gen_ai.operation.name": operation,
                "gen_ai.conversation.id": self.run.session_id,
                "gen_ai.agent.id": self.run.agent_id,
                "gen_ai.agent.name": self.run.agent_name}

    def event(self, kind: str, data: Mapping[str, Any], at: float) -> None:
        handler = _HANDLERS.get(kind)
        if handler is not None:
            handler(self, data, at)
        if kind not in ("message.user",):
            self.last_at = at

    def message_user(self, data: Mapping[str, Any], at: float) -> None:
        if self.user_text is None and isinstance(data.get("content"), str):
            self.user_text = data["content"]

    def run_started(self, data: Mapping[str, Any], at: float) -> None:
        self.last_at = at

    def assistant(self, data: Mapping[str, Any], at: float) -> None:
        model = data.get("model") if isinstance(data.get("model"), str) else None
        if model is not None and model.startswith("team:"):
            # A team's run called no model: its answer closes the workflow.
            self.workflow = model.partition(":")[2] or "team"
            text = data.get("text")
            self.output = text if isinstance(text, str) else self.output
            return
        self.model = model or self.model
        duration = _number(data.get("duration_ms"))
        if duration is not None and 0 <= duration < 1e10:
            start = at - duration / 1000
        else:
            start = self.last_at if self.last_at is not None else at
        step = data.get("step")
        self.steps += 1
        index = step if isinstance(step, int) and not isinstance(step, bool) else self.steps
        name_model = model.partition(":")[2] or model if model else "unknown"
        attrs = self._common("chat")
        attrs["gen_ai.provider.name"] = provider_name(model)
        if self.legacy:
            attrs["gen_ai.system"] = provider_name(model)
        attrs["gen_ai.request.model"] = name_model
        attrs["gen_ai.response.model"] = name_model
        reason = data.get("finish_reason")
        if isinstance(reason, str) and reason:
            attrs["gen_ai.response.finish_reasons"] = [reason]
        self._usage(data.get("usage"), attrs)
        _kernel(data, attrs)
        recalled = data.get("recalled")
        if isinstance(recalled, Mapping):
            self._retrieval(recalled, min(start, at))
        self._content(data, attrs)
        self.spans.append(SpanData(
            trace_id=self.run.trace_id, span_id=span_id(self.run.run_id, f"chat:{index}"),
            parent_id=self.root, name=f"chat {name_model}", kind="CLIENT",
            start=min(start, at), end=at, attributes=attrs))

    def _usage(self, usage: object, attrs: dict[str, AttrValue]) -> None:
        """A model call's usage on its span, and added to the run's."""
        if not isinstance(usage, Mapping):
            return
        _usage(usage, attrs)
        self.input_tokens += _count(usage.get("input_tokens"))
        self.output_tokens += _count(usage.get("output_tokens"))
        self.cost += _number(usage.get("cost_usd")) or 0.0

    def _content(self, data: Mapping[str, Any], attrs: dict[str, AttrValue]) -> None:
        """The calls a step asked for, its text (kept as the run's answer when it is
        the last), and with content capture the prompt and the text on its span."""
        calls = data.get("tool_calls")
        if isinstance(calls, list) and calls:
            attrs["agentd.tool_calls"] = len(calls)
        text = data.get("text")
        if self.capture and isinstance(text, str):
            attrs["gen_ai.output.messages"] = self._shown(text)
        if self.capture and self.steps == 1 and self.user_text is not None:
            attrs["gen_ai.input.messages"] = self._shown(self.user_text)
        if isinstance(text, str) and not calls:
            self.output = text

    def _retrieval(self, recalled: Mapping[str, Any], before: float) -> None:
        """Auto-recall's memory search before a model call: a ``retrieval`` span, once
        per search (the steps after it show the same recall)."""
        query = recalled.get("query")
        key = query if isinstance(query, str) else ""
        if key in self.recalls:
            return
        self.recalls.add(key)
        attrs = self._common("retrieval")
        attrs["gen_ai.data_source.id"] = "memory"
        entries = recalled.get("entries")
        attrs["agentd.memory.entries"] = len(entries) if isinstance(entries, list) else 0
        attrs["agentd.memory.tokens"] = _count(recalled.get("tokens"))
        if self.capture and key:
            attrs["gen_ai.retrieval.query.text"] = self._shown(key)
        duration = _number(recalled.get("duration_ms"))
        start = before - duration / 1000 if duration is not None and 0 <= duration < 1e10 \
            else before
        span = SpanData(
            trace_id=self.run.trace_id,
            span_id=span_id(self.run.run_id, f"recall:{len(self.recalls)}"),
            parent_id=self.root, name="retrieval memory", kind="INTERNAL",
            start=start, end=before, attributes=attrs)
        if isinstance(recalled.get("error"), str):
            span.status, span.status_message = "ERROR", _cut(recalled["error"])
            attrs["error.type"] = "search_failed"
        self.spans.append(span)

    def tool_started(self, data: Mapping[str, Any], at: float) -> None:
        call = data.get("call_id")
        name = data.get("name")
        if not isinstance(call, str) or not isinstance(name, str):
            return
        attrs = self._common("execute_tool")
        attrs["gen_ai.tool.name"] = name
        attrs["gen_ai.tool.call.id"] = call
        attrs["gen_ai.tool.type"] = "function"
        policy = data.get("policy")
        if isinstance(policy, Mapping) and isinstance(policy.get("action"), str):
            attrs["agentd.policy.action"] = policy["action"]
            if isinstance(policy.get("rule"), str):
                attrs["agentd.policy.rule"] = _cut(policy["rule"])
        if self.capture and isinstance(data.get("arguments"), Mapping):
            attrs["gen_ai.tool.call.arguments"] = self._shown(
                orjson.dumps(data["arguments"], default=str).decode())
        span = SpanData(
            trace_id=self.run.trace_id, span_id=span_id(self.run.run_id, f"tool:{call}"),
            parent_id=self.root, name=f"execute_tool {name}", kind="INTERNAL",
            start=at, end=at, attributes=attrs)
        self.tools[call] = span
        self.spans.append(span)
        if name == "a2a_call":
            self._remote_agent(span, call, data.get("arguments"))
        elif name in _MEMORY_OPERATIONS:
            self._memory(span, call, name, data.get("arguments"))

    def _memory(self, tool: SpanData, call: str, name: str, arguments: object) -> None:
        """A memory tool's operation on the agent's memory: a ``search_memory`` /
        ``create_memory`` / ``update_memory`` / ``delete_memory`` span under the tool's
        (the GenAI memory conventions), timed as the tool is."""
        operation, store = _MEMORY_OPERATIONS[name]
        args = arguments if isinstance(arguments, Mapping) else {}
        attrs = self._common(operation)
        attrs["gen_ai.memory.store.id"] = store
        record = args.get("entry_id") if store == "entries" else args.get("label")
        if isinstance(record, str) and record:
            attrs["gen_ai.memory.record.id"] = _cut(record)
        if operation != "search_memory":
            attrs["gen_ai.memory.record.count"] = 1
        elif self.capture and isinstance(args.get("query"), str):
            attrs["gen_ai.memory.query.text"] = self._shown(args["query"])
        self._under_tool(tool, call, f"memory:{call}", f"{operation} {store}", "INTERNAL",
                         attrs)

    def _remote_agent(self, tool: SpanData, call: str, arguments: object) -> None:
        """A call to another A2A agent: an ``invoke_agent`` CLIENT span under the tool's,
        whose id the call sent as its ``traceparent`` (the remote agent's spans are its
        children)."""
        attrs = self._common("invoke_agent")
        for key in ("gen_ai.agent.id", "gen_ai.agent.name"):
            attrs.pop(key, None)
        url = arguments.get("url") if isinstance(arguments, Mapping) else None
        try:
            host = urlsplit(url).hostname if isinstance(url, str) else None
        except ValueError:  # (a malformed URL the call refused)
            host = None
        if host:
            attrs["server.address"] = _cut(host)
        self._under_tool(tool, call, f"a2a:{call}", f"invoke_agent {host or 'remote'}",
                         "CLIENT", attrs)

    def _under_tool(self, tool: SpanData, call: str, place: str, name: str,
                    kind: SpanKind, attrs: dict[str, AttrValue]) -> None:
        """A span under a tool call's, timed as it is (set again when it finishes)."""
        span = SpanData(
            trace_id=self.run.trace_id, span_id=span_id(self.run.run_id, place),
            parent_id=tool.span_id, name=name, kind=kind, start=tool.start, end=tool.end,
            attributes=attrs)
        self.remote[call] = span
        self.spans.append(span)

    def tool_finished(self, data: Mapping[str, Any], at: float) -> None:
        call = data.get("call_id")
        if not isinstance(call, str):
            return
        span = self.tools.pop(call, None)
        if span is None:  # (finished without a start: a denied or skipped call)
            self.tool_started({**data, "arguments": {}}, at)
            span = self.tools.pop(call, None)
            if span is None:
                return
        duration = data.get("duration_ms")
        if isinstance(duration, int | float) and not isinstance(duration, bool) \
                and 0 <= duration < 1e10:
            span.start = min(span.start, at - duration / 1000)
            span.attributes["agentd.tool.duration_ms"] = float(duration)
        span.end = max(span.start, at)
        remote = self.remote.pop(call, None)
        if remote is not None:
            remote.start, remote.end = span.start, span.end
            if data.get("is_error") is True:
                remote.status, remote.attributes["error.type"] = "ERROR", "tool_error"
        policy = data.get("policy")
        if isinstance(policy, Mapping) and isinstance(policy.get("action"), str):
            span.attributes["agentd.policy.action"] = policy["action"]
        if data.get("denied") is True:
            span.attributes["agentd.tool.denied"] = True
            span.status, span.status_message = "ERROR", "denied by policy"
            span.attributes["error.type"] = "denied"
        elif data.get("skipped") is True:
            span.attributes["agentd.tool.skipped"] = True
        elif data.get("is_error") is True:
            span.status, span.status_message = "ERROR", "tool error"
            span.attributes["error.type"] = "tool_error"
        sandbox = data.get("sandbox")
        if isinstance(sandbox, Mapping) and isinstance(sandbox.get("backend"), str):
            span.attributes["agentd.sandbox.backend"] = _cut(sandbox["backend"])
            if isinstance(sandbox.get("killed"), str):
                span.attributes["agentd.sandbox.killed"] = _cut(sandbox["killed"])
        if self.capture and isinstance(data.get("output"), str):
            span.attributes["gen_ai.tool.call.result"] = self._shown(data["output"])

    def ended(self, kind: str, data: Mapping[str, Any], at: float) -> None:
        if kind == "run.failed":
            error = data.get("error")
            if isinstance(error, Mapping):
                code = error.get("code")
                message = error.get("message")
                self.error = (code if isinstance(code, str) else "error",
                              message if isinstance(message, str) else "")
            else:
                self.error = ("error", "")
        elif kind == "run.cancelled":
            self.error = ("cancelled", "cancelled")
        elif kind == "run.interrupted":
            self.error = ("interrupted", "interrupted")

    def finish(self, end_at: float | None) -> list[SpanData]:
        run = self.run
        for span in [*self.tools.values(), *self.remote.values()]:
            # Started, never finished: the run ended (or the daemon stopped) first.
            span.end = max(span.start, end_at or span.start)
            span.status, span.status_message = "ERROR", "not finished"
            span.attributes["error.type"] = "unfinished"
        attrs = self._common("invoke_workflow" if self.workflow else "invoke_agent")
        if self.workflow:
            attrs["gen_ai.workflow.name"] = run.agent_name
            attrs["agentd.team.pattern"] = self.workflow
        if self.model:
            attrs["gen_ai.provider.name"] = provider_name(self.model)
            attrs["gen_ai.request.model"] = self.model.partition(":")[2] or self.model
        if self.legacy and self.model:
            attrs["gen_ai.system"] = provider_name(self.model)
        attrs["gen_ai.usage.input_tokens"] = self.input_tokens
        attrs["gen_ai.usage.output_tokens"] = self.output_tokens
        if self.cost:
            attrs["agentd.usage.cost_usd"] = round(self.cost, 9)
        attrs["agentd.run.id"] = run.run_id
        attrs["agentd.run.status"] = run.status
        attrs["agentd.run.steps"] = self.steps
        attrs["agentd.session.key"] = _cut(run.session_key)
        if run.tenant:
            attrs["agentd.tenant"] = run.tenant
        if run.started_at is not None:
            attrs["agentd.queue.wait_ms"] = round(
                max(0.0, run.started_at - run.created_at) * 1000, 3)
        if self.capture and self.user_text is not None:
            attrs["gen_ai.input.messages"] = self._shown(self.user_text)
        if self.capture and self.output is not None:
            attrs["gen_ai.output.messages"] = self._shown(self.output)
        status: StatusCode = "OK" if run.status == "completed" else "UNSET"
        message = ""
        if self.error is not None:
            status, message = "ERROR", _cut(self.error[1])
            attrs["error.type"] = self.error[0]
        start = run.created_at
        end = end_at if end_at is not None else (run.finished_at or self.last_at or start)
        root = SpanData(
            trace_id=run.trace_id, span_id=self.root, parent_id=run.parent_span_id,
            name=f"{'invoke_workflow' if self.workflow else 'invoke_agent'} {run.agent_name}",
            kind="INTERNAL", start=start,
            end=max(start, end), attributes=attrs, status=status, status_message=message)
        for span in self.spans:
            span.start = max(span.start, start)
            span.end = max(span.end, span.start)
        return [root, *self.spans]


_HANDLERS: dict[str, Any] = {
    "message.user": _Builder.message_user,
    "run.started": _Builder.run_started,
    "message.assistant": _Builder.assistant,
    "tool.started": _Builder.tool_started,
    "tool.finished": _Builder.tool_finished,
}
_END_KINDS = ("run.completed", "run.failed", "run.cancelled", "run.interrupted")


def build_run_spans(run: RunInfo, events: Sequence[tuple[str, Mapping[str, Any], float]],
                    *, capture_content: bool = False, legacy: bool = False,
                    redact: Callable[[str], str] | None = None) -> list[SpanData]:
    """The spans of ``run`` from its events (``(kind, data, at)``, in log order): its
    ``invoke_agent`` span first, then a ``chat`` span per model call and an
    ``execute_tool`` span per tool call, children of it. ``capture_content``: the
    prompt, answers and tool input and output as attributes (passed through
    ``redact``, then cut to :data:`MAX_ATTRIBUTE_CHARS`); ``legacy``: also the
    deprecated ``gen_ai.system``."""
    builder = _Builder(run, capture_content=capture_content, legacy=legacy, redact=redact)
    end_at: float | None = None
    for kind, data, at in events:
        if kind in _END_KINDS:
            builder.ended(kind, data, at)
            end_at = at
            builder.last_at = at
            continue
        builder.event(kind, data, at)
    return builder.finish(end_at)
