"""Parts the composition root builds from the daemon's settings: the kernel every
model call goes through, the overview of the daemon (``GET /v1/overview``) and its
metrics (``GET /metrics``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from agentd.clock import SYSTEM, Clock
from agentd.config import Settings
from agentd.errors import AgentNotFound
from agentd.runtime.budgets import BudgetBook
from agentd.runtime.calls import Kernel
from agentd.runtime.cluster_limits import ClusterGate
from agentd.runtime.kernel import BreakerSettings, RetryPolicy
from agentd.runtime.overview import DiskGauge, Overview
from agentd.runtime.scheduler import LaneLimits, Scheduler
from agentd.telemetry.metrics import Metrics, State
from agentd.tenancy import tenant_of
from agentd.version import __version__

if TYPE_CHECKING:
    from agentd.assembly.runtime import Runtime

__all__ = ["KernelSettings", "lane_limits", "make_kernel", "make_metrics", "make_overview",
           "shared_lanes"]


def lane_limits(settings: Settings) -> dict[str, LaneLimits]:
    """The scheduler's lane limits from the ``providers`` setting."""
    return {name: LaneLimits(**lim.model_dump(exclude={"scope"}))
            for name, lim in settings.providers.items()}


def shared_lanes(settings: Settings) -> list[str]:
    """The lanes whose limits the nodes sharing a store keep together: those with a
    limit, of scope ``cluster``."""
    return sorted(name for name, lim in settings.providers.items()
                  if lim.scope == "cluster"
                  and (lim.concurrency is not None or lim.rpm or lim.tpm))


@dataclass(frozen=True, kw_only=True, slots=True)
class KernelSettings:
    """What the kernel takes from the daemon's settings (at start, and on a reload)."""

    limits: dict[str, LaneLimits]
    shared: frozenset[str]
    class_weights: dict[str, float]
    tenant_weights: dict[str, float]
    retry: RetryPolicy
    breaker: BreakerSettings
    counts_tokens: bool

    @classmethod
    def of(cls, settings: Settings) -> KernelSettings:
        """Built and checked (ValueError naming the setting)."""
        return cls(
            limits=lane_limits(settings),
            shared=frozenset(shared_lanes(settings)),
            class_weights=dict(settings.priority_weights),
            tenant_weights={name: t.weight for name, t in settings.tenants.items()},
            retry=RetryPolicy(attempts=settings.retry_attempts,
                              base_s=settings.retry_base_s, max_s=settings.retry_max_s),
            breaker=BreakerSettings(failures=settings.breaker_failures,
                                    cooldown_s=settings.breaker_cooldown_s,
                                    max_cooldown_s=settings.breaker_cooldown_s * 10),
            counts_tokens=any(lim.tpm for lim in settings.providers.values()))

    def scheduler(self, clock: Clock, gate: ClusterGate | None = None) -> Scheduler:
        return Scheduler(self.limits, class_weights=self.class_weights,
                         tenant_weights=self.tenant_weights, clock=clock, gate=gate)

    def apply(self, kernel: Kernel) -> None:
        """Give a running kernel these settings (a configuration reload): the
        scheduler's lanes and weights (nothing queued is lost; a lane that starts to
        have limits of scope ``cluster`` is shared from now on, while a lane keeps the
        scope it started with: a change of scope needs a restart), the retry policy of
        runs that start from now, and the breakers' thresholds (each breaker keeps
        its state and current cooldown)."""
        kernel.scheduler.reconfigure(self.limits, class_weights=self.class_weights,
                                     tenant_weights=self.tenant_weights,
                                     shared=self.shared)
        kernel.counts_tokens = self.counts_tokens
        kernel.retry = self.retry
        kernel.breaker_settings = self.breaker
        for breaker in kernel.breakers.values():
            breaker.settings = self.breaker


def make_kernel(settings: Settings, usage_total: Any, *, shared: bool,
                clock: Clock = SYSTEM, gate: ClusterGate | None = None) -> Kernel:
    """The kernel every model call goes through, from the daemon's settings; ``gate``:
    the lanes shared with the other nodes of the store (PostgreSQL)."""
    parts = KernelSettings.of(settings)
    kernel = Kernel(parts.scheduler(clock, gate), BudgetBook(usage_total, shared=shared),
                    retry=parts.retry, breaker=parts.breaker, clock=clock)
    kernel.counts_tokens = parts.counts_tokens
    return kernel


def make_overview(runtime: Runtime) -> Overview:
    """The overview of the runtime's services (``GET /v1/overview``)."""
    settings = runtime.settings

    def sandbox() -> str:
        default = runtime.sandboxes.default
        return default.name if default is not None else "none"

    return Overview(
        runtime.store, awake=lambda: runtime.agents.awake, sandbox=sandbox,
        node=lambda: {"active_runs": runtime.supervisor.active_runs,
                      "queued_runs": runtime.supervisor.queued_runs,
                      "model_calls_queued": runtime.kernel.scheduler.queued()},
        disk=DiskGauge(settings.workspaces_dir, settings.home / "snapshots"
                       if runtime.workspaces is not None else None),
        usage=lambda day: runtime.store.usage_report(since=day, until=day),
        busy=lambda: [e.activity() for e in runtime.supervisor.executors()])


def make_metrics(runtime: Runtime) -> Metrics:
    """The daemon's metrics (``[telemetry] metrics``), reading the runtime's services:
    the bus's events, the tenant of a session's agent, and at each scrape what the
    overview, the supervisor, the kernel and the sandboxes hold."""
    store = runtime.store

    async def tenant_of_session(session_id: str) -> str | None:
        names = await store.session_names([session_id])
        if session_id not in names:
            return None
        name = names[session_id][0]
        agent = runtime.agents.held(name)
        if agent is None:
            try:
                agent = await store.get_agent(name)
            except AgentNotFound:
                return None
        return tenant_of(agent.settings)

    async def state() -> State:
        counts = await store.overview_counts()
        return State(agents_by_state=counts["agents"], awake=runtime.agents.awake,
                     runs_by_state=counts["runs"], node=runtime.node_id,
                     runs_here=runtime.supervisor.active_runs,
                     queued_here=runtime.supervisor.queued_runs,
                     kernel=runtime.kernel.metrics(),
                     egress_held=runtime.sandboxes.connections.held,
                     egress_max=runtime.sandboxes.connections.total,
                     store_bytes=counts["bytes"], version=__version__,
                     sandboxes=runtime.sandboxes.stats)

    metrics = Metrics(bus=runtime.bus, tenant_of_session=tenant_of_session, state=state,
                      listen=runtime.settings.telemetry.metrics_listen)
    store.engine.on_commit = metrics.observe_commit
    return metrics
