"""Prometheus metrics: ``GET /metrics`` in Prometheus' text format (docs/operations.md,
"Observability").

Three sources, none of which costs a turn more than a few microseconds:

- **The event log.** A hook of the bus (:attr:`EventBus.event_hooks`) is handed this
  node's committed events as they are published (not other nodes' commits, which
  they count themselves) and turns them into the GenAI histograms (tokens,
  model-call duration and time to first chunk when the events carry them, tool
  duration) and agentd's own counters (runs started and finished by outcome, tool
  calls, lane waits, retries, cost and tokens by tenant and model, schedule
  lateness). Counting is a few attribute additions per event (``_series.py``): no
  queue, no task to wake, no lock. The one thing it may have to read, a session's
  tenant (once per session), is read by a task of its own, and the events that wait
  for it are bounded: what overflows is counted
  (``agentd_metrics_events_dropped_total``), never waited for.
- **The runtime's state, at scrape time.** Runs by state, approvals waiting, agents
  awake and asleep, leases held, lane queues and pauses, breakers, egress
  connections: read from the services when Prometheus asks (:class:`State`), so
  nothing is kept up to date per turn.
- **Two hooks:** the store tells of each commit (``agentd_store_commit_seconds``) and
  :class:`HttpMetrics` counts HTTP requests by route template and status.

Every label is of low cardinality: provider, model, tenant, lane, tool, a state or an
outcome; never a session, run or agent id. Values a user or a model chooses (tool
and model names) are cut to :data:`MAX_LABEL_CHARS` and, past :data:`MAX_VALUES`
distinct values of one label, counted as ``other``.

Each runtime has a registry of its own (tests run many daemons in one process).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import re
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from agentd.events import TERMINAL_KINDS
from agentd.runtime.bus import EventBus
from agentd.sandbox.stats import START_BUCKETS, SandboxStats
from agentd.store.records import AgentChange, EventRecord
from agentd.telemetry._metrics_listen import CONTENT_TYPE as _CONTENT_TYPE
from agentd.telemetry._metrics_listen import Listener, parse_listen
from agentd.telemetry._series import Families

__all__ = ["CONTENT_TYPE", "MAX_LABEL_CHARS", "MAX_VALUES", "ROUTE_KEY", "HttpMetrics",
           "Metrics", "State", "count_request", "parse_listen", "route_label"]

log = logging.getLogger(__name__)

#: The exposition format's media type: text, version 0.0.4, which every Prometheus
#: reads (the names here need none of version 1.0.0's escaping).
CONTENT_TYPE = _CONTENT_TYPE
#: The longest label value kept (longer ones are cut).
MAX_LABEL_CHARS = 120
#: Distinct values one label takes before the rest are counted as ``other``.
MAX_VALUES = 200
#: The scope key where the request layer names the route template of a request it
#: serves itself (the message route, the doors' hot routes).
ROUTE_KEY = "agentd.route"
#: Events waiting for their session's tenant to be read: past it, they are counted as
#: dropped.
_WAITING_MAX = 16_384
#: Sessions whose tenant is remembered.
_TENANTS_KEPT = 10_000

# OpenTelemetry's GenAI semantic conventions' advisory buckets.
_TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304,
                  16777216, 67108864)
_DURATION_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24,
                     20.48, 40.96, 81.92)
_FIRST_CHUNK_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75,
                        1.0, 2.5, 5.0, 10.0)
_WAIT_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_LATENESS_BUCKETS = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)
_COMMIT_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                   0.25, 0.5, 1.0)

_GENAI = ("gen_ai_provider_name", "gen_ai_request_model")
_BREAKER_STATES = ("closed", "half_open", "open")
#: The kernel's counters, as metric names and help.
_KERNEL_COUNTERS = {
    "calls": ("agentd_model_calls", "Model calls made through the kernel."),
    "failed_attempts": ("agentd_model_failed_attempts",
                        "Model call attempts that failed (retried, fallen back or given up)."),
    "retries": ("agentd_model_retries", "Model calls retried after a transient failure."),
    "fallbacks": ("agentd_model_fallbacks", "Model calls answered by a fallback model."),
    "rate_limited": ("agentd_model_rate_limited",
                     "Rate-limit answers (each pauses its scheduler lane)."),
    "stream_resets": ("agentd_model_stream_resets",
                      "Times clients were told to drop a step's partial text."),
    "outages": ("agentd_model_outages", "Runs parked because every model was unavailable."),
}


class _Labels:
    """One label's values: cut to :data:`MAX_LABEL_CHARS`, and ``other`` once
    :data:`MAX_VALUES` distinct ones were seen (a model may name any tool)."""

    __slots__ = ("_seen",)

    def __init__(self) -> None:
        self._seen: dict[str, str] = {}

    def __call__(self, value: object) -> str:
        key = value if isinstance(value, str) else "unknown"
        label = self._seen.get(key)
        if label is not None:
            return label
        if len(self._seen) >= MAX_VALUES:
            return "other"
        label = self._seen[key] = key[:MAX_LABEL_CHARS] or "unknown"
        return label


@dataclass(kw_only=True, slots=True)
class State:
    """What the runtime holds now, read at scrape time (the composition root reads
    it: :func:`agentd.assembly`'s ``make_metrics``)."""

    #: Agents by state and how many are awake on this node (every node's agents).
    agents_by_state: Mapping[str, int]
    awake: int
    #: Active runs by status, every node's (``queued``, ``running``,
    #: ``waiting_approval``).
    runs_by_state: Mapping[str, int]
    #: This node: its id, the runs it drives (each holds a lease) and queues.
    node: str
    runs_here: int
    queued_here: int
    #: ``Kernel.metrics()``: scheduler lanes, breakers, counters.
    kernel: Mapping[str, Any]
    egress_held: int
    egress_max: int
    store_bytes: int | None = None
    version: str = ""
    #: The sandboxes' starts and kills (counted as they happen, read here).
    sandboxes: SandboxStats | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _gauge(name: str, doc: str, value: float, labels: Mapping[str, str] | None = None
           ) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, doc, labels=list(labels or {}))
    family.add_metric(list((labels or {}).values()), value)
    return family


