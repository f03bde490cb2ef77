"""Traces from the log: the spans of every finished run, exported over OTLP.

:class:`Traces` is built by the composition root. With traces off it does nothing:
no hook on the bus, no task, no import of the OpenTelemetry SDK; it still builds
traces on demand (``agentd trace``, ``GET /v1/runs/{id}/trace``), from the log.

With traces on, the bus's run-end hook hands it the id of each run that ends on this
node (a set add: the turn pays nothing else), and a task of its own reads those runs'
events, builds their spans (:mod:`agentd.telemetry.spans`) and exports them in
batches on a thread with the official exporter, then records them as exported. A
receiver that is down or refuses is retried with a growing pause (1 s to 60 s) while
runs wait in memory; the state shows in ``/health``. After a crash, the start-up scan
finds the finished runs that were not exported (those in flight at the crash are
exported when they end: their spans come from the log, not from memory).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from agentd.clock import SYSTEM, Clock
from agentd.config import TelemetryConfig
from agentd.errors import InvalidInput
from agentd.store.records import EventRecord, RunRecord
from agentd.telemetry.export import OtlpSender, otlp_json
from agentd.telemetry.spans import (
    RunInfo,
    SpanData,
    build_run_spans,
    default_trace_id,
    parse_traceparent,
    span_id,
)

if TYPE_CHECKING:
    from agentd.runtime.bus import EventBus
    from agentd.store import Store

__all__ = ["TraceSettings", "Traces", "resolve"]

log = logging.getLogger(__name__)

_BATCH_RUNS = 64
#: Runs waiting for export kept in memory (by id); past it a receiver that is down
#: costs no more memory: the runs are found again in the store once it is back.
_MAX_PENDING = 10_000
#: How long runs that end soon after an export wait to share the next one: a request
#: costs the daemon ~0.7 ms of CPU however few spans it carries, and at low rates each
#: run ended made its own (docs/benchmarks.md, "Issue 32: what traces cost a turn").
_LINGER_S = 0.5
_BACKOFF_S = (1.0, 2.0, 5.0, 15.0, 30.0, 60.0)
_WATERMARK_EVERY_S = 30.0
#: Deepest chain of parent runs followed to find a trace (subtasks nest a few deep).
_MAX_DEPTH = 32
_MAX_SESSION_RUNS = 1000


@dataclass(frozen=True, slots=True)
class TraceSettings:
    """Traces as configured: ``[telemetry]`` keys first, then the standard variables."""

    exporter: str
    endpoint: str
    protocol: str
    service_name: str
    capture_content: bool
    #: Also the deprecated ``gen_ai.system`` (``OTEL_SEMCONV_STABILITY_OPT_IN`` does
    #: not ask for ``gen_ai_latest_experimental``).
    legacy: bool


def resolve(config: TelemetryConfig, env: Mapping[str, str]) -> TraceSettings:
    """The trace settings from ``[telemetry]`` and the OpenTelemetry variables in
    ``env`` (read once, at start)."""
    exporter = config.traces_exporter
    if exporter is None:
        names = {p.strip().lower() for p in env.get("OTEL_TRACES_EXPORTER", "").split(",")}
        exporter = "otlp" if "otlp" in names else "none"
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true" \
            and config.traces_exporter is None:
        exporter = "none"
    endpoint = (config.otlp_endpoint or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
                or env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or "")
    protocol = (config.otlp_protocol or env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
                or env.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "http/protobuf")
    if protocol not in ("http/protobuf", "grpc"):
        raise InvalidInput(f"OTLP protocol {protocol!r} is not supported; use "
                           "http/protobuf or grpc", field="telemetry.otlp_protocol")
    if not endpoint:
        endpoint = "http://localhost:4317" if protocol == "grpc" else "http://localhost:4318"
    service = config.service_name or env.get("OTEL_SERVICE_NAME") or "agentd"
    opt_in = {p.strip() for p in env.get("OTEL_SEMCONV_STABILITY_OPT_IN", "").split(",")}
    return TraceSettings(exporter=exporter, endpoint=endpoint, protocol=protocol,
                         service_name=service, capture_content=config.capture_content,
                         legacy="gen_ai_latest_experimental" not in opt_in)


class Traces:
    """Spans of runs, from the log: exported as runs end (when on), and on demand."""

    def __init__(self, store: Store, bus: EventBus, settings: TraceSettings, *,
                 clock: Clock = SYSTEM, redact: Callable[[str], str] | None = None) -> None:
        self.store = store
        self.bus = bus
        self.settings = settings
        self.clock = clock
        #: What content capture puts on spans goes through it (the logs' redaction).
        self.redact = redact
        self._pending: dict[str, None] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._sender: OtlpSender | None = None
        self._sent_at = float("-inf")
        self._trace_of: OrderedDict[str, tuple[str, str | None]] = OrderedDict()
        self.exported = 0
        self.failures = 0
        #: Runs that ended while the memory's queue was full (found in the store).
        self.overflowed = 0
        self._watermark = 0.0
        self.last_error: str | None = None
        self.retry_in_s: float | None = None

    @property
    def on(self) -> bool:
        return self.settings.exporter == "otlp"

    def start(self) -> None:
        if not self.on or self._task is not None:
            return
        self._sender = OtlpSender(self.settings.endpoint, self.settings.protocol,
                                  service_name=self.settings.service_name)
        self.bus.run_end_hooks.append(self._ended)
        self._task = asyncio.get_running_loop().create_task(self._run(), name="traces")
        log.info("traces: exporting spans over OTLP (%s) to %s", self.settings.protocol,
                 self.settings.endpoint)

    async def stop(self, flush_s: float = 5.0) -> None:
        """Stop following; the runs that ended meanwhile (those the shutdown
        interrupted among them) get one last try, of at most ``flush_s``."""
        if self._task is None:
            return
        with contextlib.suppress(ValueError):
            self.bus.run_end_hooks.remove(self._ended)
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        if self._pending:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._export_ids(list(self._pending)[:_BATCH_RUNS * 4]),
                                       flush_s)
        self._task = None
        if self._sender is not None:
            await asyncio.to_thread(self._sender.close)
            self._sender = None

    def status(self) -> dict[str, Any]:
        """For ``/health``: whether traces are on, and how exporting goes."""
        if not self.on:
            return {"exporter": "none"}
        return {"exporter": "otlp", "protocol": self.settings.protocol,
                "endpoint": self.settings.endpoint, "exported_runs": self.exported,
                "pending_runs": len(self._pending), "overflowed_runs": self.overflowed,
                "failures": self.failures,
                "last_error": self.last_error, "retry_in_s": self.retry_in_s}

    # -- the follower ------------------------------------------------------------------

    def _ended(self, event: EventRecord) -> None:
        if event.run_id is not None:
            if len(self._pending) < _MAX_PENDING or event.run_id in self._pending:
                self._pending[event.run_id] = None
            else:
                self.overflowed += 1  # read back from the store once caught up
            self._wake.set()

    async def _run(self) -> None:
        self._watermark = await self.store.trace_watermark()
        await self._catch_up()
        moved = self.clock.monotonic()
        failures = 0
        while True:
            if not self._pending and self.overflowed:
                # Caught up with what memory held: the runs it could not hold are
                # the store's unexported ones.
                self.overflowed = 0
                await self._catch_up()
            if not self._pending:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), _WATERMARK_EVERY_S)
            if 0 < len(self._pending) < _BATCH_RUNS:
                # The first run after a quiet spell goes at once; under load, the
                # runs that end within _LINGER_S of an export share the next one.
                elapsed = self.clock.monotonic() - self._sent_at
                if elapsed < _LINGER_S:
                    await self.clock.sleep(_LINGER_S - elapsed)
            ids = list(self._pending)[:_BATCH_RUNS]
            if ids:
                self._sent_at = self.clock.monotonic()
                ok = await self._export_ids(ids)
                if ok:
                    failures = 0
                    self.retry_in_s = None
                else:
                    pause = _BACKOFF_S[min(failures, len(_BACKOFF_S) - 1)]
                    failures += 1
                    self.retry_in_s = pause
                    await self.clock.sleep(pause)
                    continue
            if self.clock.monotonic() - moved >= _WATERMARK_EVERY_S:
                moved = self.clock.monotonic()
                try:
                    self._watermark = await self.store.advance_trace_watermark(
                        self.clock.time() - 60.0)
                except Exception:
                    log.exception("traces: could not move the watermark")

    async def _catch_up(self) -> None:
        """Queue the finished runs after the watermark that were not exported (those
        a crash left, or that ended while the queue was full), as many as the queue
        holds; if more wait, again once these are out."""
        room = _MAX_PENDING - len(self._pending)
        try:
            runs = await self.store.unexported_runs(self._watermark, limit=room)
        except Exception:
            log.exception("traces: could not read the runs to export")
            return
        for run in runs:
            self._pending[run.id] = None
        if room > 0 and len(runs) == room:
            self.overflowed = max(self.overflowed, 1)

    async def _export_ids(self, ids: list[str]) -> bool:
        runs: list[RunRecord] = []
        spans: list[SpanData] = []
        try:
            found = await self.store.runs_for_traces(ids)
        except Exception:
            log.exception("traces: could not read the runs to export")
            return False
        for run_id in ids:
            if run_id not in found:  # deleted with its session since: nothing to export
                self._pending.pop(run_id, None)
                continue
            run, agent_name, key, events = found[run_id]
            if not run.terminal:
                self._pending.pop(run_id, None)  # (ended event seen early: comes again)
                continue
            try:
                spans.extend(await self._build(run, agent_name, key, events))
            except Exception:
                log.exception("traces: the spans of run %s could not be built", run_id)
                self._pending.pop(run_id, None)
                continue
            runs.append(run)
        if not runs:
            return True
        sender = self._sender
        assert sender is not None
        error: str | None = None
        try:
            if not await asyncio.to_thread(sender.send, spans):
                error = "the receiver did not take the spans"
        except Exception as exc:  # the exporter's own errors: retried like a refusal
            error = f"{type(exc).__name__}: {exc}"[:300]
        if error is not None:
            self.failures += 1
            self.last_error = error
            log.warning("traces: export to %s failed (%s); retrying",
                        self.settings.endpoint, error)
            return False
        self.last_error = None
        await self.store.mark_exported(runs)
        for run in runs:
            self._pending.pop(run.id, None)
        self.exported += len(runs)
        return True

    # -- spans from the log ------------------------------------------------------------

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
        if len(self._trace_of) > 10_000:
            self._trace_of.popitem(last=False)
        return found

    async def _spans_of(self, run_id: str) -> tuple[list[SpanData], RunRecord]:
        run, agent_name, key = await self.store.run_context(run_id)
        events = await self.store.run_events(run)
        return await self._build(run, agent_name, key, events), run

    async def _build(self, run: RunRecord, agent_name: str, key: str,
                     events: list[EventRecord]) -> list[SpanData]:
        trace, parent = await self._trace(run, events=events)
        info = RunInfo(run_id=run.id, session_id=run.session_id, agent_id=run.agent_id,
                       agent_name=agent_name, session_key=key, status=run.status,
                       created_at=run.created_at, started_at=run.started_at,
                       finished_at=run.finished_at, trace_id=trace, parent_span_id=parent)
        return build_run_spans(info, [(e.kind, e.data, e.at) for e in events],
                               capture_content=self.settings.capture_content,
                               legacy=self.settings.legacy, redact=self.redact)

    async def run_trace(self, run_id: str) -> list[SpanData]:
        """The spans of one run (finished or not), from the log."""
        spans, _ = await self._spans_of(run_id)
        return spans

    async def session_trace(self, session_id: str) -> list[SpanData]:
        """The spans of a session's runs (its first :data:`_MAX_SESSION_RUNS`)."""
        spans: list[SpanData] = []
        for run_id in await self.store.session_run_ids(session_id, _MAX_SESSION_RUNS):
            spans.extend(await self.run_trace(run_id))
        return spans

    def as_otlp_json(self, spans: list[SpanData]) -> dict[str, Any]:
        return otlp_json(spans, service_name=self.settings.service_name)
