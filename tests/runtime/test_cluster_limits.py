"""One rate limit across the cluster (agentd.runtime.cluster_limits): several nodes'
schedulers, each with its own gate, sharing one store (SQLite and PostgreSQL), on a
FakeClock the test moves. Between two moves every exchange with the store is waited
for, so what each node sees is exact and no assertion depends on the machine's speed:
counts of grants in windows of fake time."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentd.assembly import Runtime
from agentd.config import ProviderLimits, Settings
from agentd.runtime.cluster_limits import (
    DEMAND_TTL_S,
    POLL_MAX_S,
    ClusterGate,
    Demand,
    node_share,
)
from agentd.runtime.scheduler import LaneLimits, Scheduler
from agentd.store import Store, open_store
from agentd.testing import FakeClock

TTL_S = 30.0


@dataclass
class Call:
    node: int
    priority: str
    tenant: str
    at: float  # granted (fake monotonic seconds)
    end: float = float("inf")  # released


@dataclass
class Cluster:
    """``n`` nodes' schedulers on one store, each with a gate of its own."""

    store: Store
    clock: FakeClock
    gates: list[ClusterGate]
    nodes: list[Scheduler]
    calls: list[Call] = field(default_factory=list)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def quiet(self) -> None:
        """Until nothing is under way: every exchange with the store answered, every
        task woken by one run up to its next wait."""
        while True:
            for _ in range(30):
                await asyncio.sleep(0)
            if not any(g.busy() for g in self.gates):
                return
            for gate in self.gates:
                await gate.idle()

    async def run(self, seconds: float) -> None:
        """Move the clock ``seconds`` on, one timer at a time, quiet after each."""
        end = self.clock.monotonic() + seconds
        while True:
            await self.quiet()
            step = self.clock.next_deadline()
            if step is None or self.clock.monotonic() + step > end:
                break
            await self.clock.advance(step)
        await self.clock.advance(max(0.0, end - self.clock.monotonic()))
        await self.quiet()

    def load(self, node: int, count: int, *, priority: str = "background",
             tenant: str = "default", hold: float = 0.0, tokens: int = 0,
             used: int | None = None) -> None:
        """``count`` calls on ``node``, each held ``hold`` seconds once granted."""
        async def one() -> None:
            grant = await self.nodes[node].acquire(provider="p", model="m",
                                                   priority=priority, tenant=tenant,
                                                   tokens=tokens)
            call = Call(node, priority, tenant, self.clock.monotonic())
            self.calls.append(call)
            try:
                if hold:
                    await self.clock.sleep(hold)
            finally:
                call.end = self.clock.monotonic()
                grant.release(used)

        self.tasks += [asyncio.create_task(one()) for _ in range(count)]

    def granted(self, since: float = 0.0, until: float = float("inf"), *,
                by: str = "node") -> Counter[Any]:
        return Counter(getattr(c, by) for c in self.calls if since <= c.at < until)

    def most_in(self, window: float) -> int:
        times = sorted(c.at for c in self.calls)
        most, j = 0, 0
        for i, start in enumerate(times):
            while j < len(times) and times[j] <= start + window + 1e-9:
                j += 1
            most = max(most, j - i)
        return most

    def most_in_flight(self) -> int:
        # (a call released at the moment another is granted is counted out first)
        edges = sorted([(c.at, 1) for c in self.calls] + [(c.end, -1) for c in self.calls])
        most = now = 0
        for _, step in edges:
            now += step
            most = max(most, now)
        return most


@contextlib.asynccontextmanager
async def cluster(store_url: str, limits: LaneLimits, n: int = 3, *,
                  tenant_weights: Mapping[str, float] | None = None
                  ) -> AsyncIterator[Cluster]:
    clock = FakeClock()
    store = await open_store(store_url, clock=clock)
    gates = [ClusterGate(store, node_id=f"node-{i}", lanes=["p"], ttl_s=TTL_S, clock=clock)
             for i in range(n)]
    nodes = [Scheduler({"p": limits}, clock=clock, gate=g, tenant_weights=tenant_weights)
             for g in gates]
    c = Cluster(store, clock, gates, nodes)
    try:
        yield c
    finally:
        for task in c.tasks:
            task.cancel()
        await asyncio.gather(*c.tasks, return_exceptions=True)
        for gate in gates:
            await gate.close()
        await store.close()


