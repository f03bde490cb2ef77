"""Heartbeat: a periodic autonomous turn from a heartbeat document.

An agent with ``settings.heartbeat.enabled`` gets a message in its heartbeat session
(``settings.heartbeat.session``, default ``heartbeat``) every ``every_s`` seconds: its
``document``, or the text of ``file`` in its workspace (default ``HEARTBEAT.md``),
during its ``active_hours`` if it has any. A reply that is exactly ``ok_token`` (say,
``HEARTBEAT_OK``: nothing needs attention) is logged but not delivered (the run's
``message.assistant`` and ``run.completed`` carry ``"silent": true``; see
:func:`agentd.doors.sse.is_silent`).

Exactly once. Beats are slots aligned to the period (``floor(t / every_s) *
every_s``), so every node and every restart computes the same ones. A beat is sent
with ``Runs.send(origin={"heartbeat": True, "beat_at": slot, ...}, also=claim)``: the
claim (:func:`agentd.store.heartbeats.claim_beat`) moves the agent's last claimed slot
forward in the transaction that logs the message and queues its run, so a slot is
beaten once, and never after a later one. After downtime the current slot is the
only one due: at most one catch-up, never a storm.

Skips (each recorded with its reason, shown by ``GET .../heartbeat``): outside the
active hours; the agent paused, stopped or in error; the agent busy (an active or
queued run in any session, checked inside the claiming transaction); the file
missing, unreadable, outside the workspace or too large; an empty document.

Finding due agents costs nothing per agent without a heartbeat: the service keeps
the next slot of each agent that has one in memory (:attr:`HeartbeatService.plans`),
built at start from the agents whose stored settings mention a heartbeat, refreshed
at once for a change made through this service (``PATCH .../heartbeat``) and every
``resync_s`` seconds for changes made otherwise (``PATCH /v1/agents/{name}``, other
nodes).
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from datetime import time as dtime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from pydantic import ValidationError

from agentd.clock import SYSTEM, Clock
from agentd.llm.quoting import quote
from agentd.security.identity import Principal
from agentd.settings.heartbeat import ActiveHours, HeartbeatSettings
from agentd.store.records import iso

if TYPE_CHECKING:
    from agentd.runtime.agents import Agents
    from agentd.runtime.runs import Runs
    from agentd.store import Store
    from agentd.store.heartbeats import BeatState

__all__ = ["BeatOutcome", "HeartbeatService", "in_active_hours", "slot_of"]

log = logging.getLogger(__name__)

def slot_of(now: float, every_s: float) -> float:
    """The beat slot ``now`` falls in (the latest multiple of ``every_s``)."""
    return math.floor(now / every_s) * every_s


def in_active_hours(hours: ActiveHours | None, now: float) -> bool:
    if hours is None:
        return True
    local = datetime.fromtimestamp(now, ZoneInfo(hours.timezone)).time()
    start, end = dtime.fromisoformat(hours.start), dtime.fromisoformat(hours.end)
    if start < end:
        return start <= local < end
    return local >= start or local < end  # wraps midnight


@dataclass(kw_only=True, slots=True)
class _Plan:
    agent_id: str
    name: str
    settings: HeartbeatSettings
    #: The next slot to try.
    next_at: float


@dataclass(kw_only=True, slots=True)
class BeatOutcome:
    """What one beat attempt did: ``run_id`` when a run was queued, else ``skipped``
    (why) or nothing (the slot was claimed already)."""

    beat_at: float
    run_id: str | None = None
    skipped: str | None = None


class _Skip(Exception):
    pass


def _area(raw: Any) -> HeartbeatSettings | None:
    """An agent's stored heartbeat area, or None (absent, off or invalid: an invalid
    one is named by the agent's settings errors and its runs fail saying why)."""
    if not isinstance(raw, dict) or "heartbeat" not in raw:
        return None
    try:
        area = HeartbeatSettings.model_validate(raw["heartbeat"])
    except ValidationError:
        return None
    return area if area.enabled else None


