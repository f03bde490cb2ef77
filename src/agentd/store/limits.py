"""The cluster's shared rate limits: one row per scheduler lane, one per concurrency
slot, one per node that wants more than it gets (migration 21).

A node's scheduler (``agentd.runtime.cluster_limits``) decides the order of its own
calls; what this module keeps decides *when* any node may send one, so that every
node sharing the database stays within one lane's limits together.

- ``limit_lanes``: a lane's rate limits as GCRA (the generic cell rate algorithm, a
  token bucket kept as one time): ``rpm_tat`` and ``tpm_tat`` are the theoretical
  arrival times of each bucket, the moment it would be full again. Taking ``n`` units
  moves the time on by ``n`` intervals (``60 / limit`` s each) from ``max(tat, now)``;
  it is allowed while the time stays within the bucket's capacity of ``now``. One row
  holds both buckets and ``paused_until`` (a provider's ``Retry-After``), so a call is
  admitted by both buckets or by neither. ``granted`` counts admissions.
- ``limit_slots``: one row per concurrency slot (``slot`` from 0 to the limit - 1). A
  call holds a slot through a claim (``holder``, unique per call) that expires at
  ``expires_at`` unless its node renews it: a node that dies frees its slots within
  one expiry, and the claim id keeps a node that stalled past it from freeing a slot
  another call has since claimed. Slots below ``reserve`` are the interactive class's.
- ``limit_demand``: a node that has calls waiting for this lane says so (``demand``:
  its waiting classes and tenants with their weights, as JSON) until ``until``; the
  nodes read each other's to share the lane as one scheduler would.

Every change to a lane's rows is made in one transaction that locks the lane's row
first (``FOR UPDATE`` on PostgreSQL; SQLite has one writer): every node's exchanges
with a lane are serialised, and none waits for another in a different order. Times
are the nodes' wall clocks (the store's clock), like leases: a node whose clock runs
``d`` seconds ahead of the others can take ``d`` seconds of the rate early, once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from agentd.clock import Clock
from agentd.store.engine import Engine, Tx

__all__ = ["Exchange", "Give", "LimitStore", "Outcome", "Rates", "Take", "gcra"]

#: Slack for float error in GCRA comparisons (seconds).
_EPS = 1e-9
#: Claims renewed per statement.
_CHUNK = 200


@dataclass(frozen=True, kw_only=True, slots=True)
class Rates:
    """A lane's rate limits as GCRA parameters (None: no limit of that kind)."""

    #: Seconds per request (``60 / rpm``) and the bucket's size in requests (>= 1).
    rpm_interval: float | None = None
    rpm_capacity: float = 1.0
    #: Seconds per token (``60 / tpm``) and the bucket's size in tokens.
    tpm_interval: float | None = None
    tpm_capacity: float = 0.0

    @classmethod
    def of(cls, rpm: float | None, tpm: float | None, burst_s: float) -> Rates:
        """The parameters of limits given per minute, buckets holding ``burst_s`` of
        them (the same sizes as the scheduler's own buckets)."""
        return cls(rpm_interval=60.0 / rpm if rpm else None,
                   rpm_capacity=max(1.0, rpm / 60.0 * burst_s) if rpm else 1.0,
                   tpm_interval=60.0 / tpm if tpm else None,
                   tpm_capacity=tpm / 60.0 * burst_s if tpm else 0.0)


@dataclass(frozen=True, kw_only=True, slots=True)
class Give:
    """What a call hands back when it ends (or was never sent)."""

    #: The slot and the claim that holds it (None: no concurrency limit).
    slot: int | None = None
    claim: str | None = None
    #: Tokens to give back to the token bucket (negative: the call used more than it
    #: reserved, and the bucket goes further into debt).
    tokens: float = 0.0
    #: Give the request back too (a call granted but never sent).
    request: bool = False


@dataclass(frozen=True, kw_only=True, slots=True)
class Take:
    """One call asking to go."""

    tokens: float = 0.0
    #: Concurrency: the lane's limit (None: none), the slots kept for interactive
    #: calls, whether this call is one, and its claim id (unique per call).
    concurrency: int | None = None
    reserve: int = 0
    interactive: bool = False
    claim: str = ""
    #: Only what nobody else is using: admitted if half of each bucket stays full
    #: after it, and a second slot stays free (a node past its share of the lane
    #: takes what would otherwise go unused).
    backfill: bool = False