def _sandboxes(stats: SandboxStats) -> Iterator[Metric]:
    starts = HistogramMetricFamily(
        "agentd_sandbox_start_seconds",
        "Time to start a sandbox (a command's, a persistent shell's, an MCP server's), "
        "by backend.", labels=["backend"], unit="seconds")
    for backend, seen in sorted(stats.starts.items()):
        running, buckets = 0, []
        for bound, count in zip((*START_BUCKETS, float("inf")), seen.buckets, strict=True):
            running += count
            buckets.append(("+Inf" if bound == float("inf") else repr(bound), running))
        starts.add_metric([backend], buckets, seen.total_s)
    yield starts
    failed = CounterMetricFamily("agentd_sandbox_start_failures",
                                 "Sandboxes that could not start, by backend.",
                                 labels=["backend"])
    for backend, count in sorted(stats.failed_starts.items()):
        failed.add_metric([backend], count)
    yield failed
    kills = CounterMetricFamily(
        "agentd_sandbox_kills", "Sandboxed commands killed at a limit, by backend and "
        "reason (wall_time, cpu_time, memory, output, file_size...).",
        labels=["backend", "reason"])
    for (backend, reason), count in sorted(stats.kills.items()):
        kills.add_metric([backend, reason], count)
    yield kills


class _StateCollector:
    """The gauges and counters read from :class:`State` at scrape time."""

    def __init__(self) -> None:
        self.state: State | None = None
        self.lanes = _Labels()
        self.providers = _Labels()

    def collect(self) -> Iterator[Metric]:
        state = self.state
        if state is None:
            return
        info = GaugeMetricFamily("agentd_build_info", "The daemon's version and node.",
                                 labels=["version", "node"])
        info.add_metric([state.version, state.node], 1)
        yield info
        agents = GaugeMetricFamily("agentd_agents", "Agents by state (every node's).",
                                   labels=["state"])
        total = 0
        for name, count in sorted(state.agents_by_state.items()):
            agents.add_metric([name], count)
            total += count
        yield agents
        awake = min(state.awake, total)
        yield _gauge("agentd_agents_awake", "Agents awake on this node.", awake)
        yield _gauge("agentd_agents_asleep", "Agents not awake on this node.",
                     total - awake)
        runs = GaugeMetricFamily("agentd_runs", "Active runs by state (every node's).",
                                 labels=["state"])
        for name, count in sorted(state.runs_by_state.items()):
            runs.add_metric([name], count)
        yield runs
        yield _gauge("agentd_approvals_waiting", "Runs waiting for an approval.",
                     state.runs_by_state.get("waiting_approval", 0))
        yield _gauge("agentd_leases_held", "Runs this node drives, each holding a lease.",
                     state.runs_here, {"node": state.node})
        yield _gauge("agentd_runs_queued_here",
                     "Runs queued on this node behind a session's active run.",
                     state.queued_here)
        yield from self._kernel(state.kernel)
        yield _gauge("agentd_egress_connections",
                     "Egress connections the agents' proxies hold now.", state.egress_held)
        yield _gauge("agentd_egress_connections_max",
                     "The daemon's cap of egress connections.", state.egress_max)
        if state.store_bytes is not None:
            yield _gauge("agentd_store_bytes", "The store's size on disk.",
                         state.store_bytes)
        if state.sandboxes is not None:
            yield from _sandboxes(state.sandboxes)

    def _kernel(self, kernel: Mapping[str, Any]) -> Iterator[Metric]:
        lanes = kernel.get("scheduler", {}).get("lanes", {})
        shapes: dict[str, GaugeMetricFamily | CounterMetricFamily] = {
            "in_flight": GaugeMetricFamily("agentd_lane_in_flight",
                                           "Model calls in flight per scheduler lane.",
                                           labels=["lane"]),
            "queued": GaugeMetricFamily("agentd_lane_queue_depth",
                                        "Model calls queued per scheduler lane.",
                                        labels=["lane"]),
            "paused_for_s": GaugeMetricFamily(
                "agentd_lane_paused_seconds",
                "Seconds left of a lane's rate-limit pause (0: not paused).",
                labels=["lane"]),
            "granted": CounterMetricFamily("agentd_lane_grants",
                                           "Model calls admitted per lane.",
                                           labels=["lane"]),
            "waited": CounterMetricFamily("agentd_lane_waited",
                                          "Model calls admitted per lane after queueing.",
                                          labels=["lane"]),
        }
        for lane, figures in sorted(lanes.items()):
            label = self.lanes(lane)
            for key, family in shapes.items():
                family.add_metric([label], float(figures.get(key, 0)))
        yield from shapes.values()
        breakers = GaugeMetricFamily(
            "agentd_breaker_state",
            "Each provider's circuit breaker: 1 for the state it is in.",
            labels=["gen_ai_provider_name", "state"])
        for key, snapshot in sorted(kernel.get("breakers", {}).items()):
            provider = self.providers(key)
            for state in _BREAKER_STATES:
                breakers.add_metric([provider, state],
                                    1.0 if snapshot.get("state") == state else 0.0)
        yield breakers
        calls = kernel.get("calls", {})
        for key, (name, doc) in _KERNEL_COUNTERS.items():
            yield CounterMetricFamily(name, doc, value=float(calls.get(key, 0)))


