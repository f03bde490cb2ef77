"""Webhooks' SQL: subscriptions, the cursor of each (subscription, session), and the
deliveries; the :class:`WebhookStore` mixin :class:`agentd.store.Store` inherits.

**Turning events into deliveries** (:func:`ingest`) is one transaction per session:
the enabled subscriptions of the session's agent with their cursors (the last seq each
has seen in that session), the events after the lowest cursor (a bounded batch), a
delivery row for each event a subscription's kinds match, and every cursor moved
forward to the last event read. A delivery's id is derived from (subscription,
session, seq) and inserted ``ON CONFLICT DO NOTHING``: two nodes, or a rescan after a
crash, cannot make a second delivery of one event; a cursor only ever moves forward.
A subscription starts at each existing session's current ``last_seq`` (its cursors are
made with it) and at 0 in sessions made later; re-enabled, it starts again from now.

**Sending** (:func:`claim_due`): due pending deliveries are leased to one node
(``lease_owner``, ``lease_until``; ``FOR UPDATE SKIP LOCKED`` on PostgreSQL, SQLite has
one writer), and the attempt's outcome is written only by the lease's holder
(:func:`finish_attempt`). A node that dies mid-attempt leaves a lease that expires (or
that the same node drops when it starts again): the delivery is sent again, with the
same id (at least once).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from agentd.errors import Conflict, NotFound
from agentd.store.engine import Engine, Tx
from agentd.store.records import EventRecord
from agentd.store.rows import EVENT_COLS, dumps, event

__all__ = ["DELIVERY_STATUSES", "DeliveryRecord", "WebhookRecord", "WebhookStore",
           "delivery_id"]

DELIVERY_STATUSES = ("pending", "delivered", "failed")

_HOOK_COLS = ("w.id, w.agent_id, a.name, w.url, w.kinds, w.description, w.enabled, "
              "w.secret, w.created_at, w.updated_at")
_DELIVERY_COLS = ("d.id, d.webhook_id, d.session_id, d.seq, d.kind, d.body, d.status, "
                  "d.attempts, d.attempt_limit, d.next_attempt_at, d.lease_owner, "
                  "d.lease_until, d.last_status, d.last_error, d.last_attempt_at, "
                  "d.created_at, d.delivered_at")
_INSERT_DELIVERY = (
    "INSERT INTO webhook_deliveries (id, webhook_id, session_id, seq, kind, body, status, "
    "attempts, attempt_limit, next_attempt_at, created_at) "
    "VALUES (?, ?, ?, ?, ?, ?, 'pending', 0, ?, ?, ?) ON CONFLICT (id) DO NOTHING")

#: ``body_of(delivery_id, webhook, agent, session key, event) -> body``
BodyOf = Callable[[str, "WebhookRecord", str, str, EventRecord], str]
#: Whether a subscription's kinds take an event kind.
Wants = Callable[[Sequence[str], str], bool]


def delivery_id(webhook_id: str, session_id: str, seq: int) -> str:
    """The id of the delivery of event ``seq`` of a session to a subscription: the same
    whoever makes it, whenever (receivers de-duplicate on it)."""
    digest = hashlib.sha256(f"{webhook_id}\x00{session_id}\x00{seq}".encode()).hexdigest()
    return f"whd_{digest[:32]}"


@dataclass(kw_only=True, slots=True)
class WebhookRecord:
    id: str
    agent_id: str
    agent: str
    url: str
    kinds: list[str]
    description: str
    enabled: bool
    secret: str
    created_at: float
    updated_at: float


@dataclass(kw_only=True, slots=True)
class DeliveryRecord:
    id: str
    webhook_id: str
    #: None for a ping.
    session_id: str | None
    seq: int | None
    kind: str
    body: str
    status: str
    attempts: int
    #: The attempt count at which it is given up (a replay raises it).
    attempt_limit: int
    next_attempt_at: float
    lease_owner: str | None
    lease_until: float | None
    last_status: int | None
    last_error: str | None
    last_attempt_at: float | None
    created_at: float
    delivered_at: float | None


def _hook(row: Sequence[Any]) -> WebhookRecord:
    return WebhookRecord(id=row[0], agent_id=row[1], agent=row[2], url=row[3],
                         kinds=orjson.loads(row[4]), description=row[5],
                         enabled=bool(row[6]), secret=row[7], created_at=float(row[8]),
                         updated_at=float(row[9]))


def _delivery(row: Sequence[Any]) -> DeliveryRecord:
    return DeliveryRecord(
        id=row[0], webhook_id=row[1], session_id=row[2],
        seq=None if row[3] is None else int(row[3]), kind=row[4], body=row[5],
        status=row[6], attempts=int(row[7]), attempt_limit=int(row[8]),
        next_attempt_at=float(row[9]), lease_owner=row[10], lease_until=row[11],
        last_status=None if row[12] is None else int(row[12]), last_error=row[13],
        last_attempt_at=row[14], created_at=float(row[15]), delivered_at=row[16])


def _get(tx: Tx, webhook_id: str) -> WebhookRecord:
    row = tx.one(f"SELECT {_HOOK_COLS} FROM webhooks w JOIN agents a ON a.id = w.agent_id "
                 "WHERE w.id = ?", (webhook_id,))
    if row is None:
        raise NotFound(f"webhook {webhook_id!r} not found", code="webhook_not_found")
    return _hook(row)


def _start_cursors(tx: Tx, webhook_id: str, agent_id: str) -> None:
    """Every session of the agent: the subscription starts after its current last seq."""
    tx.execute(
        "INSERT INTO webhook_cursors (webhook_id, session_id, seq) "
        "SELECT ?, id, last_seq FROM sessions WHERE agent_id = ? "
        "ON CONFLICT (webhook_id, session_id) DO UPDATE SET seq = excluded.seq "
        "WHERE webhook_cursors.seq < excluded.seq", (webhook_id, agent_id))


def _insert(tx: Tx, rec: WebhookRecord, max_per_agent: int) -> WebhookRecord:
    row = tx.one("SELECT COUNT(*) FROM webhooks WHERE agent_id = ?", (rec.agent_id,))
    if row is not None and int(row[0]) >= max_per_agent:
        raise Conflict(f"the agent has {max_per_agent} webhooks, the most the daemon "
                       "allows ([webhooks] max_per_agent)", code="webhook_limit")
    tx.execute("INSERT INTO webhooks (id, agent_id, url, kinds, description, enabled, "
               "secret, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
               (rec.id, rec.agent_id, rec.url, dumps(rec.kinds), rec.description,
                int(rec.enabled), rec.secret, rec.created_at, rec.updated_at))
    _start_cursors(tx, rec.id, rec.agent_id)
    return _get(tx, rec.id)


def _update(tx: Tx, webhook_id: str, change: dict[str, Any], now: float) -> WebhookRecord:
    before = _get(tx, webhook_id)
    sets: list[str] = ["updated_at = ?"]
    params: list[Any] = [now]
    for name in ("url", "kinds", "description", "enabled", "secret"):
        if name in change:
            value = change[name]
            sets.append(f"{name} = ?")
            params.append(dumps(value) if name == "kinds" else
                          int(value) if name == "enabled" else value)
    tx.execute(f"UPDATE webhooks SET {', '.join(sets)} WHERE id = ?", (*params, webhook_id))
    if change.get("enabled") and not before.enabled:
        # Events logged while it was off are not sent: it starts again from now.
        _start_cursors(tx, webhook_id, before.agent_id)
    return _get(tx, webhook_id)


def _ingest(tx: Tx, session_id: str, *, now: float, batch: int, attempt_limit: int,
            wants: Wants, body_of: BodyOf) -> tuple[int, bool]:
    row = tx.one("SELECT s.agent_id, s.key, s.last_seq, a.name FROM sessions s "
                 "JOIN agents a ON a.id = s.agent_id WHERE s.id = ?", (session_id,))
    if row is None:
        return 0, False
    agent_id, key, last_seq, agent = str(row[0]), str(row[1]), int(row[2]), str(row[3])
    rows = tx.all(f"SELECT {_HOOK_COLS}, c.seq FROM webhooks w "
                  "JOIN agents a ON a.id = w.agent_id "
                  "LEFT JOIN webhook_cursors c ON c.webhook_id = w.id AND c.session_id = ? "
                  "WHERE w.agent_id = ? AND w.enabled = 1 ORDER BY w.id",  # (lock order)
                  (session_id, agent_id))
    hooks = [(_hook(r), int(r[10] or 0)) for r in rows]
    hooks = [(h, seen) for h, seen in hooks if seen < last_seq]
    if not hooks:
        return 0, False
    low = min(seen for _, seen in hooks)
    events = [event(r) for r in tx.all(
        f"SELECT {EVENT_COLS} FROM events WHERE session_id = ? AND seq > ? "
        "ORDER BY seq LIMIT ?", (session_id, low, batch))]
    if not events:
        return 0, False
    top = events[-1].seq
    made: list[tuple[Any, ...]] = []
    for hook, seen in hooks:
        for ev in events:
            if ev.seq > seen and wants(hook.kinds, ev.kind):
                did = delivery_id(hook.id, session_id, ev.seq)
                made.append((did, hook.id, session_id, ev.seq, ev.kind,
                             body_of(did, hook, agent, key, ev), attempt_limit, now, now))
    if made:
        tx.executemany(_INSERT_DELIVERY, made)
    tx.executemany(
        "INSERT INTO webhook_cursors (webhook_id, session_id, seq) VALUES (?, ?, ?) "
        "ON CONFLICT (webhook_id, session_id) DO UPDATE SET seq = excluded.seq "
        "WHERE webhook_cursors.seq < excluded.seq",
        [(hook.id, session_id, top) for hook, seen in hooks if seen < top])
    return len(made), top < last_seq


def _claim(tx: Tx, *, owner: str, now: float, lease_s: float, limit: int, dialect: str
           ) -> list[tuple[DeliveryRecord, str, str]]:
    lock = dialect == "postgresql"  # SQLite: one writer
    # (A disabled subscription's deliveries wait until it is enabled again.)
    ids = [str(r[0]) for r in tx.all(
        "SELECT d.id FROM webhook_deliveries d JOIN webhooks w ON w.id = d.webhook_id "
        "WHERE d.status = 'pending' AND d.next_attempt_at <= ? AND w.enabled = 1 "
        "AND (d.lease_until IS NULL OR d.lease_until < ?) "
        f"ORDER BY d.next_attempt_at LIMIT ?{' FOR UPDATE OF d SKIP LOCKED' if lock else ''}",
        (now, now, limit))]
    if not ids:
        return []
    marks = ", ".join("?" * len(ids))
    tx.execute(f"UPDATE webhook_deliveries SET lease_owner = ?, lease_until = ? "
               f"WHERE id IN ({marks})", (owner, now + lease_s, *ids))
    rows = tx.all(f"SELECT {_DELIVERY_COLS}, w.url, w.secret FROM webhook_deliveries d "
                  f"JOIN webhooks w ON w.id = d.webhook_id WHERE d.id IN ({marks}) "
                  "ORDER BY d.next_attempt_at", ids)
    return [(_delivery(r), str(r[17]), str(r[18])) for r in rows]


def _page(tx: Tx, webhook_id: str, *, status: str | None, before: str | None,
          limit: int) -> list[DeliveryRecord]:
    _get(tx, webhook_id)
    where, params = ["d.webhook_id = ?"], [webhook_id]
    if status is not None:
        where.append("d.status = ?")
        params.append(status)
    if before is not None:
        mark = tx.one("SELECT created_at FROM webhook_deliveries WHERE id = ? "
                      "AND webhook_id = ?", (before, webhook_id))
        if mark is None:
            raise NotFound(f"delivery {before!r} (before) not found",
                           code="delivery_not_found")
        where.append("(d.created_at < ? OR (d.created_at = ? AND d.id < ?))")
        params += [mark[0], mark[0], before]
    rows = tx.all(f"SELECT {_DELIVERY_COLS} FROM webhook_deliveries d "
                  f"WHERE {' AND '.join(where)} ORDER BY d.created_at DESC, d.id DESC "
                  "LIMIT ?", (*params, limit))
    return [_delivery(r) for r in rows]


def _prune(tx: Tx, *, before: float, limit: int) -> int:
    """Delete up to ``limit`` delivered or failed deliveries made before ``before``,
    oldest first, subscription by subscription (their ``(webhook_id, created_at)``
    index: no scan of the whole table). Pending ones are kept whatever their age.
    Their cursors stay where they are, so an event is never delivered again."""
    removed = 0
    for (webhook_id,) in tx.all("SELECT id FROM webhooks ORDER BY id", ()):
        if removed >= limit:
            break
        ids = [r[0] for r in tx.all(
            "SELECT id FROM webhook_deliveries WHERE webhook_id = ? AND created_at < ? "
            "AND status IN ('delivered', 'failed') ORDER BY created_at, id LIMIT ?",
            (webhook_id, before, limit - removed))]
        if ids:
            tx.execute(f"DELETE FROM webhook_deliveries WHERE id IN "
                       f"({', '.join('?' * len(ids))})", tuple(ids))
            removed += len(ids)
    return removed


def _get_delivery(tx: Tx, delivery: str) -> DeliveryRecord:
    row = tx.one(f"SELECT {_DELIVERY_COLS} FROM webhook_deliveries d WHERE d.id = ?",
                 (delivery,))
    if row is None:
        raise NotFound(f"delivery {delivery!r} not found", code="delivery_not_found")
    return _delivery(row)


def _replay(tx: Tx, delivery: str, *, now: float, attempts: int) -> DeliveryRecord:
    rec = _get_delivery(tx, delivery)
    tx.execute("UPDATE webhook_deliveries SET status = 'pending', next_attempt_at = ?, "
               "attempt_limit = attempts + ? WHERE id = ?", (now, attempts, delivery))
    return _get_delivery(tx, rec.id)


class WebhookStore:
    """The Store's webhook methods (one transaction each)."""

    engine: Engine

    async def insert_webhook(self, rec: WebhookRecord, *, max_per_agent: int
                             ) -> WebhookRecord:
        return await self.engine.write(lambda tx: _insert(tx, rec, max_per_agent))

    async def get_webhook(self, webhook_id: str) -> WebhookRecord:
        return await self.engine.read(lambda tx: _get(tx, webhook_id))

    async def list_webhooks(self, *, agent_id: str | None = None, after: str | None = None,
                            limit: int = 100, agent_ids: Sequence[str] | None = None
                            ) -> list[WebhookRecord]:
        where: list[str] = ["1 = 1"]
        params: list[Any] = []
        if agent_ids is not None:
            if not agent_ids:
                return []
            where.append(f"w.agent_id IN ({', '.join('?' for _ in agent_ids)})")
            params.extend(agent_ids)
        if agent_id is not None:
            where.append("w.agent_id = ?")
            params.append(agent_id)
        if after is not None:
            where.append("w.id > ?")
            params.append(after)
        rows = await self.engine.read(lambda tx: tx.all(
            f"SELECT {_HOOK_COLS} FROM webhooks w JOIN agents a ON a.id = w.agent_id "
            f"WHERE {' AND '.join(where)} ORDER BY w.id LIMIT ?", (*params, limit)))
        return [_hook(r) for r in rows]

    async def update_webhook(self, webhook_id: str, change: dict[str, Any], *, now: float
                             ) -> WebhookRecord:
        return await self.engine.write(lambda tx: _update(tx, webhook_id, change, now))

    async def delete_webhook(self, webhook_id: str) -> None:
        def op(tx: Tx) -> None:
            tx.execute("DELETE FROM webhooks WHERE id = ?", (webhook_id,))
            if tx.rowcount == 0:
                raise NotFound(f"webhook {webhook_id!r} not found",
                               code="webhook_not_found")

        await self.engine.write(op)

    async def webhook_counts(self, webhook_id: str) -> dict[str, int]:
        """Deliveries of a subscription by status."""
        rows = await self.engine.read(lambda tx: tx.all(
            "SELECT status, COUNT(*) FROM webhook_deliveries WHERE webhook_id = ? "
            "GROUP BY status", (webhook_id,)))
        return {**dict.fromkeys(DELIVERY_STATUSES, 0), **{str(r[0]): int(r[1]) for r in rows}}

    async def sessions_behind(self, limit: int) -> list[str]:
        """Sessions with events no enabled subscription of their agent has seen yet."""
        rows = await self.engine.read(lambda tx: tx.all(
            "SELECT DISTINCT s.id FROM webhooks w JOIN sessions s ON s.agent_id = w.agent_id "
            "LEFT JOIN webhook_cursors c ON c.webhook_id = w.id AND c.session_id = s.id "
            "WHERE w.enabled = 1 AND s.last_seq > COALESCE(c.seq, 0) LIMIT ?", (limit,)))
        return [str(r[0]) for r in rows]

    async def behind_among(self, session_ids: Sequence[str]) -> list[str]:
        """Which of these sessions have events an enabled subscription has not seen (a
        read: most sessions of a busy daemon have no subscriber)."""
        ids = list(session_ids)
        if not ids:
            return []
        marks = ", ".join("?" * len(ids))
        rows = await self.engine.read(lambda tx: tx.all(
            "SELECT DISTINCT s.id FROM sessions s JOIN webhooks w ON w.agent_id = s.agent_id "
            "LEFT JOIN webhook_cursors c ON c.webhook_id = w.id AND c.session_id = s.id "
            f"WHERE s.id IN ({marks}) AND w.enabled = 1 AND s.last_seq > COALESCE(c.seq, 0)",
            ids))
        return [str(r[0]) for r in rows]

    async def ingest_webhooks(self, session_id: str, *, now: float, batch: int,
                              attempt_limit: int, wants: Wants, body_of: BodyOf
                              ) -> tuple[int, bool]:
        """Deliveries for a batch of the session's new events; (made, more to read)."""
        return await self.engine.write(lambda tx: _ingest(
            tx, session_id, now=now, batch=batch, attempt_limit=attempt_limit,
            wants=wants, body_of=body_of))

    async def insert_delivery(self, *, delivery: str, webhook_id: str, kind: str, body: str,
                              attempt_limit: int, now: float) -> DeliveryRecord:
        """A delivery of no event (a ping)."""
        def op(tx: Tx) -> DeliveryRecord:
            _get(tx, webhook_id)
            tx.execute(_INSERT_DELIVERY, (delivery, webhook_id, None, None, kind, body,
                                          attempt_limit, now, now))
            return _get_delivery(tx, delivery)

        return await self.engine.write(op)

    async def claim_deliveries(self, *, owner: str, now: float, lease_s: float, limit: int
                               ) -> list[tuple[DeliveryRecord, str, str]]:
        """Lease due deliveries to ``owner``: (delivery, url, secret) each."""
        dialect = self.engine.dialect
        return await self.engine.write(lambda tx: _claim(
            tx, owner=owner, now=now, lease_s=lease_s, limit=limit, dialect=dialect))

    async def finish_attempt(self, delivery: str, *, owner: str, now: float,
                             delivered: bool, next_attempt_at: float | None,
                             status_code: int | None, error: str | None) -> bool:
        """Record an attempt's outcome (only while ``owner`` holds the lease): delivered,
        pending again at ``next_attempt_at``, or failed when that is None."""
        status = "delivered" if delivered else (
            "pending" if next_attempt_at is not None else "failed")

        def op(tx: Tx) -> bool:
            tx.execute(
                "UPDATE webhook_deliveries SET status = ?, attempts = attempts + 1, "
                "next_attempt_at = ?, last_status = ?, last_error = ?, "
                "last_attempt_at = ?, delivered_at = CASE WHEN ? = 1 THEN ? "
                "ELSE delivered_at END, lease_owner = NULL, lease_until = NULL "
                "WHERE id = ? AND lease_owner = ?",
                (status, next_attempt_at if next_attempt_at is not None else now,
                 status_code, error, now, int(delivered), now, delivery, owner))
            return tx.rowcount > 0

        return await self.engine.write(op)

    async def release_deliveries(self, owner: str | None) -> int:
        """Drop leases (``owner``'s, or every one): their deliveries are due again."""
        def op(tx: Tx) -> int:
            if owner is None:
                tx.execute("UPDATE webhook_deliveries SET lease_owner = NULL, "
                           "lease_until = NULL WHERE lease_owner IS NOT NULL")
            else:
                tx.execute("UPDATE webhook_deliveries SET lease_owner = NULL, "
                           "lease_until = NULL WHERE lease_owner = ?", (owner,))
            return tx.rowcount

        return await self.engine.write(op)

    async def next_delivery_due(self) -> float | None:
        row = await self.engine.read(lambda tx: tx.one(
            "SELECT MIN(CASE WHEN d.lease_until IS NOT NULL "
            "AND d.lease_until > d.next_attempt_at THEN d.lease_until "
            "ELSE d.next_attempt_at END) FROM webhook_deliveries d "
            "JOIN webhooks w ON w.id = d.webhook_id "
            "WHERE d.status = 'pending' AND w.enabled = 1"))
        return None if row is None or row[0] is None else float(row[0])

    async def list_deliveries(self, webhook_id: str, *, status: str | None = None,
                              before: str | None = None, limit: int = 50
                              ) -> list[DeliveryRecord]:
        """A subscription's deliveries, newest first."""
        return await self.engine.read(lambda tx: _page(tx, webhook_id, status=status,
                                                       before=before, limit=limit))

    async def prune_deliveries(self, *, before: float, limit: int = 10_000) -> int:
        """Delete delivered and failed deliveries made before ``before`` (at most
        ``limit`` in one transaction); how many."""
        return await self.engine.write(lambda tx: _prune(tx, before=before, limit=limit))

    async def get_delivery(self, delivery: str) -> DeliveryRecord:
        return await self.engine.read(lambda tx: _get_delivery(tx, delivery))

    async def replay_delivery(self, delivery: str, *, now: float, attempts: int
                              ) -> DeliveryRecord:
        """Send a delivery again (same id): pending now, with ``attempts`` more tries."""
        return await self.engine.write(lambda tx: _replay(tx, delivery, now=now,
                                                          attempts=attempts))
