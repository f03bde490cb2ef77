"""A thread's values (its state: the messages of its session), kept as JSON."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import orjson

from agentd.assembly import Runtime
from agentd.events import TERMINAL_KINDS, SessionRestored, kind_of
from agentd.protocols.langgraph._wire import values_of
from agentd.runtime import Subscription
from agentd.store.records import EventRecord, live_events

__all__ = ["ThreadValues", "Values"]

_RESTORED = kind_of(SessionRestored)
#: The most pieces a thread's values are kept in (then joined into one).
_PIECES = 256


class Values:
    """A thread's values, ``{"messages": [...]}``, as the JSON of its messages in
    pieces (each turn's, the first without a comma before it), so an answer is written
    with one copy of them: :meth:`json`, :meth:`frame`."""

    __slots__ = ("pieces",)

    def __init__(self, pieces: tuple[bytes, ...]) -> None:
        self.pieces = pieces

    def json(self, extra: dict[str, Any] | None = None) -> bytes:
        """``{"messages": [...], **extra}``."""
        return b"".join(self.parts(extra))

    def frame(self, event: bytes, extra: dict[str, Any] | None = None) -> bytes:
        """The values as one SSE frame named ``event``."""
        return b"".join([b"event: ", event, b"\ndata: ", *self.parts(extra), b"\n\n"])

    def fragment(self) -> orjson.Fragment:
        """The values, to be put in a bigger object (a thread's state)."""
        return orjson.Fragment(self.json())

    def messages(self) -> list[dict[str, Any]]:
        """The messages, parsed (for a check that needs their ids)."""
        return list(orjson.loads(b"".join([b"[", *self.pieces, b"]"])))

    def parts(self, extra: dict[str, Any] | None = None) -> list[bytes]:
        """:meth:`json` in pieces, to be joined into a bigger answer."""
        tail = b"]}" if not extra else b"]," + orjson.dumps(extra)[1:]
        return [b'{"messages":[', *self.pieces, tail]


class ThreadValues:
    """Threads' values (their messages) as JSON, each folded from its session's log
    once and then only from the events after it, and kept serialised in pieces: a turn
    adds its messages' JSON rather than reading the whole log and serialising the whole
    thread again, or copying what it has. (``runs/wait`` answers with the thread's whole
    state, as LangGraph's API does, so the answer still grows with the thread: by the
    one copy of bytes that writes it.) A restore (``session.restored``, agentd's own
    API) sets the session back: the thread is folded again from its log, restores
    applied. The cache is bounded in threads and in bytes and only saves work (a
    restart starts it empty)."""

    def __init__(self, size: int = 4096, max_bytes: int = 64 << 20) -> None:
        self.size, self.max_bytes = size, max_bytes
        #: session id -> (last seq folded, the JSON of its messages in pieces, bytes)
        self._folded: OrderedDict[str, tuple[int, tuple[bytes, ...], int]] = OrderedDict()
        self._bytes = 0

    async def of(self, runtime: Runtime, session_id: str, upto: int | None = None
                 ) -> Values:
        """The values folded from the log up to now (``upto``: up to that seq, as
        they were then: a run's input state, sent before the run answers)."""
        last, pieces, size = self._take(session_id)
        if upto is not None and last > upto:
            last, pieces, size = 0, (), 0  # folded past it: folded again, up to it
        events = await runtime.read_events(session_id, after=last)
        if last and any(event.kind == _RESTORED for event in events):
            # Set back to an earlier seq: folded again, from the start.
            last, pieces, size = 0, (), 0
            events = await runtime.read_events(session_id)
        if upto is not None:
            events = [event for event in events if event.seq <= upto]
        end = events[-1].seq if events else last
        if not last:
            events = live_events(events)
        return self._keep(session_id, end, *self._extend(pieces, size, events))

    def after_run(self, session_id: str, known: list[EventRecord] | None,
                  sub: Subscription, run_id: str) -> Values | None:
        """As :meth:`of` once the run ``run_id`` ended, from what its sender holds with
        no read: ``known`` (the send's events) and what ``sub`` (opened right after
        the send) received, if they carry on from the fold with no gap up to the run's
        end. None when they do not (the fold is cold, the subscription lagged,
        something else was logged in between, the session was restored): read with
        :meth:`of`."""
        kept = self._folded.get(session_id)
        if kept is None or sub.lagged:
            return None
        last, pieces, size = kept
        events = list(known or ())
        while not sub.queue.empty():
            item = sub.queue.get_nowait()
            if isinstance(item, EventRecord):
                events.append(item)
        fresh: list[EventRecord] = []
        ended = False
        for event in events:
            if event.seq <= last:
                continue
            if event.seq != last + 1 or event.kind == _RESTORED:
                return None
            last = event.seq
            fresh.append(event)
            ended = ended or (event.run_id == run_id and event.kind in TERMINAL_KINDS)
        if not ended:
            return None
        self._take(session_id)
        return self._keep(session_id, last, *self._extend(pieces, size, fresh))

    def _take(self, session_id: str) -> tuple[int, tuple[bytes, ...], int]:
        kept = self._folded.pop(session_id, None)
        if kept is None:
            return 0, (), 0
        self._bytes -= kept[2]
        return kept

    @staticmethod
    def _extend(pieces: tuple[bytes, ...], size: int, events: list[EventRecord]
                ) -> tuple[tuple[bytes, ...], int]:
        messages = values_of(events)["messages"] if events else []
        if not messages:
            return pieces, size
        more = orjson.dumps(messages)
        # The array's inside: "{...},{...}", after a comma when it follows others.
        piece = (b"," + more[1:-1]) if pieces else more[1:-1]
        if len(pieces) >= _PIECES:
            pieces = (b"".join(pieces),)  # (one copy every _PIECES turns)
        return (*pieces, piece), size + len(piece)

    def _keep(self, session_id: str, last: int, pieces: tuple[bytes, ...], size: int
              ) -> Values:
        if last and size <= self.max_bytes:
            self._folded[session_id] = (last, pieces, size)
            self._bytes += size
            while len(self._folded) > self.size or self._bytes > self.max_bytes:
                _, (_, _, dropped) = self._folded.popitem(last=False)
                self._bytes -= dropped
        return Values(pieces)