@dataclass(kw_only=True, slots=True)
class Exchange:
    """Everything one node has for one lane, done in one transaction, in this order:
    gives, pause, renewals, the take, its demand, then reading the other nodes'."""

    node: str
    now: float
    rates: Rates
    gives: Sequence[Give] = ()
    #: Extend the lane's pause to this wall time (a 429's ``Retry-After``).
    pause_until: float | None = None
    #: Claims to renew, and for how long from ``now``.
    renew: Sequence[str] = ()
    ttl_s: float = 30.0
    take: Take | None = None
    #: This node's demand (JSON) to record until ``now + demand_ttl_s``; "" removes it;
    #: None leaves it as it is.
    demand: str | None = None
    demand_ttl_s: float = 3.0
    #: Read the other nodes' demand.
    read: bool = False


@dataclass(kw_only=True, slots=True)
class Outcome:
    """What came of an exchange."""

    #: The take was admitted (False when there was none).
    taken: bool = False
    #: The slot it claimed (None: no concurrency limit, or not admitted).
    slot: int | None = None
    #: Not admitted: why, and (for ``rate`` and ``paused``) in how many seconds it
    #: would be; ``full``: no slot is free (nobody can say when one will be).
    refused: Literal["rate", "paused", "full"] | None = None
    wait_s: float = 0.0
    #: The renewed claims still held (the others expired and were claimed again).
    renewed: set[str] = field(default_factory=set)
    #: The other nodes' demand (node id -> JSON), when read.
    others: dict[str, str] | None = None


def gcra(tat: float, now: float, interval: float, capacity: float, amount: float,
         keep: float = 0.0) -> tuple[float, float]:
    """One GCRA bucket asked for ``amount``: ``(0, new tat)`` when it may be taken,
    else ``(seconds to wait, tat)``. A call bigger than the bucket is let through
    when the bucket is full and leaves it in debt, as the scheduler's buckets do.
    ``keep``: what must stay in the bucket after (a full bucket always lets one
    through)."""
    base = max(tat, now)
    allowed = max(0.0, capacity - min(amount, capacity) - keep) * interval
    ahead = base - now
    if ahead > allowed + _EPS:
        return ahead - allowed, tat
    return 0.0, base + amount * interval


def _given_back(tat: float, now: float, interval: float, amount: float) -> float:
    """The bucket's time after ``amount`` is given back (negative: taken more); a full
    bucket stays full."""
    return max(max(tat, now) - amount * interval, now)


class LimitStore:
    """The Store's shared-limit methods (a mixin; :class:`agentd.store.Store`)."""

    engine: Engine
    clock: Clock

    async def limit_exchange(self, lane: str, ex: Exchange) -> Outcome:
        """Do everything ``ex`` holds for ``lane`` in one transaction (see
        :class:`Exchange`)."""
        dialect = self.engine.dialect
        return await self.engine.write(lambda tx: _exchange(tx, dialect, lane, ex))

    async def limit_forget_node(self, node: str) -> int:
        """Free every slot and drop every demand ``node`` holds (a node starting again:
        what its previous life held is nobody's). Returns the slots freed."""
        def op(tx: Tx) -> int:
            tx.execute("UPDATE limit_slots SET holder = NULL, node_id = NULL, "
                       "expires_at = 0 WHERE node_id = ?", (node,))
            freed = tx.rowcount
            tx.execute("DELETE FROM limit_demand WHERE node_id = ?", (node,))
            return freed

        return await self.engine.write(op)

    async def limit_state(self, lane: str, now: float | None = None) -> dict[str, object]:
        """A lane's shared state, for operators and tests: admissions, the slots held
        (by node) and the nodes waiting, at ``now`` (None: the store's clock)."""
        now = self.clock.time() if now is None else now

        def op(tx: Tx) -> dict[str, object]:
            row = tx.one("SELECT granted, paused_until FROM limit_lanes WHERE lane = ?",
                         (lane,))
            held = tx.all("SELECT node_id, COUNT(*) FROM limit_slots WHERE lane = ? AND "
                          "holder IS NOT NULL AND expires_at >= ? GROUP BY node_id",
                          (lane, now))
            demand = tx.all("SELECT node_id FROM limit_demand WHERE lane = ? AND until > ?",
                            (lane, now))
            return {"granted": int(row[0]) if row else 0,
                    "paused_for_s": max(0.0, float(row[1]) - now) if row else 0.0,
                    "slots_held": {str(n): int(c) for n, c in held},
                    "nodes_waiting": sorted(str(r[0]) for r in demand)}

        return await self.engine.read(op)


