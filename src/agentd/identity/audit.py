"""The audit log: every refusal and every change to who may do what, hash-chained.

What is recorded (docs/security.md, "Audit"): every authorization decision that
refuses (a missing, invalid, expired or revoked token; a role without the right; an
operator-only setting from a member; an agent outside the token's scope; a quota),
and every change to tokens, tenants, agents' definitions and settings, sessions'
policies and approvals' decisions, each with the token's name, its role, the action,
the resource, the outcome and why. Tokens themselves never are.

Changes are written in the transaction that makes them where the store allows it
(tokens, tenants, agents), else right after (:meth:`AuditLog.append`). Refusals are
queued and written in batches by one task (:meth:`AuditLog.refused`): a refusal must
not cost the refused request a commit, and a flood of them is capped per actor and
minute (``[audit] refusals_per_minute``): past the cap they are counted, and one row
per actor and minute says how many were not recorded.

:meth:`AuditLog.verify` walks the chain (``agentd audit verify``): a row edited in
place, a row removed, or, against a head noted earlier, rows cut off the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from agentd.store import AuditEntry, AuditRow, Store
from agentd.store.audit import AUDIT_COLS, GENESIS, row_hash

__all__ = ["AuditLog"]

log = logging.getLogger(__name__)

_PAGE = 2000
_NAMES = tuple(c.strip() for c in AUDIT_COLS.split(","))


class AuditLog:
    """Appends to and reads the store's audit log (one per runtime)."""

    def __init__(self, store: Store, *, refusals_per_minute: int = 60,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.clock = clock
        self.limit = refusals_per_minute
        self._queue: list[AuditEntry] = []
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None
        #: (actor key) -> (minute, recorded, suppressed, actor, role)
        self._counts: dict[str, tuple[int, int, int, str | None, str | None]] = {}

    # -- writing --------------------------------------------------------------------

    def entry(self, *, actor: str | None, role: str | None, action: str, resource: str,
              outcome: str = "allowed", reason: str = "",
              details: dict[str, Any] | None = None) -> AuditEntry:
        """An entry stamped with the clock's time (for a store write that records it)."""
        return AuditEntry(actor=actor, role=role, action=action, resource=resource,
                          outcome=outcome, reason=reason, details=details or {},
                          at=self.clock())

    async def append(self, **fields: Any) -> None:
        """Record a change now (its own transaction), in the queue's order."""
        await self.flush()
        await self.store.append_audit([self.entry(**fields)])

    def refused(self, *, actor: str | None, role: str | None, action: str, resource: str,
                reason: str, key: str | None = None,
                details: dict[str, Any] | None = None) -> None:
        """Queue a refusal. ``key`` names whom the per-minute cap counts (default: the
        actor; a request without a valid token should give its client's address)."""
        who = key or actor or "-"
        minute = int(self.clock() // 60)
        seen, recorded, suppressed, _, _ = self._counts.get(
            who, (minute, 0, 0, actor, role))
        if seen != minute:
            self._summarise(who, seen, suppressed, actor, role)
            recorded, suppressed = 0, 0
        if recorded >= self.limit:
            self._counts[who] = (minute, recorded, suppressed + 1, actor, role)
            return
        self._counts[who] = (minute, recorded + 1, suppressed, actor, role)
        self._enqueue(self.entry(actor=actor, role=role, action=action, resource=resource,
                                 outcome="denied", reason=reason, details=details))

    def _summarise(self, who: str, minute: int, suppressed: int, actor: str | None,
                   role: str | None) -> None:
        if suppressed:
            self._enqueue(self.entry(
                actor=actor, role=role, action="request.denied",
                resource="*", outcome="denied",
                reason=f"{suppressed} more refusals in the minute from "
                       f"{time.strftime('%Y-%m-%dT%H:%MZ', time.gmtime(minute * 60))} "
                       "were not recorded one by one ([audit] refusals_per_minute)",
                details={"suppressed": suppressed, "key": who}))

    def _enqueue(self, entry: AuditEntry) -> None:
        self._queue.append(entry)
        self._idle.clear()
        self._wake.set()

    def roll(self) -> int:
        """Write the summaries of finished minutes (a housekeeping job)."""
        minute = int(self.clock() // 60)
        done = [who for who, (seen, *_) in self._counts.items() if seen != minute]
        for who in done:
            seen, _, suppressed, actor, role = self._counts.pop(who)
            self._summarise(who, seen, suppressed, actor, role)
        return len(done)

    async def flush(self) -> None:
        """Wait until everything queued so far is written (or could not be)."""
        if self._task is None:
            await self._write_queued()
            return
        await self._idle.wait()

    async def _write_queued(self) -> None:
        while self._queue:
            batch, self._queue = self._queue[:500], self._queue[500:]
            try:
                await self.store.append_audit(batch)
            except Exception:
                log.exception("could not record %d audit row(s)", len(batch))
        self._idle.set()

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            await self._write_queued()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def close(self) -> None:
        self.roll()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self._write_queued()

    # -- reading --------------------------------------------------------------------

    async def page(self, *, after: int = 0, limit: int = 100, actor: str | None = None,
                   action: str | None = None, outcome: str | None = None,
                   resource: str | None = None) -> list[AuditRow]:
        await self.flush()
        return await self.store.audit_page(after=after, limit=limit, actor=actor,
                                           action=action, outcome=outcome,
                                           resource=resource)

    async def verify(self, head: tuple[int, str] | None = None) -> dict[str, Any]:
        """Walk the whole chain. ``{"ok", "rows", "head": {"seq", "hash"}, "problem":
        null or {"seq", "reason"}}``; ``head``: a (seq, hash) noted earlier, which the
        chain must still hold."""
        await self.flush()
        expected_seq, prev, rows = 1, GENESIS, 0
        after = 0
        last: dict[str, Any] = {"seq": 0, "hash": GENESIS}
        while True:
            page = await self.store.audit_rows(after=after, limit=_PAGE)
            for raw in page:
                row = dict(zip(_NAMES, raw, strict=True))
                seq = int(row["seq"])
                if seq != expected_seq:
                    return _problem(rows, last, expected_seq,
                                    f"row {expected_seq} is missing (the next is {seq})")
                if row["prev"] != prev:
                    return _problem(rows, last, seq, "its link to the row before does "
                                                     "not match (a row was removed or "
                                                     "replaced)")
                digest = row_hash(prev, seq, float(row["at"]), row["actor"], row["role"],
                                  row["action"], row["resource"], row["outcome"],
                                  row["reason"], row["details"])
                if digest != row["hash"]:
                    return _problem(rows, last, seq, "its content does not match its "
                                                     "hash (the row was edited)")
                if head is not None and seq == head[0] and digest != head[1]:
                    return _problem(rows, last, seq, "it is not the row the given head "
                                                     "names")
                prev, expected_seq, rows = digest, seq + 1, rows + 1
                last = {"seq": seq, "hash": digest}
            if len(page) < _PAGE:
                break
            after = int(page[-1][0])
        if head is not None and head[0] > int(last["seq"]):
            return _problem(rows, last, int(last["seq"]) + 1,
                            f"the log ends at row {last['seq']}, before the head given "
                            f"({head[0]}): rows were cut off its end")
        return {"ok": True, "rows": rows, "head": last, "problem": None}


def _problem(rows: int, last: dict[str, Any], seq: int, reason: str) -> dict[str, Any]:
    return {"ok": False, "rows": rows, "head": last, "problem": {"seq": seq,
                                                                 "reason": reason}}