def _split(spec: object) -> tuple[str, str]:
    """``provider:model`` as (provider, model); a spec without a provider is both."""
    if not isinstance(spec, str) or not spec:
        return "unknown", "unknown"
    provider, colon, model = spec.partition(":")
    return (provider, model) if colon else (spec, spec)


@dataclass(frozen=True, slots=True)
class _ModelSeries:
    """The series one model's steps move, for one tenant (``labels()`` once)."""

    input: Any
    output: Any
    input_total: Any
    output_total: Any
    cost: Any
    duration: Any
    first_chunk: Any
    retries: Any


class Metrics:
    """The daemon's metrics: a registry of its own, the counting of this node's
    events, the scrape-time state, and the HTTP and store hooks.

    Args:
        bus: The event bus whose events (this node's commits) are counted.
        tenant_of_session: The tenant of a session's agent (None: the session or its
            agent is gone); asked once per session, off the request path.
        state: What the runtime holds now, read at each scrape.
        listen: ``host:port`` of a listener of its own, serving ``/metrics`` only,
            without a token (None: none).
    """

    def __init__(self, *, bus: EventBus,
                 tenant_of_session: Callable[[str], Awaitable[str | None]],
                 state: Callable[[], Awaitable[State]], listen: str | None = None) -> None:
        self.bus = bus
        self._tenant_of_session = tenant_of_session
        self._read_state = state
        self.listen = parse_listen(listen) if listen else None
        self.registry = CollectorRegistry(auto_describe=False)
        self._state = _StateCollector()
        self.registry.register(self._state)
        self._listener: Listener | None = None
        self._hooked = False
        self._tenants: dict[str, str] = {}
        #: Events waiting for their session's tenant, by session, and the task that
        #: reads the tenants (None: none running).
        self._waiting: dict[str, list[EventRecord]] = {}
        self._waiting_count = 0
        self._reader: asyncio.Task[None] | None = None
        self._tenant = _Labels()
        self._provider = _Labels()
        self._model = _Labels()
        self._tool = _Labels()
        self._lane = _Labels()
        self._route = _Labels()
        self._requests: dict[tuple[str, str, int], Any] = {}
        self._models: dict[tuple[str | None, str], _ModelSeries] = {}
        self._lanes: dict[str, Any] = {}
        self._handlers: dict[str, Callable[[EventRecord], None]] = {
            "message.assistant": self._assistant, "tool.finished": self._tool_finished,
            "run.started": self._run_started, "message.user": self._message_user,
            **dict.fromkeys(TERMINAL_KINDS, self._run_ended)}
        f = Families()
        self.registry.register(f)
        # -- GenAI (OpenTelemetry's semantic conventions, in Prometheus' names) --------
        self.token_usage = f.histogram(
            "gen_ai_client_token_usage", "Tokens used per model call (input, output).",
            [*_GENAI, "gen_ai_token_type"], buckets=_TOKEN_BUCKETS)
        self.operation_duration = f.histogram(
            "gen_ai_client_operation_duration_seconds",
            "Model calls' duration, from the request to the last chunk.",
            _GENAI, buckets=_DURATION_BUCKETS)
        self.first_chunk = f.histogram(
            "gen_ai_client_operation_time_to_first_chunk_seconds",
            "Time from a model request to its first chunk.", _GENAI,
            buckets=_FIRST_CHUNK_BUCKETS)
        self.tool_duration = f.histogram(
            "gen_ai_execute_tool_duration_seconds", "Tool calls' duration.", ["tool"],
            buckets=_DURATION_BUCKETS)
        # -- agentd's own ------------------------------------------------------------
        self.runs_started = f.counter("agentd_runs_started", "Runs started on this node.",
                                      ["tenant"])
        self.runs_finished = f.counter(
            "agentd_runs_finished", "Runs ended on this node, by outcome "
            "(completed, failed, cancelled, interrupted).", ["tenant", "outcome"])
        self.tool_calls = f.counter(
            "agentd_tool_calls", "Tool calls by outcome (ok, error, denied, skipped).",
            ["tool", "outcome"])
        self.lane_wait = f.histogram(
            "agentd_lane_wait_seconds", "How long model calls waited in their scheduler "
            "lane.", ["lane"], buckets=_WAIT_BUCKETS)
        self.step_retries = f.counter(
            "agentd_model_step_retries", "Failed attempts before a step's answer "
            "(retries and fallbacks), by the model that answered.", _GENAI)
        self.cost = f.counter(
            "agentd_model_cost_usd", "What model calls cost (USD, as the catalog "
            "prices them), by tenant and model.", ["tenant", *_GENAI])
        self.tokens = f.counter(
            "agentd_model_tokens", "Tokens used, by tenant, model and type.",
            ["tenant", *_GENAI, "gen_ai_token_type"])
        self.schedule_lateness = f.histogram(
            "agentd_schedule_lateness_seconds", "How late a schedule's message was "
            "accepted after its fire time.", buckets=_LATENESS_BUCKETS)
        self.commit_seconds = f.histogram(
            "agentd_store_commit_seconds", "Write transactions to the store (the event "
            "log's commits): time from BEGIN to COMMIT.", buckets=_COMMIT_BUCKETS)
        self.commit_writes = f.counter(
            "agentd_store_writes", "Writes committed (several share a SQLite commit).")
        self.http_requests = f.counter(
            "agentd_http_requests", "HTTP requests answered, by route template and "
            "status.", ["method", "route", "status"])
        self.events_dropped = f.counter(
            "agentd_metrics_events_dropped", "Events the metrics could not count (too "
            "many waited for their sessions' tenants to be read): the counters above "
            "miss them.")

    # -- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        """Start counting the events and, with ``listen``, serving ``/metrics``."""
        if self.listen is not None and self._listener is None:
            host, port = self.listen
            self._listener = await Listener.start(host, port, self.render)
        if not self._hooked:
            self._hooked = True
            self.bus.event_hooks.append(self._published)
            self.bus.agent_hooks.append(self._agent_changed)

    async def stop(self) -> None:
        if self._listener is not None:
            await self._listener.close()
            self._listener = None
        if self._hooked:
            self._hooked = False
            self.bus.event_hooks.remove(self._published)
            self.bus.agent_hooks.remove(self._agent_changed)
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader

    @property
    def listening(self) -> tuple[str, int] | None:
        """Where the listener of its own listens (its port when 0 was asked)."""
        return self._listener.address if self._listener is not None else None

    # -- scrapes ---------------------------------------------------------------------

    async def render(self) -> bytes:
        """Every metric, in Prometheus' text format."""
        state = await self._read_state()
        # Set and written without an await between: a concurrent scrape cannot mix.
        self._state.state = state
        return generate_latest(self.registry)

    # -- hooks -----------------------------------------------------------------------

    def observe_commit(self, seconds: float, writes: int) -> None:
        """The store's commit hook (``Engine.on_commit``)."""
        self.commit_seconds.observe(seconds)
        self.commit_writes.inc(writes)

    def request(self, method: str, route: str, status: int) -> None:
        """One HTTP request answered (:class:`HttpMetrics`). The series of each
        (method, route, status) is looked up once."""
        key = (method, route, status)
        child = self._requests.get(key)
        if child is None:
            child = self.http_requests.labels(method, self._route(route), str(status))
            if len(self._requests) < 4 * MAX_VALUES:
                self._requests[key] = child
        child.inc()

    # -- the events ------------------------------------------------------------------

    def _published(self, events: Sequence[EventRecord], remote: bool) -> None:
        """The bus's hook: count this node's events (another node counts its own)."""
        if remote:
            return
        handlers = self._handlers
        for event in events:
            handler = handlers.get(event.kind)
            if handler is not None:
                try:
                    handler(event)
                except Exception:
                    log.exception("metrics: an event could not be counted")

    def _agent_changed(self, change: AgentChange) -> None:
        if change.kind != "agent.state":
            self._tenants.clear()  # (an agent moved or went: read again)

    async def take(self, event: EventRecord) -> None:
        """Count one committed event, and wait until it is counted (its session's
        tenant read, when it was not known)."""
        self._published([event], False)
        while self._reader is not None:
            await asyncio.shield(self._reader)

    def _tenant_or_wait(self, event: EventRecord) -> str | None:
        """The tenant of ``event``'s session, or None after setting the event aside to
        be counted once the tenant is read (a task of its own reads it)."""
        tenant = self._tenants.get(event.session_id)
        if tenant is not None:
            return tenant
        if self._waiting_count >= _WAITING_MAX:
            self.events_dropped.inc()
            return None
        self._waiting.setdefault(event.session_id, []).append(event)
        self._waiting_count += 1
        if self._reader is None:
            self._reader = asyncio.get_running_loop().create_task(
                self._read_tenants(), name="agentd-metrics-tenants")
        return None

    async def _read_tenants(self) -> None:
        try:
            while self._waiting:
                session_id = next(iter(self._waiting))
                try:
                    tenant = self._tenant(await self._tenant_of_session(session_id)
                                          or "unknown")
                except Exception:
                    log.exception("metrics: a session's tenant could not be read")
                    tenant = self._tenant("unknown")
                if len(self._tenants) >= _TENANTS_KEPT:
                    self._tenants.clear()
                self._tenants[session_id] = tenant
                events = self._waiting.pop(session_id, [])
                self._waiting_count -= len(events)
                for event in events:
                    self._published([event], False)
        finally:
            self._reader = None

    def _of_model(self, spec: str | None, tenant: str) -> _ModelSeries:
        """The series of a model (``provider:model``) and tenant, made once."""
        key = (spec, tenant)
        series = self._models.get(key)
        if series is None:
            provider, model = _split(spec)
            provider, model = self._provider(provider), self._model(model)
            series = _ModelSeries(
                input=self.token_usage.labels(provider, model, "input"),
                output=self.token_usage.labels(provider, model, "output"),
                input_total=self.tokens.labels(tenant, provider, model, "input"),
                output_total=self.tokens.labels(tenant, provider, model, "output"),
                cost=self.cost.labels(tenant, provider, model),
                duration=self.operation_duration.labels(provider, model),
                first_chunk=self.first_chunk.labels(provider, model),
                retries=self.step_retries.labels(provider, model))
            if len(self._models) >= _TENANTS_KEPT:
                self._models.clear()
            self._models[key] = series
        return series

    def _assistant(self, event: EventRecord) -> None:
        tenant = self._tenant_or_wait(event)
        if tenant is None:
            return
        data = event.data
        spec = data.get("model")
        series = self._of_model(spec if isinstance(spec, str) else None, tenant)
        usage = data.get("usage")
        if isinstance(usage, dict):
            tokens = usage.get("input_tokens")
            if isinstance(tokens, int) and tokens >= 0:
                series.input.observe(tokens)
                series.input_total.inc(tokens)
            tokens = usage.get("output_tokens")
            if isinstance(tokens, int) and tokens >= 0:
                series.output.observe(tokens)
                series.output_total.inc(tokens)
            cost = usage.get("cost_usd")
            if isinstance(cost, (int, float)) and cost > 0:
                series.cost.inc(cost)
        duration = data.get("duration_ms")
        if isinstance(duration, (int, float)) and duration >= 0:
            series.duration.observe(duration / 1000.0)
        first = data.get("ttfc_ms")
        if isinstance(first, (int, float)) and first >= 0:
            series.first_chunk.observe(first / 1000.0)
        queue = data.get("queue")
        if isinstance(queue, dict):
            wait = queue.get("wait_ms")
            if isinstance(wait, (int, float)) and wait >= 0:
                lane = queue.get("lane")
                lane = lane if isinstance(lane, str) else "none"
                child = self._lanes.get(lane)
                if child is None:
                    child = self._lanes[lane] = self.lane_wait.labels(self._lane(lane))
                child.observe(wait / 1000.0)
        attempts = data.get("attempts")
        if isinstance(attempts, list) and attempts:
            series.retries.inc(len(attempts))

    def _tool_finished(self, event: EventRecord) -> None:
        data = event.data
        tool = self._tool(data.get("name"))
        if data.get("skipped"):
            outcome = "skipped"
        elif data.get("denied"):
            outcome = "denied"
        else:
            outcome = "error" if data.get("is_error") else "ok"
            duration = data.get("duration_ms")
            if isinstance(duration, (int, float)) and duration >= 0:
                self.tool_duration.labels(tool).observe(duration / 1000.0)
        self.tool_calls.labels(tool, outcome).inc()

    def _run_started(self, event: EventRecord) -> None:
        tenant = self._tenant_or_wait(event)
        if tenant is not None:
            self.runs_started.labels(tenant).inc()

    def _run_ended(self, event: EventRecord) -> None:
        tenant = self._tenant_or_wait(event)
        if tenant is not None:
            self.runs_finished.labels(tenant, TERMINAL_KINDS[event.kind]).inc()

    def _message_user(self, event: EventRecord) -> None:
        fire_at = event.data.get("fire_at")
        if isinstance(fire_at, (int, float)) and event.data.get("schedule_id"):
            self.schedule_lateness.observe(max(event.at - fire_at, 0.0))