def _lane_row(tx: Tx, dialect: str, lane: str) -> tuple[float, float, float]:
    if dialect == "postgresql":
        # Locked first, always. What a crash of the database could lose is a few
        # milliseconds of buckets and claims (a claim lost frees its slot early; one
        # kept, late): not worth a WAL flush on every model call, so the transaction
        # commits without waiting for one (set in the same statement: no round trip).
        sql = ("SELECT rpm_tat, tpm_tat, paused_until, "
               "set_config('synchronous_commit', 'off', true) "
               "FROM limit_lanes WHERE lane = ? FOR UPDATE")
    else:  # (one writer)
        sql = "SELECT rpm_tat, tpm_tat, paused_until FROM limit_lanes WHERE lane = ?"
    row = tx.one(sql, (lane,))
    if row is None:
        tx.execute("INSERT INTO limit_lanes (lane) VALUES (?) ON CONFLICT DO NOTHING",
                   (lane,))
        row = tx.one(sql, (lane,))
        assert row is not None
    return float(row[0]), float(row[1]), float(row[2])


# complexity: one transaction's steps in their order (gives, pause, renewals, the
# take, demand); split, the order that makes it deadlock-free would be spread out.
def _exchange(tx: Tx, dialect: str, lane: str, ex: Exchange) -> Outcome:
    now, rates = ex.now, ex.rates
    rpm_tat, tpm_tat, paused_until = _lane_row(tx, dialect, lane)
    before = (rpm_tat, tpm_tat, paused_until)
    granted = 0
    for give in ex.gives:
        if give.slot is not None:
            tx.execute("UPDATE limit_slots SET holder = NULL, node_id = NULL, expires_at = 0 "
                       "WHERE lane = ? AND slot = ? AND holder = ?",
                       (lane, give.slot, give.claim))
        if rates.tpm_interval and give.tokens:
            tpm_tat = _given_back(tpm_tat, now, rates.tpm_interval, give.tokens)
        if rates.rpm_interval and give.request:
            rpm_tat = _given_back(rpm_tat, now, rates.rpm_interval, 1.0)
    if ex.pause_until is not None:
        paused_until = max(paused_until, ex.pause_until)
    out = Outcome()
    if ex.renew:
        out.renewed = _renew(tx, lane, ex.renew, now + ex.ttl_s)
    if ex.take is not None:
        rpm_tat, tpm_tat, granted = _take(tx, dialect, lane, ex, out,
                                          (rpm_tat, tpm_tat, paused_until))
    if (rpm_tat, tpm_tat, paused_until) != before or granted:
        tx.execute("UPDATE limit_lanes SET rpm_tat = ?, tpm_tat = ?, paused_until = ?, "
                   "granted = granted + ? WHERE lane = ?",
                   (rpm_tat, tpm_tat, paused_until, granted, lane))
    if ex.demand == "":
        tx.execute("DELETE FROM limit_demand WHERE lane = ? AND node_id = ?", (lane, ex.node))
    elif ex.demand is not None:
        tx.execute("INSERT INTO limit_demand (lane, node_id, demand, until) VALUES (?, ?, ?, ?)"
                   " ON CONFLICT (lane, node_id) DO UPDATE SET demand = excluded.demand, "
                   "until = excluded.until", (lane, ex.node, ex.demand, now + ex.demand_ttl_s))
    if ex.read:
        out.others = {str(n): str(d) for n, d in tx.all(
            "SELECT node_id, demand FROM limit_demand WHERE lane = ? AND node_id <> ? AND "
            "until > ?", (lane, ex.node, now))}
    return out