# -- the limit holds, and is used ----------------------------------------------------


async def test_three_nodes_send_no_more_than_the_rate_and_use_all_of_it(
        store_url: str) -> None:
    rpm, burst = 120.0, 2  # two a second; a bucket of one second (two requests)
    async with cluster(store_url, LaneLimits(rpm=rpm)) as c:
        for node in range(3):
            c.load(node, 200, tenant=f"t{node}")
        await c.run(30.0)
        total = sum(c.granted().values())
        # Each node alone would send two a second: 180 in 30 s. Together: the rate
        # (60 in 30 s) and one bucket.
        assert total <= 2.0 * 30 + burst
        for window in (0.5, 1.0, 5.0, 10.0, 30.0):
            assert c.most_in(window) <= 2.0 * window + burst, window
        assert total >= 0.95 * 2.0 * 30  # and none of it is wasted
        # Equally busy nodes share it equally.
        shares = c.granted(since=c.calls[0].at + 5)
        assert max(shares.values()) - min(shares.values()) <= 2, shares


async def test_a_lane_alone_on_its_node_is_not_paced(store_url: str) -> None:
    async with cluster(store_url, LaneLimits(rpm=120.0, concurrency=4)) as c:
        c.load(0, 100, hold=1.0)
        await c.run(20.0)
        assert sum(c.granted().values()) >= 38
        lane = c.nodes[0].metrics()["lanes"]["p"]
        assert lane["cluster"]["share"] == 1.0 and not lane["cluster"]["paced"]
        assert lane["limits"]["concurrency"] == 4


async def test_tokens_per_minute_are_kept_across_nodes_and_corrected_by_use(
        store_url: str) -> None:
    # 100 tokens a second, a bucket of 100. Each call reserves 50 and uses 10.
    async with cluster(store_url, LaneLimits(tpm=6000.0), n=2) as c:
        c.load(0, 100, tokens=50, used=10)
        c.load(1, 100, tokens=50, used=10)
        await c.run(10.0)
        # Without the correction 2 calls a second would go; with it, 10 tokens each
        # are kept: ten a second (and a bucket).
        total = sum(c.granted().values())
        assert 0.9 * 100 <= total <= 100 + 10


# -- fair shares between nodes -------------------------------------------------------


async def test_interactive_work_on_one_node_is_not_starved_by_batch_work_on_others(
        store_url: str) -> None:
    async with cluster(store_url, LaneLimits(rpm=120.0)) as c:
        c.load(0, 150, priority="interactive", tenant="a")
        c.load(1, 100, priority="batch", tenant="b")
        c.load(2, 100, priority="batch", tenant="c")
        await c.run(60.0)
        after = c.calls[0].at + 5
        got = c.granted(since=after, by="priority")
        # One node would give interactive 100 / 102 of the lane: so does the cluster.
        assert got["interactive"] >= 0.9 * sum(got.values()), got
        assert c.granted(by="priority")["batch"] >= 1  # batch is not starved either


async def chat(c: Cluster, node: int, turns: int, *, hold: float, gap: float
               ) -> list[float]:
    """A user's chat on ``node``: interactive calls one after another, ``gap`` s
    apart; how long each waited for its grant."""
    waits: list[float] = []
    for _ in range(turns):
        asked = c.clock.monotonic()
        grant = await c.nodes[node].acquire(provider="p", model="m", priority="interactive",
                                            tenant="chat")
        now = c.clock.monotonic()
        call = Call(node, "interactive", "chat", now)
        c.calls.append(call)
        waits.append(now - asked)
        await c.clock.sleep(hold)
        call.end = c.clock.monotonic()
        grant.release()
        await c.clock.sleep(gap)
    return waits


