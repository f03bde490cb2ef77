"""One rate limit across the cluster: lanes whose limits every node sharing the store
keeps together.

On PostgreSQL several nodes share one provider account: each node's scheduler alone
would let each send the whole limit. Here a node's scheduler still decides the
*order* of its calls (H-SFQ over class, tenant and agent, exactly as on one node); the
store (:mod:`agentd.store.limits`) decides *when* any node may send one:

* **The gate.** Before a call of a shared lane is granted, its node asks the store in
  one transaction: the lane's request and token buckets (GCRA) and, with a
  concurrency limit, a free slot row claimed for the call. Admitted: granted.
  Refused for a rate or a pause: the lane waits the time the store gives and asks
  again; refused for want of a slot: it looks again after 50 ms, doubling to 0.5 s
  (at once when one of its own calls ends). Each lane asks one call at a time, and
  whatever else it has for the store (calls that ended, a pause, renewals, what it
  waits for) goes in the same transaction. The cluster admits at most the limit plus
  one bucket (``burst_s`` of the rate) in any window; slots are never held by more
  calls than the limit.
* **Dead nodes.** A claim on a slot expires ``lease_ttl_s`` after its last renewal;
  each node renews its own with its leases (every third of it). A killed node's
  slots are free again within one ``lease_ttl_s``; a node starting again frees its
  previous life's at once.
* **Fair shares between nodes.** Calls that wait on several nodes would otherwise
  race for each new token, and the node that asks first (a clock a hair ahead, a
  shorter way to the database) would win every time. So a node whose calls wait for
  the cluster says what waits (its classes and tenants, with their weights) in a
  row of its own, refreshed every second while it waits, and reads the others'. From
  them every waiting node computes the same split of the lane: each class its weight's
  share of it, each tenant its weight's share of its class, a tenant waiting on
  several nodes split evenly between them. A node then paces itself to its part
  (its buckets refill at that share of the rate, and it holds at most that share of
  the slots, at least one) and weighs its own classes and tenants so that its order
  serves each its part. A node no other node competes with is not paced.

Nothing here runs on SQLite (one node), nor for a lane without limits, nor for one
whose ``scope`` is ``node``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import os
import time
from collections import deque
from collections.abc import Coroutine, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import orjson

from agentd.clock import SYSTEM, Clock, Timer
from agentd.runtime.scheduler import Grant, LaneLimits, _Bucket, _Inner, _Lane, _Waiter
from agentd.store.limits import Exchange, Give, Outcome, Rates, Take

if TYPE_CHECKING:
    from agentd.store import Store

__all__ = ["ClusterGate", "Demand", "node_share"]

log = logging.getLogger(__name__)

#: How often a lane whose calls wait tells the other nodes so, and reads theirs (s).
SYNC_S = 1.0
#: A node's demand row lives this long unless refreshed (a dead node's stops
#: counting within it).
DEMAND_TTL_S = 3.0
#: A node counts as waiting for the cluster this long after the store last refused it.
DEMAND_WINDOW_S = 2.0
#: A refusal for want of a slot is looked at again after this, doubling to the max.
POLL_MIN_S = 0.05
POLL_MAX_S = 0.25
#: A call's exchange reads the other nodes' demand if it was last read this long ago.
READ_S = 0.2
#: After a failed exchange (the database unreachable), the lane tries again after this.
ERROR_RETRY_S = 1.0
#: A paced node asks for what the others leave unused at most this often while the
#: store says there is none.
BACKFILL_S = 0.2
#: Most seconds of a part-time slot a node saves up while it does not use it.
_BUDGET_MAX_S = 5.0
#: A wait this short counts as none.
_READY = 1e-6
_SAMPLES = 1024

#: A node's demand: class -> (the class's weight, tenant -> the tenant's weight).
Demand = dict[str, tuple[float, dict[str, float]]]


def _encode(demand: Demand) -> str:
    return orjson.dumps({c: {"w": w, "t": t} for c, (w, t) in sorted(demand.items())}
                        ).decode()


def _decode(raw: str) -> Demand | None:
    """A node's demand as stored, or None if it is not one (another version's)."""
    try:
        data = orjson.loads(raw)
        return {str(c): (float(v["w"]), {str(t): float(w) for t, w in v["t"].items()})
                for c, v in data.items()}
    except (orjson.JSONDecodeError, AttributeError, KeyError, TypeError, ValueError):
        return None


def node_share(own: Demand, others: Iterable[Demand]
               ) -> tuple[float, dict[str, float], dict[tuple[str, str], float]]:
    """This node's part of a lane that several nodes' calls wait for, as one scheduler
    would split it: each waiting class its weight's share, each tenant its weight's
    share of its class, a tenant waiting on several nodes split evenly between them.

    Returns:
        The node's share (0 to 1), and the part of it each of its classes and each of
        its (class, tenant) pairs should get.
    """
    everyone = [own, *others]
    class_w: dict[str, float] = {}
    tenant_w: dict[str, dict[str, float]] = {}
    nodes_of: dict[tuple[str, str], int] = {}
    for demand in everyone:
        for klass, (weight, tenants) in demand.items():
            if not tenants:
                continue
            class_w[klass] = max(class_w.get(klass, 0.0), weight)
            known = tenant_w.setdefault(klass, {})
            for tenant, tw in tenants.items():
                known[tenant] = max(known.get(tenant, 0.0), tw)
                nodes_of[(klass, tenant)] = nodes_of.get((klass, tenant), 0) + 1
    total = sum(class_w.values())
    share = 0.0
    classes: dict[str, float] = {}
    tenants_part: dict[tuple[str, str], float] = {}
    for klass, (_, tenants) in own.items():
        if klass not in class_w or not total:
            continue
        in_class = sum(tenant_w[klass].values())
        for tenant in tenants:
            part = (class_w[klass] / total) * (tenant_w[klass][tenant] / in_class) \
                / nodes_of[(klass, tenant)]
            tenants_part[(klass, tenant)] = part
            classes[klass] = classes.get(klass, 0.0) + part
            share += part
    return min(share, 1.0), classes, tenants_part


class ClusterGate:
    """The lanes this node shares with the others on the store (see the module).

    Args:
        store: The shared store.
        node_id: This node's id (the claims and demand rows it writes carry it).
        lanes: The names of the shared lanes (``provider`` or ``provider:model``).
        ttl_s: How long a slot's claim lives without renewal (``lease_ttl_s``).
        clock: The time lanes wait by (monotonic) and rows are stamped with (wall).
    """

    def __init__(self, store: Store, *, node_id: str, lanes: Iterable[str], ttl_s: float,
                 clock: Clock = SYSTEM) -> None:
        self.store = store
        self.node_id = node_id
        self.names = frozenset(lanes)
        self.ttl_s = ttl_s
        self.clock = clock
        self.lanes: dict[str, SharedLane] = {}
        self.closed = False
        self._tasks: set[asyncio.Task[Any]] = set()
        #: Claims are unique per call and per life of the node (a node starting
        #: again under the same id never renews or frees its previous life's).
        self._claims = itertools.count(1)
        self._life = os.urandom(4).hex()

    # -- what the scheduler asks ---------------------------------------------------------

    def covers(self, name: str) -> bool:
        return name in self.names

    def lane(self, name: str, limits: LaneLimits, clock: Clock) -> SharedLane:
        lane = self.lanes[name] = SharedLane(name, limits, clock, self)
        return lane

    def share(self, names: frozenset[str]) -> None:
        """The lanes shared from now on (a configuration reload: the scheduler makes
        new lanes by it; a lane already shared stays so until it is dropped)."""
        self.names = frozenset(names)

    # -- what the runtime asks -------------------------------------------------------

    async def start(self) -> int:
        """Free what this node's previous life held (its slots, its demand rows)."""
        freed = await self.store.limit_forget_node(self.node_id)
        if freed:
            log.info("freed %d shared concurrency slot(s) this node held before it "
                     "started", freed)
        return freed

    async def renew(self) -> int:
        """Renew the claims of this node's calls in flight (the ``limit_slots``
        housekeeping job, every third of ``lease_ttl_s``); returns how many were asked
        for."""
        count = 0
        for lane in self.lanes.values():
            if lane.claims:
                count += len(lane.claims)
                lane.want_renew = True
                lane.kick()
        return count

    def busy(self) -> bool:
        """Whether a lane has an exchange with the store under way."""
        return any(not t.done() for t in self._tasks)

    async def idle(self) -> None:
        """Wait until no lane has an exchange under way or pending (tests)."""
        while self.busy():
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def close(self) -> None:
        """Hand back what this node holds (after its runs have stopped): the calls'
        slots and tokens, its demand rows."""
        self.closed = True
        for lane in self.lanes.values():
            lane.stop()
        await self.idle()
        for lane in self.lanes.values():
            with contextlib.suppress(Exception):
                await lane.hand_back()

    def next_claim(self) -> str:
        return f"{self.node_id}/{self._life}/{next(self._claims)}"

    def spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task