def _renew(tx: Tx, lane: str, claims: Sequence[str], until: float) -> set[str]:
    renewed: set[str] = set()
    for i in range(0, len(claims), _CHUNK):
        chunk = list(claims[i:i + _CHUNK])
        marks = ", ".join("?" * len(chunk))
        renewed.update(str(r[0]) for r in tx.all(
            f"UPDATE limit_slots SET expires_at = ? WHERE lane = ? AND holder IN ({marks}) "
            "RETURNING holder", (until, lane, *chunk)))
    return renewed


def _take(tx: Tx, dialect: str, lane: str, ex: Exchange, out: Outcome,
          state: tuple[float, float, float]) -> tuple[float, float, int]:
    """The take's verdict in ``out``; the lane's bucket times after it and whether it
    was granted."""
    take, rates, now = ex.take, ex.rates, ex.now
    assert take is not None
    rpm_tat, tpm_tat, paused_until = state
    if paused_until > now + _EPS:
        out.refused, out.wait_s = "paused", paused_until - now
        return rpm_tat, tpm_tat, 0
    wait = 0.0
    new_rpm, new_tpm = rpm_tat, tpm_tat
    keep = 0.5 if take.backfill else 0.0
    if rates.rpm_interval:
        short, new_rpm = gcra(rpm_tat, now, rates.rpm_interval, rates.rpm_capacity, 1.0,
                              keep * rates.rpm_capacity)
        wait = max(wait, short)
    if rates.tpm_interval:
        short, new_tpm = gcra(tpm_tat, now, rates.tpm_interval, rates.tpm_capacity,
                              take.tokens, keep * rates.tpm_capacity)
        wait = max(wait, short)
    if wait > 0.0:
        out.refused, out.wait_s = "rate", wait
        return rpm_tat, tpm_tat, 0
    if take.concurrency is not None:
        slot = _claim(tx, dialect, lane, take, now + ex.ttl_s, ex.node, now)
        if slot is None:
            out.refused = "full"
            return rpm_tat, tpm_tat, 0
        out.slot = slot
    out.taken = True
    return new_rpm, new_tpm, 1


def _claim(tx: Tx, dialect: str, lane: str, take: Take, until: float, node: str,
           now: float) -> int | None:
    """Claim a free slot (one whose claim expired counts as free), or None."""
    assert take.concurrency is not None
    skip = " FOR UPDATE SKIP LOCKED" if dialect == "postgresql" else ""
    # An interactive call takes the unreserved slots first, keeping the reserve for
    # the next interactive call; the others never take a reserved one.
    low, order = (0, "DESC") if take.interactive else (take.reserve, "ASC")
    # Found and claimed in one statement.
    find = ("UPDATE limit_slots SET holder = ?, node_id = ?, expires_at = ? WHERE lane = ? "
            "AND slot = (SELECT slot FROM limit_slots WHERE lane = ? AND slot >= ? AND "
            f"slot < ? AND (holder IS NULL OR expires_at < ?) ORDER BY slot {order} "
            f"LIMIT 1{skip}) RETURNING slot")
    args = (lane, low, take.concurrency, now)
    claim = (take.claim, node, until, lane, *args)
    if take.backfill:
        free = tx.one("SELECT COUNT(*) FROM limit_slots WHERE lane = ? AND slot >= ? AND "
                      "slot < ? AND (holder IS NULL OR expires_at < ?)", args)
        if free is None or int(free[0]) < 2:
            return None
    row = tx.one(find, claim)
    if row is None:
        have = tx.one("SELECT COUNT(*) FROM limit_slots WHERE lane = ? AND slot < ?",
                      (lane, take.concurrency))
        if have is not None and int(have[0]) >= take.concurrency:
            return None
        tx.executemany("INSERT INTO limit_slots (lane, slot) VALUES (?, ?) "
                       "ON CONFLICT DO NOTHING",
                       [(lane, n) for n in range(take.concurrency)])
        row = tx.one(find, claim)
        if row is None:
            return None
    return int(row[0])
