"""A thread's values (its state: the messages of its session), kept as JSON."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import orjson

from agentd.assembly import Runtime
from agentd.events import TERMINAL_KINDS
from agentd.protocols.langgraph._wire import values_of
from agentd.runtime import Subscription
from agentd.store.records import EventRecord

__all__ = ["ThreadValues"]


class ThreadValues:
    """Threads' values (their messages) as JSON, each folded from its session's log
    once and then only from the events after it, and kept serialised: a turn appends
    its messages' JSON rather than reading the whole log and serialising the whole
    thread again. (``runs/wait`` answers with the thread's whole state, as LangGraph's
    API does, so the answer still grows with the thread: by a copy of bytes.) The log
    is append-only, so a fold never goes stale; the cache is bounded in threads and in
    bytes and only saves work (a restart starts it empty)."""

    def __init__(self, size: int = 4096, max_bytes: int = 64 << 20) -> None:
        self.size, self.max_bytes = size, max_bytes
        #: session id -> (last seq folded, the JSON array of its messages)
        self._folded: OrderedDict[str, tuple[int, bytes]] = OrderedDict()
        self._bytes = 0

    async def of(self, runtime: Runtime, session_id: str) -> dict[str, Any]:
        """``{"messages": [...]}`` (the list pre-serialised, for orjson), folded from
        the log up to now."""
        last, array = self._take(session_id)
        events = await runtime.read_events(session_id, after=last)
        return self._keep(session_id, events[-1].seq if events else last,
                          self._extend(array, events))

    def after_run(self, session_id: str, known: list[EventRecord] | None,
                  sub: Subscription, run_id: str) -> dict[str, Any] | None:
        """As :meth:`of` once the run ``run_id`` ended, from what its sender holds with
        no read: ``known`` (the send's events) and what ``sub`` (opened right after
        the send) received, if they carry on from the fold with no gap up to the run's
        end. None when they do not (the fold is cold, the subscription lagged,
        something else was logged in between): read with :meth:`of`."""
        kept = self._folded.get(session_id)
        if kept is None or sub.lagged:
            return None
        last, array = kept
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
            if event.seq != last + 1:
                return None
            last = event.seq
            fresh.append(event)
            ended = ended or (event.run_id == run_id and event.kind in TERMINAL_KINDS)
        if not ended:
            return None
        self._take(session_id)
        return self._keep(session_id, last, self._extend(array, fresh))

    def _take(self, session_id: str) -> tuple[int, bytes]:
        kept = self._folded.pop(session_id, None)
        if kept is None:
            return 0, b"[]"
        self._bytes -= len(kept[1])
        return kept

    @staticmethod
    def _extend(array: bytes, events: list[EventRecord]) -> bytes:
        messages = values_of(events)["messages"] if events else []
        if not messages:
            return array
        more = orjson.dumps(messages)
        return more if array == b"[]" else array[:-1] + b"," + more[1:]

    def _keep(self, session_id: str, last: int, array: bytes) -> dict[str, Any]:
        if last and len(array) <= self.max_bytes:
            self._folded[session_id] = (last, array)
            self._bytes += len(array)
            while len(self._folded) > self.size or self._bytes > self.max_bytes:
                _, (_, dropped) = self._folded.popitem(last=False)
                self._bytes -= len(dropped)
        return {"messages": orjson.Fragment(array)}
