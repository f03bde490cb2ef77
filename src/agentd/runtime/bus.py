"""In-process fan-out of committed events (and live token previews) to subscribers.

Only events that the store has committed are published. A subscriber has a bounded
buffer; when it falls behind, the bus stops filling it and marks it ``lagged``, and
the subscriber re-reads what it missed from the log (see :func:`follow`). So a slow
client never slows a run and never loses an event.

A :class:`Feed` subscribes to every session's committed events at once (the activity
feed, ``GET /v1/events``). It has no log to re-read from, so when its bounded buffer is
full it counts what it drops and says so (:meth:`Feed.next`), instead of slowing
anyone down. Feeds also carry the committed changes to agents' records
(:meth:`EventBus.publish_agent`: created, updated, paused/resumed/stopped, deleted), in
the order they were published among the events; nothing else subscribes to those.
A ``local`` feed gets only the events this node committed, not those the log follower
reads back from other nodes' commits (``publish(..., remote=True)``), and alone it
makes the follower read nothing. What must see every event and can count it at once
(the metrics) takes a hook (:attr:`EventBus.event_hooks`) instead of a feed: no queue,
no task woken per event.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic

from typing_extensions import TypeVar

from agentd.events import TERMINAL_KINDS
from agentd.store.records import AgentChange, EventRecord

__all__ = ["EventBus", "Feed", "FeedItem", "Lagged", "Subscription", "Token", "follow"]

log = logging.getLogger(__name__)

_BUFFER = 1024
#: Sessions whose last seq the bus remembers for feeds (see EventBus.behind).
_FEED_SESSIONS = 10_000
#: How old (seconds) an event seen by a feed for the first time may be: events another
#: node committed are read back in small batches that may reach a little before the feed
#: began, and nodes' clocks differ a little.
_FEED_SLACK_S = 2.0


@dataclass(kw_only=True, slots=True)
class Token:
    """A live text delta of a run; not stored. ``after`` is the last committed seq.
    ``reset``: drop the partial text this step has shown so far (a retried or fallen
    back model call that answers differently); ``text`` then starts afresh."""

    run_id: str
    text: str
    after: int
    reset: bool = False


Item = EventRecord | Token


class Subscription:
    def __init__(self, bus: EventBus, session_id: str, buffer: int) -> None:
        self._bus = bus
        self.session_id = session_id
        self.queue: asyncio.Queue[Item] = asyncio.Queue(buffer)
        self.lagged = False
        self.closed = False
        #: The seq of the first event buffered since subscribing (None: none yet).
        self.first_seq: int | None = None

    def _offer(self, item: Item) -> None:
        if self.first_seq is None and isinstance(item, EventRecord):
            self.first_seq = item.seq
        if self.lagged:
            return
        try:
            self.queue.put_nowait(item)
        except asyncio.QueueFull:
            self.lagged = True

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._bus._remove(self)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(kw_only=True, slots=True)
class Lagged:
    """What :meth:`Feed.next` returns after its buffer overflowed: ``dropped`` events
    were not delivered."""

    dropped: int


FeedItem = EventRecord | AgentChange
#: (a plain ``Feed`` carries events only)
ItemT = TypeVar("ItemT", bound=FeedItem, default=EventRecord)


class Feed(Generic[ItemT]):
    """A subscription to every session's committed events (no tokens), and with
    ``agents`` to every change to an agent too, in the order they were published;
    bounded: see :meth:`next`."""

    def __init__(self, bus: EventBus, buffer: int, *, agents: bool = False,
                 local: bool = False) -> None:
        self._bus = bus
        self.agents = agents
        #: Only this node's commits (see the module's docstring).
        self.local = local
        self.queue: asyncio.Queue[ItemT | None] = asyncio.Queue(buffer)
        self.closed = False
        #: Events not delivered since the last :class:`Lagged` report.
        self.dropped = 0
        self.since = time.time() - _FEED_SLACK_S

    def _offer(self, event: ItemT) -> None:
        if self.dropped:
            # Keep dropping until the reader has caught up with what it holds, so the
            # gap it is told about is one gap.
            self.dropped += 1
            return
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            self.dropped += 1

    async def next(self, wait_s: float | None = None) -> ItemT | Lagged | None:
        """The next event or agent change; a :class:`Lagged` report when some were
        dropped; None when ``wait_s`` seconds passed with nothing to say, or when the
        bus closed (then :attr:`closed` is true)."""
        if self.queue.empty():
            if self.dropped:
                lagged, self.dropped = Lagged(dropped=self.dropped), 0
                return lagged
            if self.closed:
                return None
        try:
            async with asyncio.timeout(wait_s):
                return await self.queue.get()
        except TimeoutError:
            return None

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._bus._feeds.discard(self)
            if not self._bus._feeds:
                self._bus._feed_last.clear()

    def __enter__(self) -> Feed[ItemT]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class EventBus:
    def __init__(self, buffer: int = _BUFFER) -> None:
        self._subs: dict[str, set[Subscription]] = {}
        self._buffer = buffer
        #: The last seq published, per session with subscribers.
        self._last: dict[str, int] = {}
        self._feeds: set[Feed[Any]] = set()
        #: While feeds are open: the last seq published per session (the most recent
        #: sessions only), so that a feed gets each event once.
        self._feed_last: OrderedDict[str, int] = OrderedDict()
        #: Called with each run-ending event published here (a service's explicit
        #: hook: subtasks cascade cancels and log their children's ends from it). A
        #: hook must be quick and must not raise; it may see an event twice.
        self.run_end_hooks: list[Callable[[EventRecord], None]] = []
        #: Called with every batch of events published here and whether another node
        #: committed them (``remote``): what counts every event without a queue of
        #: its own (the metrics). A hook must be quick; what it raises is logged. A
        #: remote event may come twice (the log follower reads a little back).
        self.event_hooks: list[Callable[[Sequence[EventRecord], bool], None]] = []
        #: Called with every change to an agent published (:meth:`publish_agent`).
        self.agent_hooks: list[Callable[[AgentChange], None]] = []

    def subscribe(self, session_id: str, buffer: int | None = None) -> Subscription:
        sub = Subscription(self, session_id, buffer or self._buffer)
        self._subs.setdefault(session_id, set()).add(sub)
        return sub

    def followers(self, session_id: str | None = None) -> int:
        """How many subscriptions follow ``session_id`` now (open streams, waiters);
        without it, every session's."""
        if session_id is None:
            return sum(map(len, self._subs.values()))
        return len(self._subs.get(session_id, ()))

    def _remove(self, sub: Subscription) -> None:
        subs = self._subs.get(sub.session_id)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self._subs[sub.session_id]
                self._last.pop(sub.session_id, None)

    def subscribe_all(self, buffer: int | None = None, *, local: bool = False
                      ) -> Feed[EventRecord]:
        """A :class:`Feed` of every session's events published from now on (``local``:
        committed by this node)."""
        feed: Feed[EventRecord] = Feed(self, buffer or self._buffer, local=local)
        self._feeds.add(feed)
        return feed

    def subscribe_activity(self, buffer: int | None = None, *, local: bool = False
                           ) -> Feed[FeedItem]:
        """A :class:`Feed` of every session's events and every change to an agent
        published from now on (the activity feed; ``local``: events committed by this
        node, and every change)."""
        feed: Feed[FeedItem] = Feed(self, buffer or self._buffer, agents=True,
                                    local=local)
        self._feeds.add(feed)
        return feed

    def publish(self, events: Sequence[EventRecord], *, remote: bool = False) -> None:
        """Give committed events to their subscribers; ``remote``: another node
        committed them (the log follower), and :attr:`Feed.local` feeds skip them."""
        for event in events:
            subs = self._subs.get(event.session_id)
            if subs:
                for sub in subs:
                    sub._offer(event)
                if event.seq > self._last.get(event.session_id, 0):
                    self._last[event.session_id] = event.seq
        if self._feeds:
            self._publish_feeds(events, remote)
        for events_hook in self.event_hooks:
            try:
                events_hook(events, remote)
            except Exception:
                log.exception("an event hook failed")
        if self.run_end_hooks:
            for event in events:
                if event.kind in TERMINAL_KINDS:
                    for hook in self.run_end_hooks:
                        try:
                            hook(event)
                        except Exception:
                            log.exception("a run-end hook failed")

    def publish_agent(self, change: AgentChange) -> None:
        """Give a committed change to an agent to every feed (the service that made
        it calls this after the commit; another node's, the log follower)."""
        for feed in self._feeds:
            if feed.agents:
                feed._offer(change)
        for hook in self.agent_hooks:
            try:
                hook(change)
            except Exception:
                log.exception("an agent hook failed")

    def _publish_feeds(self, events: Sequence[EventRecord], remote: bool) -> None:
        seen = self._feed_last
        for event in events:
            last = seen.get(event.session_id)
            if last is not None and event.seq <= last:
                continue  # read back from the log again (another node's commit)
            seen[event.session_id] = event.seq
            seen.move_to_end(event.session_id)
            if len(seen) > _FEED_SESSIONS:
                seen.popitem(last=False)
            for feed in self._feeds:
                if (last is not None or event.at >= feed.since) and not (
                        remote and feed.local):
                    feed._offer(event)

    def behind(self, session_id: str, seq: int) -> int | None:
        """If ``session_id`` has subscribers and less than ``seq`` was published to
        them, the last seq published (0: none yet); otherwise None."""
        if session_id not in self._subs:
            if all(feed.local for feed in self._feeds):
                return None
            # A feed wants every session's commits, from any node.
            last = self._feed_last.get(session_id, 0)
            return last if last < seq else None
        last = self._last.get(session_id, 0)
        return last if last < seq else None

    def publish_token(self, session_id: str, token: Token) -> None:
        for sub in self._subs.get(session_id, ()):
            sub._offer(token)

    def close_all(self) -> None:
        """Wake every subscriber so streams can end (used at shutdown)."""
        for session_id in list(self._subs):
            self.close_session(session_id)
        for feed in list(self._feeds):
            feed.closed = True
            with contextlib.suppress(asyncio.QueueFull):
                feed.queue.put_nowait(None)
        self._feeds.clear()
        self._feed_last.clear()

    def close_session(self, session_id: str) -> None:
        """End every stream of ``session_id`` once it has what was published (the
        session was deleted, or the daemon stops)."""
        for sub in list(self._subs.get(session_id, ())):
            sub.closed = True
            with contextlib.suppress(asyncio.QueueFull):
                sub.queue.put_nowait(Token(run_id="", text="", after=-1))


