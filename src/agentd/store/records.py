"""Plain records the store hands out. Times are UNIX epoch seconds (float)."""

from __future__ import annotations

import datetime as _dt
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, cast

import orjson

from agentd.events import (
    ACTIVE_RUN_STATES,
    AGENT_CHANGE_KINDS,
    TERMINAL_RUN_STATES,
    AgentChangeData,
    AgentChangeKind,
    RunStatus,
    SessionRestored,
    UnknownEvent,
    parse,
)
from agentd.tenancy import DEFAULT_TENANT, tenant_of

if TYPE_CHECKING:
    from agentd.events import Event

__all__ = [
    "ACTIVE_RUN_STATES",
    "AGENT_STATES",
    "DEFAULT_TENANT",
    "TERMINAL_RUN_STATES",
    "USAGE_GROUPS",
    "AgentChange",
    "AgentRecord",
    "AgentState",
    "CheckpointRecord",
    "EventRecord",
    "NewBlob",
    "NewEvent",
    "RunRecord",
    "RunStatus",
    "SessionRecord",
    "UsageCharge",
    "agent_change_kind",
    "iso",
    "live_events",
    "session_tag",
    "tenant_of",
]

AgentState = Literal["created", "running", "paused", "stopped", "error"]
AGENT_STATES: tuple[AgentState, ...] = ("created", "running", "paused", "stopped", "error")
#: What :meth:`Store.usage_report` can group by (``month`` is ``YYYY-MM`` of ``day``).
USAGE_GROUPS: tuple[str, ...] = ("agent", "tenant", "model", "day", "month")


def iso(ts: float | None) -> str | None:
    """Epoch seconds to an ISO 8601 UTC string (None stays None), exactly as
    ``datetime.fromtimestamp(ts, UTC).isoformat()`` writes it (microseconds rounded
    half to even, as it rounds them; none shown when there are none)."""
    if ts is None:
        return None
    if not 0 <= ts < _ISO_MAX:
        return _dt.datetime.fromtimestamp(ts, _dt.UTC).isoformat().replace("+00:00", "Z")
    fraction, whole = math.modf(ts)
    micro = round(fraction * 1e6)
    second = int(whole)
    if micro >= 1_000_000:
        second, micro = second + 1, micro - 1_000_000
    # A turn writes several times of one second: its date and time are formatted once.
    global _iso_second
    kept = _iso_second
    if kept[0] != second:
        kept = _iso_second = (second, time.strftime("%Y-%m-%dT%H:%M:%S",
                                                    time.gmtime(second)))
    return f"{kept[1]}.{micro:06d}Z" if micro else f"{kept[1]}Z"


#: The last whole second :func:`iso` formatted, and its ``YYYY-MM-DDTHH:MM:SS``; the
#: times it formats itself (year 9999 and before, none before 1970).
_iso_second: tuple[int, str] = (-1, "")
_ISO_MAX = 253402300799.0


@dataclass(kw_only=True, slots=True)
class AgentRecord:
    id: str
    name: str
    model: str
    instructions: str = ""
    tools: list[str] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    state: AgentState = "created"
    created_at: float = 0.0
    updated_at: float = 0.0

    def to_api(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "model": self.model,
            "instructions": self.instructions,
            "tools": self.tools,
            "settings": self.settings,
            "state": self.state,
            "created_at": iso(self.created_at),
            "updated_at": iso(self.updated_at),
        }


def agent_change_kind(fields: Mapping[str, Any]) -> AgentChangeKind:
    """The kind of change an update of these fields of an agent's record is."""
    return "agent.state" if set(fields) == {"state"} else "agent.updated"


