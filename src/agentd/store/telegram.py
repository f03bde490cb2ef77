"""The Telegram channel's own tables (migration 13): its inbox and its chats.

``telegram_inbox`` holds every update a webhook acknowledged, keyed by
``(agent_id, update_id)``: the insert that acknowledges an update is a no-op for a
replay, so an update is handed to its agent once at most (and that hand-over carries
the idempotency key ``telegram:<update_id>``, so a crash between it and
:meth:`TelegramStore.finish` repeats nothing either). ``telegram_chats`` binds a chat
to its session and holds the delivery cursor (see :class:`ChatRow`).

Used only by :mod:`agentd.channels.telegram`; each method is one transaction.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from agentd.store.engine import Engine, Tx

__all__ = ["ChatRow", "InboxRow", "TelegramStore"]

#: What an inbox row may become (``pending`` until the worker is done with it).
INBOX_STATUSES = ("pending", "done", "skipped", "refused", "failed")


@dataclass(kw_only=True, slots=True, frozen=True)
class InboxRow:
    agent_id: str
    update_id: int
    chat_id: int | None
    body: str
    status: str
    attempts: int
    error: str | None
    run_id: str | None
    received_at: float


@dataclass(kw_only=True, slots=True, frozen=True)
class ChatRow:
    """A chat bound to its session. Every event up to ``delivered_seq`` was handled
    (sent, or nothing to send); ``partial_parts`` parts of the split message at
    ``partial_seq`` were sent already (a restart sends only the rest)."""

    agent_id: str
    chat_id: int
    session_key: str
    session_id: str | None
    delivered_seq: int
    partial_seq: int
    partial_parts: int
    sent: int
    last_error: str | None


_INBOX = ("agent_id, update_id, chat_id, body, status, attempts, error, run_id, "
          "received_at")
_CHAT = ("agent_id, chat_id, session_key, session_id, delivered_seq, partial_seq, "
         "partial_parts, sent, last_error")


def _inbox(row: tuple[Any, ...]) -> InboxRow:
    return InboxRow(agent_id=str(row[0]), update_id=int(row[1]),
                    chat_id=None if row[2] is None else int(row[2]), body=str(row[3]),
                    status=str(row[4]), attempts=int(row[5]), error=row[6], run_id=row[7],
                    received_at=float(row[8]))


def _chat(row: tuple[Any, ...]) -> ChatRow:
    return ChatRow(agent_id=str(row[0]), chat_id=int(row[1]), session_key=str(row[2]),
                   session_id=row[3], delivered_seq=int(row[4]), partial_seq=int(row[5]),
                   partial_parts=int(row[6]), sent=int(row[7]), last_error=row[8])


class TelegramStore:
    """The channel's tables on the store's engine."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    # -- inbox --------------------------------------------------------------------------

    async def receive(self, *, agent_id: str, update_id: int, chat_id: int | None,
                      body: str, status: str = "pending", error: str | None = None
                      ) -> bool:
        """Record an acknowledged update; False (nothing written) for a replay."""
        now = time.time()

        def write(tx: Tx) -> bool:
            tx.execute(
                "INSERT INTO telegram_inbox (agent_id, update_id, chat_id, body, status, "
                "error, received_at, done_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (agent_id, update_id) DO NOTHING",
                (agent_id, update_id, chat_id, body, status, error, now,
                 None if status == "pending" else now))
            fresh = tx.rowcount > 0
            if fresh and status == "pending" and chat_id is not None:
                # The chat's row (its lease) exists from its first update on.
                tx.execute(
                    "INSERT INTO telegram_chats (agent_id, chat_id, session_key, "
                    "created_at, updated_at) VALUES (?, ?, ?, ?, ?) "
                    "ON CONFLICT (agent_id, chat_id) DO NOTHING",
                    (agent_id, chat_id, f"telegram:{chat_id}", now, now))
            return fresh

        return await self.engine.write(write)

    async def pending_chats(self) -> list[tuple[str, int]]:
        """``(agent_id, chat_id)`` of every chat with updates still to hand over."""
        rows = await self.engine.read(lambda tx: tx.all(
            "SELECT DISTINCT agent_id, chat_id FROM telegram_inbox "
            "WHERE status = 'pending'"))
        return [(str(r[0]), int(r[1])) for r in rows]

    async def next_pending(self, agent_id: str, chat_id: int) -> InboxRow | None:
        """The chat's oldest update (by ``update_id``) still to hand over."""
        row = await self.engine.read(lambda tx: tx.one(
            f"SELECT {_INBOX} FROM telegram_inbox WHERE status = 'pending' "
            "AND agent_id = ? AND chat_id = ? ORDER BY update_id LIMIT 1",
            (agent_id, chat_id)))
        return None if row is None else _inbox(row)

    async def finish(self, agent_id: str, update_id: int, *, status: str,
                     run_id: str | None = None, error: str | None = None) -> None:
        now = time.time()
        await self.engine.write(lambda tx: tx.execute(
            "UPDATE telegram_inbox SET status = ?, run_id = ?, error = ?, done_at = ? "
            "WHERE agent_id = ? AND update_id = ?",
            (status, run_id, error, now, agent_id, update_id)))

    async def attempt_failed(self, agent_id: str, update_id: int, error: str) -> int:
        """Count a failed attempt (the update stays pending); the attempts so far."""
        def write(tx: Tx) -> int:
            tx.execute("UPDATE telegram_inbox SET attempts = attempts + 1, error = ? "
                       "WHERE agent_id = ? AND update_id = ?", (error, agent_id, update_id))
            row = tx.one("SELECT attempts FROM telegram_inbox WHERE agent_id = ? "
                         "AND update_id = ?", (agent_id, update_id))
            return 0 if row is None else int(row[0])

        return await self.engine.write(write)

    async def inbox_counts(self, agent_id: str) -> dict[str, int]:
        rows = await self.engine.read(lambda tx: tx.all(
            "SELECT status, COUNT(*) FROM telegram_inbox WHERE agent_id = ? "
            "GROUP BY status", (agent_id,)))
        counts = dict.fromkeys(INBOX_STATUSES, 0)
        counts.update({str(r[0]): int(r[1]) for r in rows})
        return counts

    async def inbox_page(self, agent_id: str, limit: int) -> list[InboxRow]:
        """The agent's latest updates, newest first."""
        rows = await self.engine.read(lambda tx: tx.all(
            f"SELECT {_INBOX} FROM telegram_inbox WHERE agent_id = ? "
            "ORDER BY update_id DESC LIMIT ?", (agent_id, limit)))
        return [_inbox(r) for r in rows]

    async def prune(self, before: float) -> int:
        """Delete handled updates done before ``before`` (epoch seconds)."""
        def write(tx: Tx) -> int:
            tx.execute("DELETE FROM telegram_inbox WHERE status <> 'pending' "
                       "AND done_at < ?", (before,))
            return tx.rowcount

        return await self.engine.write(write)

    # -- chats --------------------------------------------------------------------------

    async def bind(self, *, agent_id: str, chat_id: int, session_key: str,
                   session_id: str, after_seq: int) -> ChatRow:
        """Bind the chat to its session, delivering what follows ``after_seq``; a chat
        bound already keeps its cursor unless its session is a new one (the old one was
        deleted), whose cursor starts at ``after_seq``."""
        now = time.time()

        def write(tx: Tx) -> ChatRow:
            tx.execute(
                "INSERT INTO telegram_chats (agent_id, chat_id, session_key, session_id, "
                "delivered_seq, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (agent_id, chat_id) DO UPDATE SET "
                "session_id = excluded.session_id, delivered_seq = excluded.delivered_seq, "
                "partial_seq = 0, partial_parts = 0, updated_at = excluded.updated_at "
                "WHERE telegram_chats.session_id IS NULL "
                "OR telegram_chats.session_id <> excluded.session_id",
                (agent_id, chat_id, session_key, session_id, after_seq, now, now))
            row = tx.one(f"SELECT {_CHAT} FROM telegram_chats WHERE agent_id = ? "
                         "AND chat_id = ?", (agent_id, chat_id))
            assert row is not None
            return _chat(row)

        return await self.engine.write(write)

    async def hold(self, agent_id: str, chat_id: int, owner: str, ttl_s: float) -> bool:
        """Take or renew the chat's lease for ``owner``; whether it is held (False: a
        live lease of another node, or no such chat)."""
        now = time.time()

        def write(tx: Tx) -> bool:
            tx.execute(
                "UPDATE telegram_chats SET lease_owner = ?, lease_until = ? "
                "WHERE agent_id = ? AND chat_id = ? AND (lease_owner IS NULL "
                "OR lease_owner = ? OR lease_until < ?)",
                (owner, now + ttl_s, agent_id, chat_id, owner, now))
            return tx.rowcount > 0

        return await self.engine.write(write)

    async def release(self, owner: str) -> None:
        """Give up every lease of ``owner`` (a clean shutdown: others take over now)."""
        await self.engine.write(lambda tx: tx.execute(
            "UPDATE telegram_chats SET lease_owner = NULL, lease_until = 0 "
            "WHERE lease_owner = ?", (owner,)))

    async def chats(self, agent_id: str | None = None) -> list[ChatRow]:
        if agent_id is None:
            rows = await self.engine.read(lambda tx: tx.all(
                f"SELECT {_CHAT} FROM telegram_chats"))
        else:
            rows = await self.engine.read(lambda tx: tx.all(
                f"SELECT {_CHAT} FROM telegram_chats WHERE agent_id = ? ORDER BY chat_id",
                (agent_id,)))
        return [_chat(r) for r in rows]

    async def behind(self) -> list[ChatRow]:
        """The chats whose session has events past their cursor."""
        cols = ", ".join(f"c.{c.strip()}" for c in _CHAT.split(","))
        rows = await self.engine.read(lambda tx: tx.all(
            f"SELECT {cols} FROM telegram_chats c JOIN sessions s ON s.id = c.session_id "
            "WHERE s.last_seq > c.delivered_seq"))
        return [_chat(r) for r in rows]

    async def chat(self, agent_id: str, chat_id: int) -> ChatRow | None:
        row = await self.engine.read(lambda tx: tx.one(
            f"SELECT {_CHAT} FROM telegram_chats WHERE agent_id = ? AND chat_id = ?",
            (agent_id, chat_id)))
        return None if row is None else _chat(row)

    async def advance(self, agent_id: str, chat_id: int, *, session_id: str, seq: int,
                      parts: int = 0, sent: int = 0, error: str | None = None) -> None:
        """Move the chat's cursor: ``parts`` > 0 says that many parts of the message at
        ``seq`` were sent (the event is not done yet); else every event up to ``seq``
        was handled. ``sent``: messages sent, added to the chat's count; ``error``: why
        the last message could not be delivered (kept until the next success)."""
        now = time.time()
        if parts:
            sql = ("UPDATE telegram_chats SET partial_seq = ?, partial_parts = ?, "
                   "sent = sent + ?, updated_at = ? WHERE agent_id = ? AND chat_id = ? "
                   "AND session_id = ?")
            params: tuple[Any, ...] = (seq, parts, sent, now, agent_id, chat_id, session_id)
        else:
            sql = ("UPDATE telegram_chats SET delivered_seq = ?, partial_seq = 0, "
                   "partial_parts = 0, sent = sent + ?, updated_at = ?"
                   + (", last_error = ?" if error is not None or sent else "")
                   + " WHERE agent_id = ? AND chat_id = ? AND session_id = ? "
                   "AND delivered_seq <= ?")
            params = (seq, sent, now,
                      *((error,) if error is not None or sent else ()),
                      agent_id, chat_id, session_id, seq)
        await self.engine.write(lambda tx: tx.execute(sql, params))
