"""Which run a log line was written for: the ids a structured log line carries.

The runtime binds a :class:`LogContext` when a run's task starts executing
(``RunExecutor.execute``); asyncio copies the context into every task the run starts
and ``asyncio.to_thread`` into its threads, so every line logged on the run's behalf
carries its agent, session, run and trace ids. The log formatter
(:mod:`agentd.telemetry.logs`) reads it. A module of the base layer, so that the core
(which may not import the capabilities) can set what a capability reads.
"""

from __future__ import annotations

import hashlib
import re
from contextvars import ContextVar
from dataclasses import dataclass

__all__ = ["CURRENT", "LogContext", "default_trace_id", "span_id", "tool_traceparent",
           "trace_id_from"]

_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}")


@dataclass(frozen=True, slots=True, kw_only=True)
class LogContext:
    """The ids of the run a line is logged for (``agent``: the agent's name;
    ``session``: the session's key; ``given_trace_id``: the trace the run's message
    came in, from its ``traceparent``, if any)."""

    agent_id: str
    agent: str
    session_id: str
    session: str
    run_id: str
    given_trace_id: str | None = None

    @property
    def trace_id(self) -> str:
        """The run's trace: the one it came in, else :func:`default_trace_id`'s
        (derived when read: most runs log nothing and call out to nobody)."""
        return self.given_trace_id or default_trace_id(self.run_id)


#: The run the current task works for; None outside of runs.
CURRENT: ContextVar[LogContext | None] = ContextVar("agentd_log_context", default=None)


def default_trace_id(run_id: str) -> str:
    """The W3C trace id (32 lower-case hex digits) of a run that came with no
    ``traceparent``: derived from the id of the run that roots the trace, so that its
    logs and its spans (built later, from the event log, by another process perhaps)
    name the same trace without either storing it."""
    return hashlib.sha256(("agentd-trace:" + run_id).encode()).hexdigest()[:32]


def trace_id_from(traceparent: object) -> str | None:
    """The trace id of a W3C ``traceparent`` header's value, None when it is not one
    (or names the invalid all-zero trace)."""
    if not isinstance(traceparent, str):
        return None
    match = _TRACEPARENT.match(traceparent.strip().lower())
    if match is None or match.group(1) == "0" * 32:
        return None
    return match.group(1)


def span_id(run_id: str, part: str) -> str:
    """The span id (16 hex digits) of the part ``part`` of run ``run_id``: ``run`` (its
    ``invoke_agent`` span), ``chat:N``, ``tool:CALL_ID``. Derived, like the trace id, so
    that what a run sends out (a ``traceparent`` header) names the span its trace will
    hold once it is built from the log (agentd.telemetry)."""
    digest = hashlib.sha256(f"agentd-span:{run_id}:{part}".encode()).hexdigest()[:16]
    return digest if digest != "0" * 16 else "1" * 16


def tool_traceparent(run_id: str, part: str) -> str | None:
    """The W3C ``traceparent`` a tool call of run ``run_id`` sends out, naming the span
    ``part`` of the run's trace (``tool:CALL_ID``, its ``execute_tool`` span, for an
    MCP server; ``a2a:CALL_ID``, the ``invoke_agent`` client span of a call to another
    A2A agent). None outside of that run's context."""
    bound = CURRENT.get()
    if bound is None or bound.run_id != run_id:
        return None
    return f"00-{bound.trace_id}-{span_id(run_id, part)}-01"