async def test_what_a_chat_leaves_unused_goes_to_the_batch_work(store_url: str) -> None:
    """A chat on node 0 asks for half the lane; batch work on nodes 1 and 2 could use
    all of it. The chat gets every call it asks for, and the batch work the rest (the
    lane is not left idle because the chat has the larger share)."""
    async with cluster(store_url, LaneLimits(rpm=240.0)) as c:  # 4 a second
        c.load(1, 400, priority="batch", tenant="b")
        c.load(2, 400, priority="batch", tenant="c")
        talk = asyncio.create_task(chat(c, 0, 40, hold=0.25, gap=0.25))
        c.tasks.append(talk)  # (cancelled at the end if it is not done)
        await c.run(30.0)
        waits = await talk
        got = c.granted(since=c.calls[0].at + 2, until=c.calls[0].at + 18, by="priority")
        assert 0.95 * 16 * 4 <= sum(got.values()) <= 16 * 4 + 4, got
        # A chat's call waits for a node that was not waiting to hear of it: at most
        # about a second, once; one node would let it go at the next token.
        assert sorted(waits)[len(waits) // 2] <= 0.25
        assert max(waits) <= 1.5, waits


async def test_a_reserve_lets_a_chat_through_at_once_whatever_other_nodes_run(
        store_url: str) -> None:
    async with cluster(store_url, LaneLimits(concurrency=4, reserve=1)) as c:
        c.load(1, 400, priority="batch", tenant="b", hold=0.5)
        c.load(2, 400, priority="batch", tenant="c", hold=0.5)
        talk = asyncio.create_task(chat(c, 0, 20, hold=0.5, gap=0.5))
        c.tasks.append(talk)
        await c.run(25.0)
        assert await talk == [0.0] * 20
        assert c.most_in_flight() == 4
        # The batch work keeps the three other slots busy: 6 calls a second.
        got = c.granted(since=c.calls[0].at + 2, until=c.calls[0].at + 18, by="priority")
        assert got["batch"] >= 0.9 * 16 * 6, got


@pytest.mark.parametrize(("weights", "ratio"), [((1.0, 1.0), 1.0), ((1.0, 3.0), 3.0)])
async def test_tenant_weights_hold_across_nodes(store_url: str, weights: tuple[float, float],
                                                ratio: float) -> None:
    """Tenant t2 waits on two nodes, t1 on the third: the cluster serves them by their
    weights, as one node would, not by their numbers of nodes (1 : 2 for equal
    weights)."""
    async with cluster(store_url, LaneLimits(rpm=120.0),
                       tenant_weights={"t1": weights[0], "t2": weights[1]}) as c:
        c.load(0, 300, tenant="t1")
        c.load(1, 300, tenant="t2")
        c.load(2, 300, tenant="t2")
        await c.run(40.0)
        got = c.granted(since=c.calls[0].at + 5, by="tenant")
        assert 0.85 * ratio <= got["t2"] / got["t1"] <= 1.15 * ratio, got


async def test_a_tenant_on_two_nodes_gets_its_share_not_one_per_node(
        store_url: str) -> None:
    """t1 and t2 wait on node 0, t2 on node 1 as well: equal weights, equal shares
    (node 0 weighs its own tenants by their parts of the cluster)."""
    async with cluster(store_url, LaneLimits(rpm=120.0), n=2) as c:
        c.load(0, 300, tenant="t1")
        c.load(0, 300, tenant="t2")
        c.load(1, 300, tenant="t2")
        await c.run(40.0)
        got = c.granted(since=c.calls[0].at + 5, by="tenant")
        assert 0.8 <= got["t2"] / got["t1"] <= 1.25, got


# -- concurrency -----------------------------------------------------------------------


async def test_a_concurrency_limit_holds_across_nodes_and_is_shared(store_url: str) -> None:
    async with cluster(store_url, LaneLimits(concurrency=4)) as c:
        for node in range(3):
            c.load(node, 100, tenant=f"t{node}", hold=2.0)
        await c.run(60.0)
        assert c.most_in_flight() == 4
        got = c.granted(since=10.0 + c.calls[0].at)
        # 4 slots for 2 s each: 2 calls a second, a third of them each.
        assert sum(got.values()) >= 0.9 * 2 * 50
        assert max(got.values()) / min(got.values()) <= 1.3, got


async def test_the_interactive_reserve_and_priority_hold_for_slots(store_url: str) -> None:
    async with cluster(store_url, LaneLimits(concurrency=4, reserve=1)) as c:
        c.load(1, 100, priority="batch", tenant="b", hold=2.0)
        c.load(2, 100, priority="batch", tenant="c", hold=2.0)
        await c.run(5.0)
        # Batch alone: three slots (one is kept for interactive calls).
        assert c.most_in_flight() == 3
        c.load(0, 300, priority="interactive", tenant="a", hold=2.0)
        await c.run(60.0)
        assert c.most_in_flight() == 4
        got = c.granted(since=c.clock.monotonic() - 40, by="priority")
        assert got["interactive"] >= 0.9 * sum(got.values()), got


async def test_a_dead_nodes_slots_are_free_after_the_ttl_and_a_live_ones_are_kept(
        store_url: str) -> None:
    async with cluster(store_url, LaneLimits(concurrency=2), n=2) as c:
        c.load(0, 2, hold=1000.0)  # node 0 takes both slots, then "dies"
        await c.run(0.1)
        assert len(c.calls) == 2
        c.load(1, 1)
        await c.run(TTL_S - 1.0)
        assert len(c.calls) == 2  # the slots are node 0's until their claims lapse
        await c.run(1.0 + POLL_MAX_S + 0.1)
        assert [call.node for call in c.calls] == [0, 0, 1]
        # A node that lives renews its claims: its slot is never taken from it.
        c.load(1, 2, hold=100.0)
        await c.run(1.0)
        c.load(0, 1)  # (node 0's gate is alive in this process: its call waits)
        for _ in range(10):
            await c.gates[1].renew()
            await c.run(TTL_S / 3)
        assert [call.node for call in c.calls] == [0, 0, 1, 1, 1]


async def test_a_call_cancelled_while_the_store_is_asked_gives_its_slot_back(
        store_url: str) -> None:
    async with cluster(store_url, LaneLimits(concurrency=1, rpm=60.0), n=2) as c:
        waiting = asyncio.create_task(c.nodes[0].acquire(provider="p", model="m"))
        for _ in range(3):
            await asyncio.sleep(0)
        assert c.gates[0].busy()  # the store is being asked
        waiting.cancel()
        await c.quiet()
        assert (await c.store.limit_state("p", c.clock.time()))["slots_held"] == {}
        assert c.nodes[0].queued() == 0
        # Its request was given back too: the other node's call goes at once.
        c.load(1, 1)
        await c.run(0.0)
        assert len(c.calls) == 1


async def test_a_reload_gives_every_node_the_new_rate(store_url: str) -> None:
    """A configuration reload (Scheduler.reconfigure) changes a shared lane's limits:
    the cluster keeps the new rate from then on."""
    async with cluster(store_url, LaneLimits(rpm=120.0)) as c:
        for node in range(3):
            c.load(node, 300, tenant=f"t{node}")
        await c.run(10.0)
        before = sum(c.granted().values())
        assert before <= 2.0 * 10 + 2
        for node in c.nodes:
            node.reconfigure({"p": LaneLimits(rpm=600.0)}, shared=frozenset({"p"}))
            assert node.metrics()["lanes"]["p"]["limits"]["rpm"] == 600.0
        start = c.clock.monotonic()
        await c.run(20.0)
        after = sum(c.granted(since=start + 1.0).values())  # ten a second now
        assert 0.9 * 10 * 19 <= after <= 10 * 19 + 10 + 2, after


async def test_a_node_closing_hands_back_its_slots(store_url: str) -> None:
    async with cluster(store_url, LaneLimits(concurrency=1), n=2) as c:
        c.load(0, 1, hold=1000.0)
        await c.run(0.1)
        c.load(1, 1)
        await c.run(1.0)
        assert [call.node for call in c.calls] == [0]
        await c.gates[0].close()
        await c.run(POLL_MAX_S + 0.1)
        assert [call.node for call in c.calls] == [0, 1]


async def test_a_pause_on_one_node_holds_the_others(store_url: str) -> None:
    async with cluster(store_url, LaneLimits(rpm=600.0), n=2) as c:
        c.nodes[0].pause("p", 5.0)  # a 429's Retry-After there
        await c.quiet()
        c.load(1, 1)
        await c.run(4.9)
        assert c.calls == []
        await c.run(0.2)
        assert [call.node for call in c.calls] == [1]


async def test_a_node_that_stops_waiting_is_forgotten(store_url: str) -> None:
    async with cluster(store_url, LaneLimits(rpm=120.0), n=2) as c:
        c.load(0, 20, tenant="a")
        c.load(1, 300, tenant="b")
        await c.run(30.0)
        # Node 0's 20 calls are done (at half the lane): node 1 has it to itself again.
        assert c.granted()[0] == 20
        await c.run(DEMAND_TTL_S + 2)
        cluster_figures = c.nodes[1].metrics()["lanes"]["p"]["cluster"]
        assert cluster_figures["share"] == 1.0
        before = len(c.calls)
        await c.run(10.0)
        assert len(c.calls) - before >= 19


# -- the split ------------------------------------------------------------------------


def test_node_share_splits_classes_then_tenants_then_nodes() -> None:
    w = {"interactive": 100.0, "background": 10.0, "batch": 1.0}

    def d(**classes: dict[str, float]) -> Demand:
        return {k: (w[k], tenants) for k, tenants in classes.items()}

    share, classes, _ = node_share(d(interactive={"a": 1.0}), [d(batch={"b": 1.0})])
    assert share == pytest.approx(100 / 101)
    assert classes == {"interactive": pytest.approx(100 / 101)}
    share, _, _ = node_share(d(background={"t1": 1.0}),
                             [d(background={"t2": 2.0}), d(background={"t2": 2.0})])
    assert share == pytest.approx(1 / 3)
    share, _, tenants = node_share(d(background={"t1": 1.0, "t2": 1.0}),
                                   [d(background={"t2": 1.0})])
    assert share == pytest.approx(3 / 4)
    assert tenants == {("background", "t1"): pytest.approx(0.5),
                       ("background", "t2"): pytest.approx(0.25)}


_classes = st.sampled_from(["interactive", "background", "batch"])
_demand = st.dictionaries(_classes, st.dictionaries(st.sampled_from("abcde"),
                                                    st.floats(0.1, 10.0), min_size=1),
                          min_size=1)


@given(st.lists(_demand, min_size=1, max_size=5))
def test_the_nodes_shares_add_up_to_the_whole_lane(raw: list[dict[str, dict[str, float]]]
                                                   ) -> None:
    w = {"interactive": 100.0, "background": 10.0, "batch": 1.0}
    # (a tenant has one weight, whichever node reports it)
    weights = {t: tw for d in raw for ts in d.values() for t, tw in ts.items()}
    demands: list[Demand] = [{k: (w[k], {t: weights[t] for t in ts}) for k, ts in d.items()}
                             for d in raw]
    shares = [node_share(own, demands[:i] + demands[i + 1:])[0]
              for i, own in enumerate(demands)]
    assert sum(shares) == pytest.approx(1.0)
    assert all(s > 0 for s in shares)


# -- the daemon ------------------------------------------------------------------------


async def test_a_runtime_shares_its_lanes_only_on_postgresql_and_in_scope_cluster(
        tmp_path: Path, store_url: str) -> None:
    providers = {"openai-compatible": ProviderLimits(rpm=60.0),
                 "anthropic": ProviderLimits(rpm=60.0, scope="node"),
                 "openai": ProviderLimits(burst_s=2.0)}  # no limit: nothing to share
    settings = Settings(home=tmp_path / "home", demo_agent=False, database_url=store_url,
                        providers=providers)
    runtime = await Runtime.open(settings)
    try:
        lanes = runtime.kernel.scheduler._lanes
        if store_url.startswith("sqlite"):
            assert runtime.limits_gate is None
            assert not any(lane.gated for lane in lanes.values())
        else:
            assert runtime.limits_gate is not None
            assert runtime.limits_gate.names == {"openai-compatible"}
            assert [n for n, lane in lanes.items() if lane.gated] == ["openai-compatible"]
            assert "limit_slots" in runtime.housekeeper.jobs
    finally:
        await runtime.close()
