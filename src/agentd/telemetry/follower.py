"""Traces from the log: the spans of every finished run, exported over OTLP.

:class:`Traces` is built by the composition root. With traces off it does nothing:
no hook on the bus, no task, no import of the OpenTelemetry SDK; it still builds
traces on demand (``agentd trace``, ``GET /v1/runs/{id}/trace``), from the log.

With traces on, the bus's run-end hook hands it the id of each run that ends on this
node (a set add: the turn pays nothing else), and a task of its own hands those ids in
batches to the export worker (:mod:`agentd.telemetry.worker`), a process of its own
that reads the runs' events from the database, builds their spans
(:mod:`agentd.telemetry.spans`) and exports them with the official exporter; the task
then records them as exported. The serving process never imports the OpenTelemetry
SDK. A receiver that is down or refuses, or a worker that dies, is retried with a
growing pause (1 s to 60 s) while run ids wait in memory (at most :data:`_MAX_PENDING`:
past it they are found again in the store); the state shows in ``/health``. After a
crash, the start-up scan finds the finished runs that were not exported (those in
flight at the crash are exported when they end: their spans come from the log, not
from memory).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from agentd.clock import SYSTEM, Clock
from agentd.config import TelemetryConfig
from agentd.errors import InvalidInput
from agentd.store.records import EventRecord
from agentd.telemetry.export import otlp_json
from agentd.telemetry.source import SpanSource
from agentd.telemetry.spans import SpanData
from agentd.telemetry.worker import ExportWorker, WorkerError

if TYPE_CHECKING:
    from agentd.runtime.bus import EventBus
    from agentd.store import Store, StoreOptions

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
                 clock: Clock = SYSTEM, redact: Callable[[str], str] | None = None,
                 database_url: str = "", store_options: StoreOptions | None = None,
                 secrets: frozenset[str] = frozenset()) -> None:
        """``database_url`` and ``store_options``: the store's, for the export worker
        to open it too; ``secrets``: what content capture redacts there (``redact``
        does it here, for traces on demand)."""
        self.store = store
        self.bus = bus
        self.settings = settings
        self.clock = clock
        self.source = SpanSource(store, capture_content=settings.capture_content,
                                 legacy=settings.legacy, redact=redact)
        self._worker_config: dict[str, Any] = {
            "database_url": database_url,
            "store": {"synchronous": store_options.synchronous if store_options else None},
            "traces": asdict(settings), "secrets": sorted(secrets)}
        self._pending: dict[str, None] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._worker: ExportWorker | None = None
        self._sent_at = float("-inf")
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
        self._worker = ExportWorker(self._worker_config)
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
        if self._worker is not None:
            await self._worker.close(timeout_s=3.0)
            self._worker = None

    def status(self) -> dict[str, Any]:
        """For ``/health``: whether traces are on, and how exporting goes."""
        if not self.on:
            return {"exporter": "none"}
        worker = self._worker
        return {"exporter": "otlp", "protocol": self.settings.protocol,
                "endpoint": self.settings.endpoint, "exported_runs": self.exported,
                "pending_runs": len(self._pending), "overflowed_runs": self.overflowed,
                "failures": self.failures,
                "last_error": self.last_error, "retry_in_s": self.retry_in_s,
                "worker_pid": worker.pid if worker else None,
                "worker_starts": worker.starts if worker else 0}

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
        worker = self._worker
        assert worker is not None
        try:
            reply = await worker.export(ids)
        except WorkerError as exc:
            return self._failed(str(exc)[:300])
        for run_id in reply.dropped:
            self._pending.pop(run_id, None)
        if reply.error is not None:
            return self._failed(reply.error)
        self.last_error = None
        if reply.runs:
            await self.store.mark_exported(reply.runs)
        for run_id, _ in reply.runs:
            self._pending.pop(run_id, None)
        self.exported += len(reply.runs)
        return True

    def _failed(self, error: str) -> bool:
        self.failures += 1
        self.last_error = error
        log.warning("traces: export to %s failed (%s); retrying", self.settings.endpoint,
                    error)
        return False

    # -- traces on demand --------------------------------------------------------------

    async def run_trace(self, run_id: str) -> list[SpanData]:
        """The spans of one run (finished or not), from the log."""
        return await self.source.run_spans(run_id)

    async def session_trace(self, session_id: str) -> list[SpanData]:
        """The spans of a session's runs (its first thousand)."""
        return await self.source.session_spans(session_id)

    def as_otlp_json(self, spans: list[SpanData]) -> dict[str, Any]:
        return otlp_json(spans, service_name=self.settings.service_name)
