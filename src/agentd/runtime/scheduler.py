"""The kernel scheduler: every model call of every run waits its turn here.

A *lane* is what a provider rate-limits: ``provider:model`` when that key has limits
configured, else the provider. Per-model lanes are independent of the provider lane
because providers enforce limits per model: a busy ``openai:gpt-4o`` must not hold back
``openai:gpt-4o-mini``. A lane admits a call when it has a free slot (``concurrency``),
its request bucket holds one request (``rpm``), its token bucket holds the call's
estimated tokens (``tpm``) and the provider has not told it to back off
(:meth:`Scheduler.pause`, from a 429's ``Retry-After``). Lanes without limits admit at once.

Buckets refill at ``limit / 60`` per second and hold ``burst_s`` seconds of it (one
second by default), not a whole minute: providers enforce per-minute limits over
shorter windows (OpenAI documents that 60,000 RPM may be enforced as 1,000 requests per
second), so a full minute's burst at start-up would be refused anyway. A call larger
than the token bucket is admitted when the bucket is full and leaves it in debt;
:meth:`Grant.release` corrects the reservation by what the call really used.

Who goes next in a lane is decided by hierarchical start-time fair queuing (H-SFQ,
Goyal, Vin and Cheng, 1996) over the tree *class -> tenant -> agent -> FIFO*. Each node
keeps a virtual time; a child that becomes backlogged gets the start tag
``max(virtual time, its last finish tag)``, the child with the least start tag is
served, and serving it sets the node's virtual time to that tag and the child's finish
tag to ``start + 1 / weight``. Equal start tags go to the smaller finish tag (the
heavier child), then to the earlier activation. It is preferred here over deficit round
robin because:

* shares are exactly proportional to weights with a cost per call (no quantum to tune),
  at O(log n) a pick;
* a newly backlogged flow (a user's chat) starts at the current virtual time, which no
  backlogged flow's tag is below, so it is served within one pick: an ``interactive``
  call behind a thousand ``background`` ones gets the next free slot, not a round later;
* the hierarchy (class, then tenant, then agent) comes by construction: a tenant with
  ten agents gets the same share as a tenant with one;
* it never starves: every backlogged class keeps its weight's share, so ``batch``
  still gets 1 call in 111 under a continuous ``interactive`` and ``background`` load.

When the lane has nobody waiting and admits the call, :meth:`Scheduler.acquire` grants
it without touching the tree. Everything runs on the event loop: no locks, no threads,
no I/O. Time is the clock's monotonic time (:mod:`agentd.clock`; tests move a
:class:`agentd.testing.FakeClock`).

Nodes sharing a PostgreSQL store share their lanes' limits: a :class:`LaneGate` given
to the scheduler makes the lanes it covers (``agentd.runtime.cluster_limits``), which
keep this order and ask the store *when* (docs/design-notes.md, "One rate limit across
the cluster"). Without one, nothing here changes and nothing is added to a call.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import math
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar, cast, overload

from agentd.clock import SYSTEM, Clock, Timer

__all__ = ["DEFAULT_CLASS_WEIGHTS", "PRIORITIES", "Grant", "LaneGate", "LaneLimits", "Scheduler"]

log = logging.getLogger(__name__)

#: The priority classes, most urgent first.
PRIORITIES: tuple[str, ...] = ("interactive", "background", "batch")
#: The share of each class when all are backlogged (here 100 : 10 : 1).
DEFAULT_CLASS_WEIGHTS: dict[str, float] = {"interactive": 100.0, "background": 10.0,
                                           "batch": 1.0}

_LIMIT_KEYS = ("concurrency", "rpm", "tpm", "burst_s", "reserve")
_WAIT_SAMPLES = 1024
#: A bucket this close to ready (in seconds of refill) counts as ready: a timer may fire
#: a hair early, and re-arming it for a microsecond would only spin the loop.
_READY_S = 1e-6
_SWEEP_MIN = 64


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_limit(setting: str, key: str, value: object) -> None:
    """Raise ValueError naming ``setting.key`` unless ``value`` is a valid limit."""
    if key == "concurrency":
        if value is None or (isinstance(value, int) and not isinstance(value, bool)
                             and value >= 1):
            return
        raise ValueError(f"{setting}.concurrency must be an integer of at least 1")
    if key == "reserve":
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return
        raise ValueError(f"{setting}.reserve must be an integer of at least 0")
    if value is None and key != "burst_s":
        return
    if _is_number(value) and math.isfinite(cast(float, value)) and cast(float, value) > 0:
        return
    raise ValueError(f"{setting}.{key} must be a number greater than 0")


@dataclass(frozen=True, kw_only=True, slots=True)
class LaneLimits:
    """The limits of one lane; ``None`` means no limit of that kind.

    Attributes:
        concurrency: Most calls in flight at once.
        rpm: Requests per minute.
        tpm: Tokens per minute (reserved from the call's estimate, corrected on release).
        burst_s: Bucket capacity in seconds of the rate.
        reserve: Slots of ``concurrency`` that only interactive calls may take, so that
            a user's chat never waits for a call of a background run to end.
    """

    concurrency: int | None = None
    rpm: float | None = None
    tpm: float | None = None
    burst_s: float = 1.0
    reserve: int = 0

    def __post_init__(self) -> None:
        for key in _LIMIT_KEYS:
            _check_limit("LaneLimits", key, getattr(self, key))
        if self.reserve and (self.concurrency is None or self.reserve >= self.concurrency):
            raise ValueError("LaneLimits.reserve must be below concurrency (and needs it)")

    def as_dict(self) -> dict[str, Any]:
        return {"concurrency": self.concurrency, "rpm": self.rpm, "tpm": self.tpm,
                "burst_s": self.burst_s, "reserve": self.reserve}


_UNLIMITED = LaneLimits()


def _rebucket(old: _Bucket | None, per_minute: float | None, burst_s: float, floor: float,
              now: float) -> _Bucket | None:
    """A lane's bucket for a new rate: the old one's level (debt included) carried over,
    at most the new capacity; None for no rate."""
    if not per_minute:
        return None
    bucket = _Bucket(per_minute, burst_s, floor, now)
    if old is not None:
        old.refill(now)
        bucket.level = min(old.level, bucket.capacity)
    return bucket


class _Bucket:
    """A token bucket that may go into debt (a call bigger than it, or under-estimated)."""

    __slots__ = ("capacity", "level", "rate", "stamp")

    def __init__(self, per_minute: float, burst_s: float, floor: float, now: float) -> None:
        self.rate = per_minute / 60.0
        self.capacity = max(floor, self.rate * burst_s)
        self.level = self.capacity
        self.stamp = now

    def refill(self, now: float) -> None:
        if now > self.stamp:
            self.level = min(self.capacity, self.level + (now - self.stamp) * self.rate)
            self.stamp = now

    def wait(self, amount: float) -> float:
        """Seconds until ``amount`` can be taken (all of a full bucket, if bigger)."""
        short = min(amount, self.capacity) - self.level
        if short <= 0.0:
            return 0.0
        delay = short / self.rate
        return 0.0 if delay <= _READY_S else delay

    def give(self, amount: float) -> None:
        self.level = min(self.capacity, self.level + amount)


# The fair-queuing tree. Tags are in units of "calls / weight"; each internal node has
# its own virtual time. Heap entries are (start, finish, seq, child): at the start of a
# busy period every class starts at the same tag, and breaking that tie by the finish
# tag is what lets an interactive call pass background calls queued just before it.
# A node's ``entry`` is the seq of its live entry in its parent's heap (-1: not
# backlogged); entries with another seq are stale and skipped (lazy deletion).


class _Node:
    __slots__ = ("backlog", "entry", "finish", "parent", "start", "weight")

    def __init__(self, parent: _Inner | None, weight: float) -> None:
        self.parent = parent
        self.weight = weight
        self.start = 0.0
        self.finish = 0.0
        self.backlog = 0  # waiters queued in this subtree
        self.entry = -1


_N = TypeVar("_N", bound=_Node)


class _Inner(_Node):
    __slots__ = ("active", "children", "heap", "sweep_at", "vtime")

    def __init__(self, parent: _Inner | None, weight: float) -> None:
        super().__init__(parent, weight)
        self.children: dict[str, _Node] = {}
        self.heap: list[tuple[float, float, int, _Node]] = []
        self.vtime = 0.0
        self.active = 0  # backlogged children
        self.sweep_at = _SWEEP_MIN

    def child(self, key: str, weight: float, kind: Callable[[_Inner, float], _N]) -> _N:
        node = self.children.get(key)
        if node is None:
            if len(self.children) >= self.sweep_at:
                # An idle child whose finish tag the virtual time has passed would start
                # at the virtual time anyway: forgetting it changes nothing.
                v = self.vtime
                self.children = {k: c for k, c in self.children.items()
                                 if c.backlog or c.finish > v}
                self.sweep_at = max(_SWEEP_MIN, 2 * len(self.children))
            node = kind(self, weight)
            self.children[key] = node
            return node
        node.weight = weight
        return cast(_N, node)

    def idle(self) -> None:
        """End of this node's busy period: every child's finish tag is at most the
        virtual time (Goyal et al.), so all of them would restart at it: forget them."""
        self.children.clear()
        self.heap.clear()
        self.vtime = 0.0
        self.active = 0
        self.sweep_at = _SWEEP_MIN


class _Leaf(_Node):
    __slots__ = ("waiters",)

    def __init__(self, parent: _Inner | None, weight: float) -> None:
        super().__init__(parent, weight)
        self.waiters: deque[_Waiter] = deque()


class _Waiter:
    __slots__ = ("future", "leaf", "position", "priority", "queued", "t0", "tokens")

    def __init__(self, future: asyncio.Future[Grant], priority: str, tokens: int,
                 position: int, t0: float) -> None:
        self.future = future
        self.priority = priority
        self.tokens = tokens
        self.position = position
        self.t0 = t0
        self.queued = False
        self.leaf: _Leaf | None = None


class Grant:
    """Permission for one model call; release it when the call ends.

    Attributes:
        lane: The lane the call went through (pass it to :meth:`Scheduler.pause`).
        priority: The call's class.
        position: Calls queued ahead in the lane when this one was queued (0: no wait).
        wait_s: Seconds from :meth:`Scheduler.acquire` to the grant.
        tokens: Tokens reserved in the lane's TPM bucket.
    """

    __slots__ = ("_lane", "_permit", "_released", "lane", "position", "priority", "tokens",
                 "wait_s")

    def __init__(self, lane: _Lane, priority: str, position: int, wait_s: float,
                 tokens: int, permit: object = None) -> None:
        self._lane = lane
        #: What a shared lane's store handed out for the call (its slot's claim).
        self._permit = permit
        self._released = False
        self.lane = lane.name
        self.priority = priority
        self.position = position
        self.wait_s = wait_s
        self.tokens = tokens

    def release(self, tokens_used: int | None = None) -> None:
        """Free the call's slot; a second call does nothing.

        Args:
            tokens_used: What the call really used; the TPM bucket gets back the
                difference from the reservation (or goes further into debt). ``None``:
                keep the reservation as it was.
        """
        if self._released:
            return
        self._released = True
        self._lane.release(self.tokens, tokens_used, refund_request=False,
                           permit=self._permit)

    def _revoke(self) -> None:
        """Undo a grant whose caller was cancelled before it could use it."""
        if not self._released:
            self._released = True
            self._lane.release(self.tokens, 0, refund_request=True, permit=self._permit)

    def __repr__(self) -> str:
        return (f"Grant(lane={self.lane!r}, priority={self.priority!r}, "
                f"position={self.position}, wait_s={self.wait_s:.6f}, tokens={self.tokens}, "
                f"released={self._released})")


class _Lane:
    #: Whether the store must admit each call too (a lane shared by the cluster's nodes).
    gated = False
    __slots__ = ("clock", "concurrency", "granted", "in_flight", "limits", "name",
                 "paused_until", "reserve", "root", "rpm", "seq", "timer", "timer_at", "tpm",
                 "unlimited", "waited", "waits")

    def __init__(self, name: str, limits: LaneLimits, clock: Clock) -> None:
        self.name = name
        self.limits = limits
        self.concurrency = limits.concurrency
        self.reserve = limits.reserve
        self.clock = clock
        now = clock.monotonic()
        self.rpm = _Bucket(limits.rpm, limits.burst_s, 1.0, now) if limits.rpm else None
        self.tpm = _Bucket(limits.tpm, limits.burst_s, 0.0, now) if limits.tpm else None
        self.unlimited = limits.concurrency is None and self.rpm is None and self.tpm is None
        self.paused_until = 0.0  # 0.0: not paused
        self.in_flight = 0
        self.root = _Inner(None, 1.0)
        self.seq = itertools.count()
        self.timer: Timer | None = None
        self.timer_at = 0.0
        self.granted = 0
        self.waited = 0
        self.waits: deque[float] = deque(maxlen=_WAIT_SAMPLES)

    def set_limits(self, limits: LaneLimits) -> None:
        """Take new limits (a configuration reload), keeping the calls queued and in
        flight: in-flight calls count against the new concurrency (a lower one admits
        nothing until enough end); a rate bucket keeps its level, cut to its new
        capacity (a reload is no fresh burst); a new rate starts with a full bucket,
        as a new lane does. The queue is served at once under the new limits."""
        now = self.clock.monotonic()
        self.limits = limits
        self.concurrency = limits.concurrency
        self.reserve = limits.reserve
        self.rpm = _rebucket(self.rpm, limits.rpm, limits.burst_s, 1.0, now)
        self.tpm = _rebucket(self.tpm, limits.tpm, limits.burst_s, 0.0, now)
        self.unlimited = limits.concurrency is None and self.rpm is None and self.tpm is None
        if self.root.backlog:
            self.dispatch()

    # -- admission --------------------------------------------------------------------

    def delay(self, now: float, tokens: int, priority: str = "interactive"
              ) -> float | None:
        """0.0: admit now; > 0: seconds until a bucket or pause allows; None: no slot."""
        if self.concurrency is not None and self.in_flight >= self.concurrency - (
                0 if priority == "interactive" else self.reserve):
            return None
        if self.paused_until:
            if self.paused_until > now:
                return self.paused_until - now
            self.paused_until = 0.0
        wait = 0.0
        if self.rpm is not None:
            self.rpm.refill(now)
            wait = self.rpm.wait(1.0)
        if self.tpm is not None:
            self.tpm.refill(now)
            wait = max(wait, self.tpm.wait(tokens))
        return wait

    def take(self, tokens: int) -> None:
        self.in_flight += 1
        if self.rpm is not None:
            self.rpm.level -= 1.0
        if self.tpm is not None:
            self.tpm.level -= tokens

    def release(self, reserved: int, used: int | None, *, refund_request: bool,
                permit: object = None) -> None:
        self.in_flight -= 1
        if (self.tpm is not None and used is not None) or refund_request:
            now = self.clock.monotonic()
            if self.tpm is not None and used is not None:
                self.tpm.refill(now)
                self.tpm.give(reserved - used)
            if refund_request and self.rpm is not None:
                self.rpm.refill(now)
                self.rpm.give(1.0)
        if self.root.backlog:
            self.dispatch()

    def dispatch(self) -> None:
        """Grant waiters in fair order while the lane admits; arm a timer if a bucket
        or a pause is what blocks, and disarm it otherwise."""
        now = self.clock.monotonic()
        delay: float | None = None
        while self.root.backlog:
            if self.concurrency is not None and self.in_flight >= self.concurrency:
                break
            waiter = self.peek()
            if waiter.future.done():  # cancelled; its task has not run its handler yet
                self.remove(waiter)
                continue
            wait = self.delay(now, waiter.tokens, waiter.priority)
            if wait is None and self.reserve and waiter.priority != "interactive":
                # Only the interactive reserve is free: it goes to the interactive
                # class's next call, whatever the fair order says about the classes.
                other = self.peek("interactive")
                if other is not None and other.future.done():
                    self.remove(other)
                    continue
                if other is not None:
                    waiter, wait = other, self.delay(now, other.tokens)
            if wait is None:
                break
            if wait > 0.0:
                delay = wait
                break
            self.commit(waiter)
            self.take(waiter.tokens)
            waited = now - waiter.t0
            self.granted += 1
            self.waited += 1
            self.waits.append(waited)
            waiter.future.set_result(
                Grant(self, waiter.priority, waiter.position, waited, waiter.tokens))
        self.arm(delay)

    def arm(self, delay: float | None) -> None:
        timer = self.timer
        if delay is None:
            if timer is not None:
                timer.cancel()
                self.timer = None
            return
        when = self.clock.monotonic() + delay
        if timer is not None:
            # The time is kept here: timer handles need not have a when().
            if abs(self.timer_at - when) < 1e-3:
                return
            timer.cancel()
        self.timer = self.clock.call_later(delay, self.on_timer)
        self.timer_at = when

    def on_timer(self) -> None:
        self.timer = None
        self.dispatch()

    def pause_shared(self, seconds: float) -> None:
        """A shared lane tells the other nodes of a pause (an unshared one has none)."""

    # -- the fair-queuing tree ----------------------------------------------------------

    def enqueue(self, waiter: _Waiter, cls_weight: float, tenant: str, tenant_weight: float,
                agent: str, weight: float) -> None:
        klass = self.root.child(waiter.priority, cls_weight, _Inner)
        leaf = klass.child(tenant, tenant_weight, _Inner).child(agent, weight, _Leaf)
        leaf.waiters.append(waiter)
        waiter.leaf = leaf
        waiter.queued = True
        node: _Node = leaf
        parent = node.parent
        while parent is not None:
            node.backlog += 1
            if node.backlog == 1:
                node.start = max(parent.vtime, node.finish)
                node.entry = next(self.seq)
                heap = parent.heap
                heapq.heappush(heap, (node.start, node.start + 1.0 / node.weight, node.entry,
                                      node))
                parent.active += 1
                if len(heap) > 2 * parent.active + 32:  # drop stale entries
                    heap[:] = [e for e in heap if e[3].entry == e[2]]
                    heapq.heapify(heap)
            node = parent
            parent = node.parent
        node.backlog += 1

    @overload
    def peek(self) -> _Waiter: ...

    @overload
    def peek(self, priority: str) -> _Waiter | None: ...

    def peek(self, priority: str | None = None) -> _Waiter | None:
        """The waiter H-SFQ serves next (the lane must have one); with ``priority``,
        the next of that class (None if it has none)."""
        node: _Node = self.root
        if priority is not None:
            klass = self.root.children.get(priority)
            if klass is None or not klass.backlog:
                return None
            node = klass
        while isinstance(node, _Inner):
            heap = node.heap
            while heap[0][3].entry != heap[0][2]:
                heapq.heappop(heap)
            node = heap[0][3]
        return cast(_Leaf, node).waiters[0]

    def commit(self, waiter: _Waiter) -> None:
        """Serve ``waiter``, just returned by :meth:`peek`: each node on its path is the
        top of its parent's heap."""
        leaf = waiter.leaf
        assert leaf is not None and leaf.waiters[0] is waiter
        leaf.waiters.popleft()
        waiter.queued = False
        waiter.leaf = None
        node: _Node = leaf
        parent = node.parent
        while parent is not None:
            # Served out of fair order (the interactive reserve), a class is not at the
            # top of the root's heap: its entry there is replaced lazily.
            at_top = parent.heap[0][2] == node.entry
            parent.vtime = max(parent.vtime, node.start)
            node.finish = node.start + 1.0 / node.weight
            node.backlog -= 1
            if node.backlog:
                node.start = node.finish
                node.entry = next(self.seq)
                entry = (node.start, node.start + 1.0 / node.weight, node.entry, node)
                if at_top:
                    heapq.heapreplace(parent.heap, entry)
                else:
                    heapq.heappush(parent.heap, entry)
            else:
                if at_top:
                    heapq.heappop(parent.heap)
                self._went_idle(node)
            node = parent
            parent = node.parent
        node.backlog -= 1
        if not node.backlog:
            self._went_idle(node)

    def remove(self, waiter: _Waiter) -> None:
        """Take a cancelled waiter out; its tags stay as they were (it was not served)."""
        leaf = waiter.leaf
        assert leaf is not None
        leaf.waiters.remove(waiter)
        waiter.queued = False
        waiter.leaf = None
        node: _Node | None = leaf
        while node is not None:
            node.backlog -= 1
            if not node.backlog:
                self._went_idle(node)
            node = node.parent

    @staticmethod
    def _went_idle(node: _Node) -> None:
        if node.parent is not None:
            node.entry = -1  # its heap entry, if any, is now stale
            node.parent.active -= 1
        if isinstance(node, _Inner):
            node.idle()

    # -- reporting ----------------------------------------------------------------------

    def metrics(self, now: float) -> dict[str, Any]:
        by_class = {p: 0 for p in PRIORITIES}
        for key, node in self.root.children.items():
            by_class[key] = node.backlog
        waits = sorted(self.waits)
        n = len(waits)

        def pct(q: float) -> float:
            return round(waits[max(0, math.ceil(q * n) - 1)] * 1000.0, 3) if n else 0.0

        return {
            "limits": self.limits.as_dict(),
            "in_flight": self.in_flight,
            "queued": self.root.backlog,
            "queued_by_class": by_class,
            "granted": self.granted,
            "waited": self.waited,
            "wait_ms": {"p50": pct(0.50), "p99": pct(0.99), "max": pct(1.0)},
            "paused_for_s": round(max(0.0, self.paused_until - now), 3),
        }


class LaneGate(Protocol):
    """What makes the lanes the cluster's nodes share (``runtime/cluster_limits.py``)."""

    def covers(self, name: str) -> bool:
        """Whether lane ``name`` is shared."""
        ...

    def lane(self, name: str, limits: LaneLimits, clock: Clock) -> _Lane:
        """A shared lane (``gated``) in place of the node's own."""
        ...

    def share(self, names: frozenset[str]) -> None:
        """The lanes to share from now on (a configuration reload)."""
        ...


def _positive(setting: str, value: object) -> float:
    if not (_is_number(value) and math.isfinite(cast(float, value)) and cast(float, value) > 0):
        raise ValueError(f"{setting} must be a number greater than 0")
    return float(cast(float, value))



def _check(class_weights: dict[str, float], priority: str, weight: float,
           tokens: int) -> None:
    """The ValueError :meth:`Scheduler.acquire` raises for arguments it cannot take."""
    if priority not in class_weights:
        raise ValueError(f"priority must be one of {', '.join(PRIORITIES)}, "
                         f"not {priority!r}")
    if not 0.0 < weight < math.inf:
        raise ValueError(f"weight must be a number greater than 0, not {weight!r}")
    if tokens < 0:
        raise ValueError(f"tokens must be at least 0, not {tokens!r}")

class Scheduler:
    """Admits model calls per lane, in H-SFQ order, within each lane's limits.

    Args:
        limits: Limits by lane name (``provider`` or ``provider:model``); any other lane
            has no limits.
        class_weights: Weights of the priority classes (missing ones: the defaults).
        tenant_weights: Weights of tenants (missing ones: 1.0).
        clock: the time buckets refill and pauses end by (:data:`agentd.clock.SYSTEM`).
        gate: Makes the lanes it covers shared with the cluster's other nodes (None:
            every lane is this node's alone).
    """

    def __init__(self, limits: Mapping[str, LaneLimits] | None = None, *,
                 class_weights: Mapping[str, float] | None = None,
                 tenant_weights: Mapping[str, float] | None = None,
                 clock: Clock = SYSTEM, gate: LaneGate | None = None) -> None:
        self.clock = clock
        self._gate = gate
        self._limits = dict(limits or {})
        for name, lane_limits in self._limits.items():
            if not isinstance(lane_limits, LaneLimits):
                raise TypeError(f"limits for {name!r} must be a LaneLimits")
        self._class_weights = dict(DEFAULT_CLASS_WEIGHTS)
        for key, value in (class_weights or {}).items():
            if key not in PRIORITIES:
                raise ValueError(f"class_weights.{key} is not a priority; use "
                                 f"{', '.join(PRIORITIES)}")
            self._class_weights[key] = _positive(f"class_weights.{key}", value)
        self._tenant_weights = {key: _positive(f"tenant_weights.{key}", value)
                                for key, value in (tenant_weights or {}).items()}
        self._lanes = {name: self._new_lane(name, lane_limits)
                       for name, lane_limits in self._limits.items()}

    def _new_lane(self, name: str, limits: LaneLimits) -> _Lane:
        if self._gate is not None and self._gate.covers(name):
            return self._gate.lane(name, limits, self.clock)
        return _Lane(name, limits, self.clock)

    def reconfigure(self, limits: Mapping[str, LaneLimits] | None = None, *,
                    class_weights: Mapping[str, float] | None = None,
                    tenant_weights: Mapping[str, float] | None = None,
                    shared: frozenset[str] | None = None) -> None:
        """Take new limits and weights (a configuration reload) without losing a call.

        Everything is checked before anything changes (the errors of the constructor,
        nothing changed). Each lane takes its new limits as :meth:`_Lane.set_limits`
        says, queued calls staying in their place; a lane whose limits were removed
        keeps its queued calls and admits them without limits, while new calls of that
        model go to its provider's lane. Weights count for calls queued from now on.
        ``shared``: the lanes the gate now shares with the cluster (None: as before):
        a new lane, or one that had no limits and nothing queued or in flight, is
        made shared or not by it; a lane keeps the kind it has otherwise (a change of
        a limited lane's scope takes a restart).
        """
        checked = Scheduler(limits, class_weights=class_weights,
                            tenant_weights=tenant_weights, clock=self.clock)
        self._limits = checked._limits
        self._class_weights = checked._class_weights
        self._tenant_weights = checked._tenant_weights
        if shared is not None and self._gate is not None:
            self._gate.share(shared)
        for name, lane in list(self._lanes.items()):
            new_limits = self._limits.get(name, _UNLIMITED)
            if (self._gate is not None and lane.unlimited and not lane.in_flight
                    and not lane.root.backlog
                    and lane.gated != self._gate.covers(name)):
                self._lanes[name] = self._new_lane(name, new_limits)
            else:
                lane.set_limits(new_limits)
        for name, lane_limits in self._limits.items():
            if name not in self._lanes:
                self._lanes[name] = self._new_lane(name, lane_limits)

    def lane_for(self, provider: str, model: str) -> str:
        """The lane of a model: ``provider:model`` if it has limits, else ``provider``."""
        key = f"{provider}:{model}"
        return key if key in self._limits else provider

    def _lane(self, name: str) -> _Lane:
        lane = self._lanes.get(name)
        if lane is None:
            lane = self._lanes[name] = self._new_lane(name,
                                                      self._limits.get(name, _UNLIMITED))
        return lane

    async def acquire(self, *, provider: str, model: str, priority: str = "background",
                      tenant: str = "default", agent: str = "", weight: float = 1.0,
                      tokens: int = 0) -> Grant:
        """Wait for the turn of one model call.

        Args:
            provider: The provider's name.
            model: The model's name within the provider.
            priority: One of :data:`PRIORITIES`.
            tenant: Whose share the call counts against (weight from ``tenant_weights``).
            agent: The agent within the tenant.
            weight: The agent's weight within its tenant (the latest value counts).
            tokens: Estimated tokens, reserved in the lane's TPM bucket.

        Returns:
            The grant; release it when the call ends, whatever the outcome.

        Raises:
            ValueError: An unknown priority, a weight that is not positive, or negative
                tokens.
        """
        grant = self.grant_now(provider=provider, model=model, priority=priority,
                               tokens=tokens, weight=weight)
        if grant is not None:
            return grant
        return await self.queue(provider=provider, model=model, priority=priority,
                                tenant=tenant, agent=agent, weight=weight, tokens=tokens)

    def grant_now(self, *, provider: str, model: str, priority: str = "background",
                  tokens: int = 0, weight: float = 1.0) -> Grant | None:
        """:meth:`acquire`'s grant when the call's lane admits it at once (nobody
        queued in it, a slot and the rates free): the call waits for nothing. None:
        it must queue (:meth:`queue`). Checks its arguments as :meth:`acquire` does.
        """
        _check(self._class_weights, priority, weight, tokens)
        lane = self._lane_of(provider, model)
        if not lane.root.backlog and not lane.gated:
            if lane.unlimited and not lane.paused_until:
                lane.in_flight += 1
                lane.granted += 1
                lane.waits.append(0.0)
                return Grant(lane, priority, 0, 0.0, tokens)
            if lane.delay(self.clock.monotonic(), tokens, priority) == 0.0:
                lane.take(tokens)
                lane.granted += 1
                lane.waits.append(0.0)
                return Grant(lane, priority, 0, 0.0, tokens)
        return None

    async def queue(self, *, provider: str, model: str, priority: str = "background",
                    tenant: str = "default", agent: str = "", weight: float = 1.0,
                    tokens: int = 0) -> Grant:
        """:meth:`acquire` for a call :meth:`grant_now` did not admit: wait in its
        lane's queue for its turn."""
        _check(self._class_weights, priority, weight, tokens)
        return await self._wait(self._lane_of(provider, model), self._class_weights[priority],
                                priority, tenant, agent, weight, tokens)

    def _lane_of(self, provider: str, model: str) -> _Lane:
        """The lane of a call of ``provider:model`` (the model's own if it has limits)."""
        name = f"{provider}:{model}"
        lane = self._lanes.get(name) if name in self._limits else None
        return self._lane(provider) if lane is None else lane

    async def _wait(self, lane: _Lane, cls_weight: float, priority: str, tenant: str,
                    agent: str, weight: float, tokens: int) -> Grant:
        future: asyncio.Future[Grant] = asyncio.get_running_loop().create_future()
        waiter = _Waiter(future, priority, tokens, lane.root.backlog,
                         self.clock.monotonic())
        lane.enqueue(waiter, cls_weight, tenant, self._tenant_weights.get(tenant, 1.0),
                     agent, weight)
        # It may go first at once: a smaller call ahead of a head blocked on tokens.
        lane.dispatch()
        try:
            return await future
        except asyncio.CancelledError:
            if waiter.queued:
                lane.remove(waiter)
                lane.dispatch()  # it may have been the head that blocked the others
            elif future.done() and not future.cancelled():
                future.result()._revoke()  # granted, but the caller is gone
            raise

    def pause(self, lane: str, seconds: float) -> None:
        """Grant nothing in ``lane`` for ``seconds`` (a 429's ``Retry-After``).

        A pause only ever extends an earlier one; zero or negative seconds do nothing.

        Raises:
            ValueError: ``seconds`` is not a finite number.
        """
        if not (_is_number(seconds) and math.isfinite(seconds)):
            raise ValueError(f"seconds must be a finite number, not {seconds!r}")
        if seconds <= 0:
            return
        target = self._lane(lane)
        until = self.clock.monotonic() + seconds
        if target.gated:
            target.pause_shared(seconds)
        if until > target.paused_until:
            target.paused_until = until
            log.debug("lane %s paused for %.3f s", lane, seconds)
            if target.root.backlog:
                target.dispatch()

    def queued(self, lane: str | None = None) -> int:
        """Calls waiting in ``lane``, or in all lanes."""
        if lane is None:
            return sum(ln.root.backlog for ln in self._lanes.values())
        found = self._lanes.get(lane)
        return found.root.backlog if found is not None else 0

    def timer_armed(self, lane: str) -> bool:
        """Whether a timer is set to wake ``lane``'s waiters (a lane with nobody waiting
        must hold none: a cancelled waiter takes its timer with it)."""
        found = self._lanes.get(lane)
        return found is not None and found.timer is not None

    def metrics(self) -> dict[str, Any]:
        """Per-lane and total counters (JSON-serialisable).

        Each lane has ``limits``, ``in_flight``, ``queued`` (total) and
        ``queued_by_class``, ``granted``, ``waited`` (grants that had to queue),
        ``wait_ms`` (``p50``, ``p99`` and ``max`` over the last 1024 grants) and
        ``paused_for_s``.
        """
        now = self.clock.monotonic()
        lanes = {name: lane.metrics(now) for name, lane in sorted(self._lanes.items())}
        totals = {key: sum(m[key] for m in lanes.values())
                  for key in ("in_flight", "queued", "granted", "waited")}
        return {"lanes": lanes, "totals": totals}
