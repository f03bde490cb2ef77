"""Spans from the log: what a run's trace is, read from the store and built by
:mod:`agentd.telemetry.spans`.

Used in two places: by the daemon, for traces on demand (``agentd trace``,
``GET /v1/runs/{id}/trace``), and by the export worker (:mod:`agentd.telemetry.worker`),
a process of its own that reads finished runs from the same database and exports them.
Reads only: it never writes to the store.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from agentd.store.records import EventRecord, RunRecord
from agentd.telemetry.spans import (
    RunInfo,
    SpanData,
    build_run_spans,
    default_trace_id,
    parse_traceparent,
    span_id,
)

if TYPE_CHECKING:
    from agentd.store import Store

__all__ = ["Batch", "SpanSource"]

#: Deepest chain of parent runs followed to find a trace (subtasks nest a few deep).
_MAX_DEPTH = 32
_MAX_SESSION_RUNS = 1000
#: Trace ids of runs kept (a subtask's parent is usually a recent run).
_TRACE_CACHE = 10_000


@dataclass(slots=True)
class Batch:
    """What a batch of run ids gave: the spans to export, the runs they are of (id and
    creation time, for the export record) and the ids with nothing to export (gone
    with their session, or not finished: they come again when they end)."""

    spans: list[SpanData] = field(default_factory=list)
    runs: list[tuple[str, float]] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)


class SpanSource:
    """The spans of runs, from the log."""

    def __init__(self, store: Store, *, capture_content: bool = False, legacy: bool = True,
                 redact: Callable[[str], str] | None = None) -> None:
        self.store = store
        self.capture_content = capture_content
        self.legacy = legacy
        #: What content capture puts on spans goes through it (the logs' redaction).
        self.redact = redact
        self._trace_of: OrderedDict[str, tuple[str, str | None]] = OrderedDict()

    async def batch(self, ids: Sequence[str], *,
                    on_error: Callable[[str, BaseException], None] | None = None) -> Batch:
        """The spans of the finished runs among ``ids``, read in two queries. A run whose
        spans cannot be built is dropped (``on_error`` hears of it)."""
        out = Batch()
        found = await self.store.runs_for_traces(ids)
        for run_id in ids:
            if run_id not in found or not found[run_id][0].terminal:
                out.dropped.append(run_id)
                continue
            run, agent_name, key, events = found[run_id]
            try:
                out.spans.extend(await self.build(run, agent_name, key, events))
            except Exception as exc:
                out.dropped.append(run_id)
                if on_error is not None:
                    on_error(run_id, exc)
                continue
            out.runs.append((run.id, run.created_at))
        return out

    async def _trace(self, run: RunRecord, depth: int = 0,
                     events: list[EventRecord] | None = None) -> tuple[str, str | None]:
        """The trace id of ``run`` and the span its ``invoke_agent`` span is a child
        of: the caller's (a ``traceparent`` it was sent with), the parent run's (a
        subtask or agent call), or none (a trace of its own). ``events``: the run's,
        when the caller has them (its first is the message that started it)."""
        known = self._trace_of.get(run.id)
        if known is not None:
            return known
        found: tuple[str, str | None] = (default_trace_id(run.id), None)
        if events is not None:
            starter = next((e for e in events if e.kind == "message.user"), None)
        else:
            starter = await self.store.run_starter(run)
        data = starter.data if starter is not None else {}
        parent = parse_traceparent(data.get("traceparent"))
        parent_run = data.get("parent_run")
        if parent is not None:
            found = (parent.trace_id, parent.span_id)
        elif isinstance(parent_run, str) and depth < _MAX_DEPTH:
            try:
                parent_record = await self.store.get_run(parent_run)
            except Exception:
                parent_record = None
            if parent_record is not None:
                trace, _ = await self._trace(parent_record, depth + 1)
                found = (trace, span_id(parent_run, "run"))
        self._trace_of[run.id] = found
        if len(self._trace_of) > _TRACE_CACHE:
            self._trace_of.popitem(last=False)
        return found

    async def build(self, run: RunRecord, agent_name: str, key: str,
                    events: list[EventRecord]) -> list[SpanData]:
        trace, parent = await self._trace(run, events=events)
        info = RunInfo(run_id=run.id, session_id=run.session_id, agent_id=run.agent_id,
                       agent_name=agent_name, session_key=key, status=run.status,
                       created_at=run.created_at, started_at=run.started_at,
                       finished_at=run.finished_at, trace_id=trace, parent_span_id=parent)
        return build_run_spans(info, [(e.kind, e.data, e.at) for e in events],
                               capture_content=self.capture_content,
                               legacy=self.legacy, redact=self.redact)

    async def run_spans(self, run_id: str) -> list[SpanData]:
        """The spans of one run (finished or not)."""
        run, agent_name, key = await self.store.run_context(run_id)
        events = await self.store.run_events(run)
        return await self.build(run, agent_name, key, events)

    async def session_spans(self, session_id: str) -> list[SpanData]:
        """The spans of a session's runs (its first :data:`_MAX_SESSION_RUNS`)."""
        spans: list[SpanData] = []
        for run_id in await self.store.session_run_ids(session_id, _MAX_SESSION_RUNS):
            spans.extend(await self.run_spans(run_id))
        return spans