class HeartbeatService:
    """Beats agents whose settings ask for it (see the module's docstring).

    Args:
        clock: epoch seconds (injectable: tests move time instead of sleeping).
        workspace_of: an agent's workspace directory, by its id.
        resync_s: how often the plans are rebuilt from the store.
    """

    def __init__(self, store: Store, *, runs: Runs, agents: Agents,
                 workspace_of: Callable[[str], Path],
                 clock: Clock = SYSTEM, resync_s: float = 30.0) -> None:
        self.store = store
        self.runs = runs
        self.agents = agents
        self.workspace_of = workspace_of
        self.clock = clock
        self.resync_s = resync_s
        #: Agents with a heartbeat on, by id.
        self.plans: dict[str, _Plan] = {}
        self._synced_at = -math.inf
        self._lock = asyncio.Lock()

    # -- plans -------------------------------------------------------------------------

    async def sync(self) -> None:
        """Rebuild the plans from the agents' stored settings."""
        now = self.clock.time()
        plans: dict[str, _Plan] = {}
        for agent_id, name, settings in await self.store.heartbeat_candidates():
            area = _area(settings)
            if area is not None:
                plans[agent_id] = self._plan(agent_id, name, area, now)
        self.plans = plans
        self._synced_at = now

    def _plan(self, agent_id: str, name: str, area: HeartbeatSettings, now: float) -> _Plan:
        old = self.plans.get(agent_id)
        if old is not None and old.settings == area and old.name == name:
            return old
        # The current slot: beaten already (before a restart, or by another node) ->
        # the claim says so and the next one is tried; else it is the one catch-up.
        return _Plan(agent_id=agent_id, name=name, settings=area,
                     next_at=slot_of(now, area.every_s))

    def refresh(self, agent_id: str, name: str, settings: dict[str, Any]) -> None:
        """Take an agent's new settings into account now (its heartbeat changed)."""
        area = _area(settings)
        if area is None:
            self.plans.pop(agent_id, None)
        else:
            self.plans[agent_id] = self._plan(agent_id, name, area, self.clock.time())

    def forget(self, agent_id: str) -> None:
        self.plans.pop(agent_id, None)

    def next_beat(self, agent_id: str) -> float | None:
        plan = self.plans.get(agent_id)
        return None if plan is None else plan.next_at

    # -- beating -----------------------------------------------------------------------

    async def tick(self) -> int:
        """Beat every agent that is due (the housekeeping job); how many runs it queued."""
        async with self._lock:
            now = self.clock.time()
            if now - self._synced_at >= self.resync_s:
                await self.sync()
            queued = 0
            for plan in [p for p in self.plans.values() if p.next_at <= now]:
                try:
                    outcome = await self.beat(plan, now)
                except Exception:
                    log.exception("heartbeat of agent %s failed", plan.name)
                    plan.next_at = slot_of(now, plan.settings.every_s) + plan.settings.every_s
                    continue
                queued += outcome.run_id is not None
            return queued

    async def beat(self, plan: _Plan, now: float) -> BeatOutcome:
        """Try the slot ``now`` is in; the plan's next slot is the one after, whatever
        happens (a skipped slot is not retried: the next one comes)."""
        area = plan.settings
        slot = slot_of(now, area.every_s)
        plan.next_at = slot + area.every_s
        try:
            run_id = await self._beat(plan, slot, now)
        except _Skip as skip:
            reason = str(skip)
            log.info("heartbeat of agent %s skipped: %s", plan.name, reason)
            await self.store.record_beat_skip(plan.agent_id, reason)
            return BeatOutcome(beat_at=slot, skipped=reason)
        return BeatOutcome(beat_at=slot, run_id=run_id)

    async def _beat(self, plan: _Plan, slot: float, now: float) -> str | None:
        from agentd.errors import AgentdError, AgentNotFound
        from agentd.store.heartbeats import AlreadyBeaten, Busy, claim_beat

        area = plan.settings
        if not in_active_hours(area.active_hours, now):
            raise _Skip("outside active hours")
        try:
            agent = await self.store.get_agent(plan.agent_id, by="id")
        except AgentNotFound:
            self.forget(plan.agent_id)
            return None
        if agent.state in ("paused", "stopped", "error"):
            raise _Skip(f"agent {agent.state}")
        document = await self._document(plan)
        # The document may be a workspace file the agent itself wrote (under a tainted
        # run, perhaps): it is framed and quoted, so the daemon's own line stays the
        # daemon's (a document cannot end its tag and go on as the frame).
        content = (f"(Heartbeat: a periodic turn. Your heartbeat document, in the tag "
                   f"below, says what to look at; &, < and > in it are written &amp;, "
                   f"&lt; and &gt;. If nothing needs your attention, reply with exactly "
                   f"{area.ok_token}.)\n\n<heartbeat_document>\n{quote(document)}\n"
                   f"</heartbeat_document>")

        def claim(tx: Any, accepted: Any) -> None:
            claim_beat(tx, plan.agent_id, slot, accepted.run.id)

        try:
            sent = await self.runs.send(
                agent.name, area.session, content, priority="background",
                origin={"heartbeat": True, "beat_at": slot, "ok_token": area.ok_token},
                also=claim)
        except Busy as busy:
            raise _Skip(f"busy (run {busy.run_id})") from None
        except AlreadyBeaten:
            return None
        except AgentdError as exc:
            raise _Skip(f"{exc.code}: {exc.message}") from None
        log.info("heartbeat of agent %s: run %s", agent.name, sent.run.id)
        return sent.run.id

    async def _document(self, plan: _Plan) -> str:
        area = plan.settings
        if area.document is not None:
            text = area.document
        else:
            text = await asyncio.to_thread(self._read, plan)
        if not text.strip():
            raise _Skip("the heartbeat document is empty")
        return text

    def _read(self, plan: _Plan) -> str:
        """The heartbeat file (in a thread): confined to the workspace, symlinks
        included (``Workspace.read_bytes`` opens each segment without following)."""
        from agentd.errors import ToolError
        from agentd.sandbox import Workspace

        area = plan.settings
        root = self.workspace_of(plan.agent_id)
        try:
            data, size = Workspace(root).read_bytes(area.file, limit=area.max_document_bytes)
        except ToolError as exc:
            raise _Skip(f"heartbeat file {area.file!r}: {exc.message}") from None
        except FileNotFoundError:
            raise _Skip(f"heartbeat file {area.file!r} does not exist") from None
        except OSError as exc:
            raise _Skip(f"heartbeat file {area.file!r}: {exc.strerror}") from None
        if size > area.max_document_bytes:
            raise _Skip(f"heartbeat file {area.file!r} has {size} bytes, more than "
                        f"max_document_bytes ({area.max_document_bytes})")
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            raise _Skip(f"heartbeat file {area.file!r} is not UTF-8 text") from None

    # -- the API's view ------------------------------------------------------------------

    async def show(self, name: str) -> dict[str, Any]:
        """The agent's heartbeat settings (defaults filled in) and state."""
        agent = await self.store.get_agent(name)
        raw = agent.settings.get("heartbeat") if isinstance(agent.settings, dict) else None
        try:
            area = HeartbeatSettings.model_validate(raw or {})
        except ValidationError:
            # Stored by hand or by another version: shown as stored, never beaten.
            return {"agent": agent.name, "settings": raw, "valid": False,
                    "state": await self.state(agent.id, HeartbeatSettings())}
        return {"agent": agent.name, "settings": area.model_dump(), "valid": True,
                "state": await self.state(agent.id, area)}

    async def update(self, name: str, patch: dict[str, Any], *,
                     actor: Principal | None = None) -> dict[str, Any]:
        """Change some keys of the agent's heartbeat area (``None``: back to its
        default; ``active_hours`` is merged key by key) through the agent-update path,
        so the checks are the agent's; errors name the key (``body.every_s``)."""
        from agentd.errors import InvalidInput

        agent = await self.agents.get(name)
        current = agent.settings.get("heartbeat")
        merged: dict[str, Any] = dict(current) if isinstance(current, dict) else {}
        for key, value in patch.items():
            old = merged.get(key)
            if key == "active_hours" and isinstance(value, dict) and isinstance(old, dict):
                value = {**old, **value}
            if value is None:
                merged.pop(key, None)
            else:
                merged[key] = value
        settings = {**agent.settings, "heartbeat": merged}
        try:
            agent = await self.agents.update(name, {"settings": settings}, actor=actor)
        except InvalidInput as exc:
            prefix = "body.settings.heartbeat"
            for error in exc.details.get("errors", []):
                field = str(error.get("field", ""))
                if field.startswith(prefix):
                    error["field"] = "body" + field[len(prefix):]
            exc.message = exc.message.replace("settings.heartbeat.", "")
            raise
        self.refresh(agent.id, agent.name, agent.settings)
        return await self.show(name)

    # -- state -------------------------------------------------------------------------

    async def state(self, agent_id: str, area: HeartbeatSettings) -> dict[str, Any]:
        """The heartbeat's state as the API shows it."""
        stored: BeatState = await self.store.beat_state(agent_id)
        outcome: str | None = None
        if stored.run_status is not None:
            outcome = stored.run_status
            if stored.run_status == "completed" and stored.run_output is not None and (
                    stored.run_output.strip() == area.ok_token):
                outcome = "ok"
        elif stored.run_id is not None:
            outcome = "deleted"
        next_at = self.next_beat(agent_id) if area.enabled else None
        return {"last_beat_at": iso(stored.beat_at), "last_run_id": stored.run_id,
                "last_outcome": outcome, "next_beat_at": iso(next_at),
                "last_skip_at": iso(stored.skip_at),
                "last_skip_reason": stored.skip_reason}