@dataclass(frozen=True, kw_only=True, slots=True)
class AgentChange:
    """A committed change to an agent's record, for the activity feed (live only).

    ``tenants``: the agent's tenant after the change, and before it when an update
    moved it (a token scoped to either may see the change); for ``agent.deleted``,
    the tenant of the record as it was when deleted. Kept for the scope decision,
    never sent."""

    kind: AgentChangeKind
    agent: str
    agent_id: str
    state: str
    #: ``updated_at`` after the change (``agent.deleted``: when it was deleted).
    at: float
    tenants: tuple[str | None, ...]

    @classmethod
    def of(cls, kind: AgentChangeKind, agent: AgentRecord, *,
           before: AgentRecord | Mapping[str, Any] | None = None,
           at: float | None = None) -> AgentChange:
        """The change that made ``agent`` (``before``: the record, or its settings, as
        it was before an update)."""
        tenants: tuple[str | None, ...] = (tenant_of(agent.settings),)
        if before is not None:
            old = tenant_of(before.settings if isinstance(before, AgentRecord) else before)
            if old != tenants[0]:
                tenants = (*tenants, old)
        return cls(kind=kind, agent=agent.name, agent_id=agent.id, state=agent.state,
                   at=agent.updated_at if at is None else at, tenants=tenants)

    def to_api(self) -> AgentChangeData:
        return {"agent": self.agent, "state": self.state, "updated_at": iso(self.at) or ""}

    def to_note(self, origin: str) -> str:
        """The change as a NOTIFY payload from the process ``origin``."""
        return orjson.dumps([origin, self.kind, self.agent, self.agent_id, self.state,
                             self.at, list(self.tenants)]).decode()

    @classmethod
    def from_note(cls, payload: str) -> tuple[str, AgentChange]:
        """``(origin, change)`` of a payload :meth:`to_note` wrote (ValueError if it is
        not one)."""
        try:
            origin, kind, agent, agent_id, state, at, tenants = orjson.loads(payload)
            if kind not in AGENT_CHANGE_KINDS:
                raise ValueError(kind)
            return str(origin), cls(kind=kind, agent=str(agent), agent_id=str(agent_id),
                                    state=str(state), at=float(at),
                                    tenants=tuple(t if t is None else str(t)
                                                  for t in tenants))
        except (TypeError, ValueError, orjson.JSONDecodeError) as exc:
            raise ValueError(f"not an agent change: {payload[:80]!r}") from exc


@dataclass(kw_only=True, slots=True)
class SessionRecord:
    id: str
    agent_id: str
    key: str
    last_seq: int = 0
    created_at: float = 0.0
    updated_at: float = 0.0
    checkpoint_seq: int = 0
    checkpoint_at: float = 0.0
    #: The session's own policy layer (``PolicyConfig`` as a dict), if set.
    policy: dict[str, Any] | None = None

    @property
    def tag(self) -> str:
        return session_tag(self.id)

    def to_api(self, agent_name: str) -> dict[str, Any]:
        return {
            "agent": agent_name,
            "key": self.key,
            "last_seq": self.last_seq,
            "tag": self.tag,
            "checkpoint_seq": self.checkpoint_seq,
            **({"policy": self.policy} if self.policy is not None else {}),
            "created_at": iso(self.created_at),
            "updated_at": iso(self.updated_at),
        }


def session_tag(session_id: str) -> str:
    """A short tag naming a session in SSE frame ids (``<seq>@<tag>``): the last 8
    hex digits of its id, which are random. A ``Last-Event-ID`` from another session
    is recognised by its tag."""
    return session_id[-8:]


@dataclass(kw_only=True, slots=True)
class RunRecord:
    id: str
    session_id: str
    agent_id: str
    status: RunStatus
    input: str
    output: str | None = None
    error: dict[str, Any] | None = None
    steps: int = 0
    usage: dict[str, float] = field(default_factory=dict)
    idempotency_key: str | None = None
    created_at: float = 0.0
    started_at: float | None = None
    finished_at: float | None = None
    #: The node that drives (or last drove) the run, and until when its lease holds.
    lease_owner: str | None = None
    lease_expires_at: float | None = None
    #: The seq of its ``run.queued`` event: its place in the session's queue.
    queued_seq: int | None = None
    #: The priority its message was sent with (the runtime validates the value).
    priority: str = "background"

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL_RUN_STATES

    def copy(self) -> RunRecord:
        """A shallow copy: what ``dataclasses.replace(run)`` makes, for a third of its
        cost (every turn makes one; tests/store/test_records_copy.py holds it to
        every field)."""
        return RunRecord(
            id=self.id, session_id=self.session_id, agent_id=self.agent_id,
            status=self.status, input=self.input, output=self.output, error=self.error,
            steps=self.steps, usage=self.usage, idempotency_key=self.idempotency_key,
            created_at=self.created_at, started_at=self.started_at,
            finished_at=self.finished_at, lease_owner=self.lease_owner,
            lease_expires_at=self.lease_expires_at, queued_seq=self.queued_seq,
            priority=self.priority)

    def to_api(self, agent_name: str, session_key: str) -> dict[str, Any]:
        return {
            "id": self.id,
            "agent": agent_name,
            "session": session_key,
            "status": self.status,
            "input": self.input,
            "output": self.output,
            "error": self.error,
            "steps": self.steps,
            "usage": self.usage,
            "created_at": iso(self.created_at),
            "started_at": iso(self.started_at),
            "finished_at": iso(self.finished_at),
            "node": self.lease_owner,
            "priority": self.priority,
        }