ReadAfter = Callable[[int], Awaitable[list[EventRecord]]]


async def follow(sub: Subscription, read_after: ReadAfter, after: int,
                 known: list[EventRecord] | None = None, heartbeat_s: float | None = None
                 ) -> AsyncIterator[Item | None]:
    """Yield events with seq > ``after`` in order, with no gap and no duplicate, forever.

    The subscription must be opened *before* the first read so nothing committed in
    between is missed. Tokens pass through live; a gap in seq (or a lagged buffer)
    is filled from the log. ``known`` are committed events the caller already holds
    (those right after ``after``): they are used instead of a first read. With
    ``heartbeat_s``, ``None`` is yielded after that long without anything to send.
    """
    last = after
    if known and known[0].seq == after + 1:
        backlog = known
    else:
        backlog = await read_after(last)
    for event in backlog:
        if sub.first_seq is not None and event.seq >= sub.first_seq and not sub.lagged:
            # The rest is buffered, with the live tokens between its events: take it
            # from the buffer so the tokens come in order.
            break
        last = event.seq
        yield event
    while True:
        if sub.closed and sub.queue.empty():
            return
        if sub.lagged:
            # Drain what we have, then catch up from the log and start buffering again.
            while not sub.queue.empty():
                sub.queue.get_nowait()
            sub.lagged = False
            for event in await read_after(last):
                last = event.seq
                yield event
            continue
        if not sub.queue.empty():
            item = sub.queue.get_nowait()
        elif heartbeat_s is None:
            item = await sub.queue.get()
        else:
            try:
                async with asyncio.timeout(heartbeat_s):
                    item = await sub.queue.get()
            except TimeoutError:
                yield None
                continue
        if isinstance(item, Token):
            if item.after < 0:  # the bus closed: everything published before is delivered
                return
            yield item
            continue
        if item.seq <= last:
            continue
        if item.seq > last + 1:
            for event in await read_after(last):
                if event.seq > item.seq:
                    break
                last = event.seq
                yield event
            if last >= item.seq:
                continue
        last = item.seq
        yield item