class SharedLane(_Lane):
    """A lane whose limits the cluster's nodes keep together (see the module)."""

    gated = True
    __slots__ = ("answers", "asked", "asking", "backfill_at", "backfilled", "backfilling",
                 "budget", "budget_at", "claims", "class_w", "eff_class", "eff_tenant", "errors",
                 "exchange_s", "exchanges", "frac", "full", "full_polls", "gate", "gives",
                 "others", "others_at", "paced", "pause_until", "rates", "refused", "refused_at",
                 "registered", "share", "shared", "sync_timer", "tenant_w", "wait_until",
                 "want_renew", "want_sync", "worker")

    def __init__(self, name: str, limits: LaneLimits, clock: Clock, gate: ClusterGate
                 ) -> None:
        super().__init__(name, limits, clock)
        self.gate = gate
        #: The limits as configured: what the cluster keeps (this node's own
        #: ``concurrency`` and buckets are its part of them while it is paced).
        self.shared = limits
        self.rates = Rates.of(limits.rpm, limits.tpm, limits.burst_s)
        # The reserve is kept by the store's slot numbers, for the whole cluster.
        self.reserve = 0
        self.asking: _Waiter | None = None  # a call the store is being asked about
        self.asked: _Waiter | None = None   # ... not yet sent to it
        self.gives: list[Give] = []
        self.pause_until: float | None = None
        self.want_renew = False
        self.want_sync = False
        self.worker: asyncio.Task[None] | None = None
        #: Monotonic times before which the store is not asked again: after a rate or
        #: pause refusal; after no slot was free for an interactive call (no slot at
        #: all), and for any other call (no unreserved slot).
        self.wait_until = 0.0
        self.full = {"any": 0.0, "unreserved": 0.0}
        self.full_polls = 0
        self.refused_at = -math.inf
        self.claims: dict[str, int] = {}  # claim -> slot, of the calls in flight
        #: While paced, this node's part of the slots may be ``concurrency - 1 + frac``:
        #: its last slot is then held ``frac`` of the time, by a budget of slot-seconds
        #: that grows by ``frac`` a second and shrinks by 1 a second while it is held;
        #: it is taken again once the budget is not negative.
        self.frac = 0.0
        self.budget = 0.0
        self.budget_at = clock.monotonic()
        #: Demand: registered in the store, the others' (node -> demand) and when read.
        self.registered = False
        self.others: dict[str, Demand] = {}
        self.others_at = -math.inf
        self.sync_timer: Timer | None = None
        self.share = 1.0
        self.paced = False
        #: Configured weights seen (class -> weight; (class, tenant) -> weight).
        self.class_w: dict[str, float] = {}
        self.tenant_w: dict[tuple[str, str], float] = {}
        #: While paced: the weights this node's classes and tenants are served by.
        self.eff_class: dict[str, float] = {}
        self.eff_tenant: dict[tuple[str, str], float] = {}
        #: Figures.
        self.answers = 0
        self.refused = {"rate": 0, "paused": 0, "full": 0}
        self.errors = 0
        self.exchange_s: deque[float] = deque(maxlen=_SAMPLES)
        self.exchanges = 0
        self.backfilled = 0
        #: The call being asked about may only take what nobody else uses; the next
        #: such ask is made no sooner than ``backfill_at``.
        self.backfilling = False
        self.backfill_at = 0.0

    # -- the scheduler's side ----------------------------------------------------------

    def set_limits(self, limits: LaneLimits) -> None:
        """New limits for the cluster's lane (a configuration reload): what the
        cluster keeps from now on, this node's part of it recomputed; the store's
        buckets follow at the next call this node asks about (every node should be
        given the same limits: each asks with its own)."""
        super().set_limits(limits)
        self.shared = limits
        self.rates = Rates.of(limits.rpm, limits.tpm, limits.burst_s)
        self.reserve = 0  # (the store's slot numbers keep it, for the whole cluster)
        self._set_share(self.share)
        self.dispatch()

    def enqueue(self, waiter: _Waiter, cls_weight: float, tenant: str, tenant_weight: float,
                agent: str, weight: float) -> None:
        klass = waiter.priority
        self.class_w[klass] = cls_weight
        self.tenant_w[(klass, tenant)] = tenant_weight
        if self.paced:
            cls_weight = self.eff_class.get(klass, cls_weight)
            tenant_weight = self.eff_tenant.get((klass, tenant), tenant_weight)
        super().enqueue(waiter, cls_weight, tenant, tenant_weight, agent, weight)

    def dispatch(self) -> None:
        """Ask the store about the call the fair order serves next, once this node's
        own part of the limits lets it go (past it, for what nobody else uses); one
        call at a time."""
        if self.asking is not None:
            return  # its answer dispatches again
        now = self.clock.monotonic()
        delay: float | None = None
        while self.root.backlog:
            waiter = self.peek()
            if waiter.future.done():  # cancelled; its task has not run its handler yet
                self.remove(waiter)
                continue
            blocked = self._full_for(waiter.priority, now)
            if blocked > 0.0 and waiter.priority != "interactive":
                # No unreserved slot: the interactive reserve may still have one.
                other = self.peek("interactive")
                if other is not None and other.future.done():
                    self.remove(other)
                    continue
                if other is not None and self._full_for("interactive", now) <= 0.0:
                    waiter, blocked = other, 0.0
            if self.paused_until:
                if self.paused_until > now:
                    delay = self.paused_until - now
                    break
                self.paused_until = 0.0
            told = max(blocked, self.wait_until - now)  # what the store said last
            own = self._own(now, waiter.tokens)
            if told > _READY:
                delay = told
            elif own == 0.0:
                self._ask(waiter, backfill=False)
            elif self.paced and (self.shared.concurrency is None
                                 or self.in_flight < self.shared.concurrency):
                # Only this node's part of the lane holds the call: what the others
                # leave unused it may take.
                if now >= self.backfill_at:
                    self._ask(waiter, backfill=True)
                else:
                    delay = self.backfill_at - now if own is None else min(
                        own, self.backfill_at - now)
            else:
                delay = own  # None: until one of its calls ends
            break
        self.arm(delay)

    def _own(self, now: float, tokens: int) -> float | None:
        """Seconds until this node's own part of the limits lets a call go (0: now;
        None: none of its slots is free)."""
        if self.concurrency is not None:
            if self.in_flight >= self.concurrency:
                return None
            if self.frac and self.in_flight == self.concurrency - 1:
                self._spend(now)
                if self.budget < -_READY:
                    # Its part-time slot rests (a millisecond at least: a timer a hair
                    # early would only spin the loop).
                    return max(-self.budget / self.frac, 1e-3)
        wait = 0.0
        if self.rpm is not None:
            self.rpm.refill(now)
            wait = self.rpm.wait(1.0)
        if self.tpm is not None:
            self.tpm.refill(now)
            wait = max(wait, self.tpm.wait(tokens))
        return wait if wait > _READY else 0.0

    def _ask(self, waiter: _Waiter, *, backfill: bool) -> None:
        self.asking = self.asked = waiter
        self.backfilling = backfill
        self.kick()

    def _spend(self, now: float) -> None:
        """Bring the part-time slot's budget up to ``now``."""
        if self.frac and self.concurrency is not None:
            held = 1.0 if self.in_flight >= self.concurrency else 0.0
            self.budget = min(_BUDGET_MAX_S,
                              self.budget + (now - self.budget_at) * (self.frac - held))
        self.budget_at = now

    def _full_for(self, priority: str, now: float) -> float:
        until = self.full["any"] if priority == "interactive" else max(self.full.values())
        return max(0.0, until - now)

    def release(self, reserved: int, used: int | None, *, refund_request: bool,
                permit: object = None) -> None:
        slot, claim, backfilled = permit if isinstance(permit, tuple) else (None, None,
                                                                             False)
        if claim is not None:
            self.claims.pop(claim, None)
        self._spend(self.clock.monotonic())
        back = 0.0
        if self.rates.tpm_interval:
            back = float(reserved) if refund_request else (
                float(reserved - used) if used is not None else 0.0)
        if slot is not None or back or (refund_request and self.rates.rpm_interval):
            self.gives.append(Give(slot=slot, claim=claim, tokens=back,
                                   request=refund_request))
        if slot is not None:
            # A slot is free now: the calls waiting for one need not wait for a poll.
            self.full = {"any": 0.0, "unreserved": 0.0}
            self.full_polls = 0
        if backfilled:
            # (its call was never counted in this node's own buckets)
            super().release(reserved, None, refund_request=False)
        else:
            super().release(reserved, used, refund_request=refund_request)
        if self.gives:
            self.kick()

    def pause_shared(self, seconds: float) -> None:
        until = self.clock.time() + seconds
        self.pause_until = max(self.pause_until or 0.0, until)
        self.kick()

    # -- the store's side ----------------------------------------------------------------

    def kick(self) -> None:
        """Make sure the lane's worker runs (it empties what is pending, in order)."""
        if self.gate.closed and self.asked is None and not self.gives:
            return
        if self.worker is None or self.worker.done():
            self.worker = self.gate.spawn(self._work(), f"agentd-lane-{self.name}")

    def _pending(self) -> bool:
        return bool(self.asked is not None or self.gives or self.pause_until is not None
                    or self.want_renew or self.want_sync)

    async def _work(self) -> None:
        """One exchange with the store after another until nothing is pending: a lane's
        exchanges are made in order, so a slot given back is free before the next
        call of the lane asks for one."""
        while self._pending():
            waiter, self.asked = self.asked, None
            gives, self.gives = self.gives, []
            pause, self.pause_until = self.pause_until, None
            renew = list(self.claims) if self.want_renew else []
            self.want_renew = False
            sync, self.want_sync = self.want_sync, False
            take = None if waiter is None else Take(
                tokens=float(waiter.tokens) if self.rates.tpm_interval else 0.0,
                concurrency=self.shared.concurrency, reserve=self.shared.reserve,
                interactive=waiter.priority == "interactive", claim=self.gate.next_claim(),
                backfill=self.backfilling)
            demand = self._demand_row() if sync else None
            # Between syncs, a call's exchange reads what the others wait for too (at
            # most every READ_S): a node hears of new demand at its next call.
            read = sync or (take is not None
                            and self.clock.monotonic() - self.others_at >= READ_S)
            exchange = Exchange(node=self.gate.node_id, now=self.clock.time(),
                                rates=self.rates, gives=gives, pause_until=pause,
                                renew=renew, ttl_s=self.gate.ttl_s, take=take,
                                demand=demand, demand_ttl_s=DEMAND_TTL_S, read=read)
            began = time.perf_counter()
            try:
                out = await self.gate.store.limit_exchange(self.name, exchange)
            except Exception as exc:
                self._failed(exc, waiter, gives, pause, bool(renew), sync)
                if self.gate.closed:
                    return
                await self.clock.sleep(ERROR_RETRY_S)
                continue
            self.exchange_s.append(time.perf_counter() - began)
            self.exchanges += 1
            if renew:
                self._renewed(renew, out.renewed)
            if read:
                self._synced(demand, out.others or {})
            if waiter is not None and take is not None:
                self._answered(waiter, take, out)

    def _failed(self, exc: Exception, waiter: _Waiter | None, gives: list[Give],
                pause: float | None, renew: bool, sync: bool) -> None:
        self.errors += 1
        log.warning("lane %s: the shared limits could not be read (%s); trying again in "
                    "%.0f s", self.name, exc, ERROR_RETRY_S)
        self.gives[:0] = gives
        if pause is not None:
            self.pause_until = max(self.pause_until or 0.0, pause)
        self.want_renew |= renew
        self.want_sync |= sync
        if waiter is not None:
            self.asking = None
            self.wait_until = self.clock.monotonic() + ERROR_RETRY_S
            self.dispatch()

    def _renewed(self, asked: list[str], renewed: set[str]) -> None:
        for claim in asked:
            if claim not in renewed and self.claims.pop(claim, None) is not None:
                log.warning("lane %s: a call's slot expired and was claimed by another "
                            "call before it was renewed (this node stalled?)", self.name)

    def _answered(self, waiter: _Waiter, take: Take, out: Outcome) -> None:
        self.asking = None
        self.answers += 1
        now = self.clock.monotonic()
        if take.backfill:
            self.backfill_at = now if out.taken else now + BACKFILL_S
            self.backfilled += out.taken
        if out.taken:
            self.full_polls = 0
            if waiter.queued and not waiter.future.done():
                self.commit(waiter)
                self._spend(now)
                if take.backfill:
                    self.in_flight += 1  # past this node's part: not in its buckets
                else:
                    self.take(waiter.tokens)
                if out.slot is not None:
                    self.claims[take.claim] = out.slot
                permit = (out.slot, take.claim if out.slot is not None else None,
                          take.backfill)
                waited = now - waiter.t0
                self.granted += 1
                self.waited += 1
                self.waits.append(waited)
                waiter.future.set_result(Grant(self, waiter.priority, waiter.position, waited,
                                               waiter.tokens, permit))
            else:  # cancelled while the store was asked: nothing was sent
                self.gives.append(Give(slot=out.slot, claim=take.claim, tokens=take.tokens,
                                       request=True))
        elif not take.backfill or out.refused == "paused":
            assert out.refused is not None
            self.refused[out.refused] += 1
            self.refused_at = now
            if out.refused == "full":
                poll = min(POLL_MIN_S * 2 ** self.full_polls, POLL_MAX_S)
                self.full_polls += 1
                self.full["any" if take.interactive else "unreserved"] = now + poll
            else:
                self.wait_until = now + max(out.wait_s, 1e-3)
            if not self.registered and self.sync_timer is None:
                self._sync()  # tell the others at once
        self.dispatch()

    # -- demand and shares -------------------------------------------------------------

    def _sync(self) -> None:
        self.sync_timer = None
        self.want_sync = True
        self.kick()
        if not self.gate.closed:
            self.sync_timer = self.clock.call_later(SYNC_S, self._tick)

    def _tick(self) -> None:
        self.sync_timer = None
        if self.root.backlog or self.registered:
            self._sync()
        else:
            self._unpace()

    def _waiting_for_cluster(self) -> bool:
        """Calls wait here that the cluster holds back: refused lately, or paced."""
        return bool(self.root.backlog) and (
            self.paced or self.clock.monotonic() - self.refused_at < DEMAND_WINDOW_S)

    def _demand(self) -> Demand:
        demand: Demand = {}
        for klass, node in self.root.children.items():
            if not node.backlog or not isinstance(node, _Inner):
                continue
            tenants = {tenant: self.tenant_w.get((klass, tenant), 1.0)
                       for tenant, child in node.children.items() if child.backlog}
            if tenants:
                demand[klass] = (self.class_w.get(klass, 1.0), tenants)
        return demand

    def _demand_row(self) -> str | None:
        if self._waiting_for_cluster():
            return _encode(self._demand())
        return "" if self.registered else None

    def _synced(self, sent: str | None, others: Mapping[str, str]) -> None:
        if sent is not None:
            self.registered = bool(sent)
        self.others = {node: d for node, raw in others.items()
                       if (d := _decode(raw)) is not None}
        self.others_at = self.clock.monotonic()
        self._reshare()

    def _reshare(self) -> None:
        """Pace this node to its part of the lane, if other nodes wait for it too."""
        own = self._demand()
        if not self.registered or not self.others or not own:
            self._unpace()
            return
        share, classes, tenants = node_share(own, self.others.values())
        self._set_share(max(share, 1e-3))
        self._weigh(classes, tenants)
        self.dispatch()

    def _unpace(self) -> None:
        if self.paced or self.share != 1.0:
            self._set_share(1.0)
            self._weigh({}, {})
            self.dispatch()

    def _set_share(self, share: float) -> None:
        self.share = share
        self.paced = share < 1.0 - 1e-9
        full = self.shared
        now = self.clock.monotonic()
        if full.concurrency is not None:
            self._spend(now)
            part = full.concurrency * share
            whole = math.floor(part + 1e-9)
            self.frac = 0.0 if part - whole < 1e-3 or not self.paced else part - whole
            self.concurrency = max(1, min(full.concurrency, whole + (1 if self.frac else 0)))
        for bucket, per_minute, floor in ((self.rpm, full.rpm, 1.0),
                                          (self.tpm, full.tpm, 0.0)):
            if bucket is not None and per_minute:
                _rescale(bucket, per_minute * share, full.burst_s, floor, now)

    def _weigh(self, classes: dict[str, float], tenants: dict[tuple[str, str], float]
               ) -> None:
        """Weigh this node's classes and tenants by their parts of its share (scaled
        to their configured weights' sums), so that its order serves each its part;
        the configured weights when it is not paced (none given)."""
        _rescaled(classes, self.class_w)
        for klass in {k for k, _ in tenants}:
            part = {t: w for (k, t), w in tenants.items() if k == klass}
            _rescaled(part, {t: w for (k, t), w in self.tenant_w.items() if k == klass})
            tenants.update({(klass, t): w for t, w in part.items()})
        self.eff_class, self.eff_tenant = classes, tenants
        for klass, node in self.root.children.items():
            node.weight = classes.get(klass, self.class_w.get(klass, node.weight))
            if isinstance(node, _Inner):
                for tenant, child in node.children.items():
                    child.weight = tenants.get((klass, tenant),
                                               self.tenant_w.get((klass, tenant),
                                                                 child.weight))

    # -- the end -------------------------------------------------------------------------

    def stop(self) -> None:
        if self.sync_timer is not None:
            self.sync_timer.cancel()
            self.sync_timer = None
        self.arm(None)

    async def hand_back(self) -> None:
        """At shutdown: free the slots still claimed, drop the demand row."""
        gives = [Give(slot=slot, claim=claim) for claim, slot in self.claims.items()]
        self.claims.clear()
        if not gives and not self.registered:
            return
        await self.gate.store.limit_exchange(self.name, Exchange(
            node=self.gate.node_id, now=self.clock.time(), rates=self.rates, gives=gives,
            demand="" if self.registered else None))
        self.registered = False

    def metrics(self, now: float) -> dict[str, Any]:
        figures = super().metrics(now)
        figures["limits"] = self.shared.as_dict()
        samples = sorted(self.exchange_s)
        n = len(samples)

        def pct(q: float) -> float:
            return round(samples[max(0, math.ceil(q * n) - 1)] * 1000.0, 3) if n else 0.0

        fresh = now - self.others_at < DEMAND_TTL_S
        figures["cluster"] = {
            "share": round(self.share, 4), "paced": self.paced,
            "other_nodes_waiting": len(self.others) if fresh else 0,
            "exchanges": self.exchanges, "answers": self.answers,
            "backfilled": self.backfilled,
            "refused": dict(self.refused), "errors": self.errors,
            "slots_held": len(self.claims),
            "exchange_ms": {"p50": pct(0.5), "p99": pct(0.99), "max": pct(1.0)}}
        return figures


def _rescale(bucket: _Bucket, per_minute: float, burst_s: float, floor: float,
             now: float) -> None:
    """Set a bucket to a new rate (its level kept, within its new size)."""
    bucket.refill(now)
    bucket.rate = per_minute / 60.0
    bucket.capacity = max(floor, bucket.rate * burst_s)
    bucket.level = min(bucket.level, bucket.capacity)


def _rescaled(parts: dict[Any, float], configured: Mapping[Any, float]) -> None:
    """Scale ``parts`` so that they sum to what their configured weights sum to (a
    class or tenant that starts waiting before the next split is weighed on the same
    scale as those that have one)."""
    total = sum(parts.values())
    if total <= 0:
        return
    scale = sum(configured.get(k, 1.0) for k in parts) / total
    for key in parts:
        parts[key] *= scale