@dataclass(kw_only=True, slots=True)
class CheckpointRecord:
    """A named pointer into a session's log: the session as it was at ``seq``."""

    id: str
    session_id: str
    seq: int
    kind: str
    name: str | None = None
    created_at: float = 0.0

    def to_api(self, agent_name: str, session_key: str) -> dict[str, Any]:
        return {
            "id": self.id,
            "agent": agent_name,
            "session": session_key,
            "seq": self.seq,
            "name": self.name,
            "kind": self.kind,
            "created_at": iso(self.created_at),
        }


@dataclass(frozen=True, kw_only=True, slots=True)
class UsageCharge:
    """What one model call (or ``calls`` of them) used, charged to the usage ledger
    with the step that made it (``Store.append(..., usage=...)``).

    ``agent`` and ``tenant`` are copied into the ledger as they are at the time
    (``tenant`` is ``""`` for none), so the history outlives the agent.
    """

    agent_id: str
    agent: str
    tenant: str
    model: str
    input_tokens: int
    output_tokens: int
    cached_tokens: int
    cost_usd: float
    calls: int = 1
    #: Of ``input_tokens``: written to the provider's prompt cache.
    cache_write_tokens: int = 0


@dataclass(kw_only=True, slots=True)
class NewEvent:
    """An event to append; the store assigns ``seq`` and ``at``. Build it from a typed
    event (:mod:`agentd.events`) with :meth:`of`."""

    kind: str
    data: dict[str, Any] = field(default_factory=dict)
    run_id: str | None = None

    @classmethod
    def of(cls, event: Event, run_id: str | None = None) -> NewEvent:
        """The row of a typed event: its data is stored as it is (no copy)."""
        return cls(kind=event.kind, data=cast(dict[str, Any], event.data), run_id=run_id)


@dataclass(frozen=True, kw_only=True, slots=True)
class NewBlob:
    """An image's or file's bytes to keep (:mod:`agentd.store.blobs`), checked and
    hashed by whoever hands them over; ``data`` None: a blob the tenant holds already,
    named by its hash (refused if it does not)."""

    sha256: str
    media_type: str
    size: int
    width: int | None = None
    height: int | None = None
    data: bytes | None = field(default=None, repr=False, compare=False)


@dataclass(kw_only=True, slots=True)
class EventRecord:
    session_id: str
    seq: int
    kind: str
    data: dict[str, Any]
    at: float
    run_id: str | None = None

    @classmethod
    def of_row(cls, session_id: str, seq: int, run_id: str | None, kind: str,
               data: dict[str, Any], at: float) -> EventRecord:
        """The record of a row's values (positionally, in EVENT_COLS' order), made
        without the dataclass's keyword-only ``__init__``: a class's ``__init__``
        called with keywords costs a dict and a slow call each time, and every log
        append and read makes one a row. Sets every field."""
        record = object.__new__(cls)
        record.session_id = session_id
        record.seq = seq
        record.run_id = run_id
        record.kind = kind
        record.data = data
        record.at = at
        return record

    @property
    def typed(self) -> Event | UnknownEvent:
        """This event as its kind's dataclass (see :func:`agentd.events.parse`)."""
        return parse(self.kind, self.data)

    def to_api(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "run_id": self.run_id,
            "kind": self.kind,
            "data": self.data,
            "at": iso(self.at),
        }


def live_events(events: list[EventRecord]) -> list[EventRecord]:
    """The events that make up a session's state: the log with every restore applied.

    ``events`` is a prefix of a session's log (seq 1..N, in order). A
    ``session.restored`` event (data ``to_seq``) sets the state back to what it was at
    ``to_seq``: the events after ``to_seq`` and before the restore stay in the log, as
    its archive, but are no longer part of the state. Restores may point back past
    earlier restores; the state at any seq is ``live_events`` of the log up to it.
    """
    live: list[EventRecord] = []
    for event in events:
        typed = event.typed
        if isinstance(typed, SessionRestored):
            to_seq = int(typed.data["to_seq"])
            # The state as it was at to_seq (which may itself follow a restore).
            live = live_events([e for e in events if e.seq <= to_seq])
        live.append(event)
    return live