# -- HTTP -----------------------------------------------------------------------------

_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_LITERAL = re.compile(r"\^?([^\\()\[\]?*+.$|{]*)")


@functools.lru_cache(maxsize=64)
def route_label(pattern: str) -> str:
    """The label of a route the request layer serves by a path regex: its literal
    start, then ``*`` if it goes on (``^/a2a/([^/]+)$`` is ``/a2a/*``)."""
    match = _LITERAL.match(pattern)
    literal = match.group(1) if match else ""
    rest = pattern[match.end() if match else 0:]
    return literal + ("*" if rest not in ("", "$") and rest != "\\Z" else "")


class HttpMetrics:
    """ASGI middleware counting HTTP requests by method, route template (never the
    raw path) and status; outermost, so that refusals (401, 413, origin) count too.
    A request no route took is ``unmatched``."""

    def __init__(self, app: ASGIApp, *, metrics: Callable[[], Metrics | None]) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        metrics = self.metrics()
        if metrics is None:
            await self.app(scope, receive, send)
            return
        status = 0

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        except BaseException:
            status = status or 500
            raise
        finally:
            if status:
                count_request(metrics, scope, status)


def count_request(metrics: Metrics, scope: Scope, status: int) -> None:
    """Count one answered request (:class:`HttpMetrics`; the request layer's fused
    front, ``agentd.server.app``, counts the same way)."""
    route = scope.get("route")
    path = getattr(route, "path", None) if route is not None else scope.get(ROUTE_KEY)
    method = scope["method"]
    metrics.request(method if method in _METHODS else "other", path or "unmatched", status)
