"""One rate limit across the cluster, with real processes: three ``agentd serve``
nodes on one PostgreSQL database, each sent its own share of the load, all calling one
stub provider. What the provider sees is the test: no more requests in any window
than the limit allows, no more in flight than the concurrency limit, and the slots of
a node killed in the middle of its calls free again for the others.

Each bound is checked from the side a slow machine cannot break: a request reaches the
stub after its node was admitted (so arrivals may bunch by the delay in between, which
a second of slack covers), and a call holds its slot for at least the stub's latency
after it arrives (so the arrivals' latency periods overlap no more than slots)."""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.conftest import free_port, wait_until
from tests.daemons import (
    WAIT_S,
    Daemon,
    ForkServer,
    create_agent,
    kinds_of,
    read_events,
    send,
    wait_for_run,
)

from agentd.testing import Capacity, StubLLMServer

pytestmark = pytest.mark.e2e

LANE = "openai-compatible"
TERMINAL = {"completed", "failed", "cancelled"}


def _nodes(tmp_path: Path, pg_url: str, limits: dict[str, object], n: int = 3,
           **env: str) -> list[Daemon]:
    common = {"AGENTD_DATABASE_URL": pg_url, "AGENTD_DEMO_AGENT": "false",
              "AGENTD_PROVIDERS": json.dumps({LANE: limits}), **env}
    return [Daemon(tmp_path / f"node-{i}", tmp_path / f"node-{i}.log",
                   env={**common, "AGENTD_NODE_ID": f"node-{i}"}, args=())
            for i in range(n)]


@pytest.fixture
def stub() -> Iterator[StubLLMServer]:
    with StubLLMServer() as server:
        yield server


def most_in(times: list[float], window: float) -> int:
    times = sorted(times)
    most, j = 0, 0
    for i, start in enumerate(times):
        while j < len(times) and times[j] <= start + window:
            j += 1
        most = max(most, j - i)
    return most


def most_overlapping(times: list[float], length: float) -> int:
    edges = sorted([(t, 1) for t in times] + [(t + length, -1) for t in times])
    most = now = 0
    for _, step in edges:
        now += step
        most = max(most, now)
    return most


@pytest.mark.postgres
def test_three_nodes_keep_one_rate_limit_and_one_concurrency_limit(
        tmp_path: Path, pg_url: str, stub: StubLLMServer) -> None:
    latency, rpm, concurrency = 0.4, 240.0, 3  # 4 a second, a bucket of 4; 3 at once
    stub.capacity = Capacity(latency_s=latency)  # no limit of its own: it only counts
    nodes = _nodes(tmp_path, pg_url, {"rpm": rpm, "concurrency": concurrency})
    try:
        for node in nodes:
            node.start()
        with nodes[0].client() as http:
            create_agent(http, "worker", model=f"{LANE}:stub",
                         settings={"base_url": stub.base_url})
        per_node = 16
        runs: list[tuple[Daemon, str]] = []
        for i, node in enumerate(nodes):
            with node.client() as http:
                for k in range(per_node):
                    sent = send(http, "worker", f"n{i}-s{k}", f"hello {k}", wait=False)
                    assert sent.status_code == 202, sent.text
                    runs.append((node, sent.json()["id"]))
        for node, run_id in runs:
            with node.client() as http:
                assert wait_for_run(http, run_id, TERMINAL)["status"] == "completed"
        times = stub.request_times
        assert len(times) == len(runs)  # one model call per run, none retried
        # Alone, each node would send 4 a second (and 3 at once): 12 a second together.
        for window in (1.0, 2.0, 5.0, times[-1] - times[0]):
            assert most_in(times, window) <= rpm / 60 * (window + 1.0) + 4, (
                window, sorted(t - times[0] for t in times))
        assert most_overlapping(times, latency) <= concurrency
        # Every node's lane says it is shared, and the nodes' grants add up.
        granted = 0
        for node in nodes:
            with node.client() as http:
                lane = http.get("/v1/kernel").json()["scheduler"]["lanes"][LANE]
            assert lane["limits"]["rpm"] == rpm and "cluster" in lane, lane
            granted += lane["granted"]
        assert granted == len(runs)
    finally:
        for node in nodes:
            node.cleanup()


@pytest.mark.postgres
def test_a_killed_nodes_slots_are_freed_for_the_others(
        tmp_path: Path, pg_url: str, stub: StubLLMServer) -> None:
    nodes = _nodes(tmp_path, pg_url, {"concurrency": 2}, n=2, AGENTD_LEASE_TTL_S="2")
    a, b = nodes
    try:
        a.start()
        b.start()
        with a.client() as http:
            create_agent(http, "worker", model=f"{LANE}:stub",
                         settings={"base_url": stub.base_url})
            # Node a's two calls stall at the provider, holding both slots.
            stub.enqueue(fault="stall")
            stub.enqueue(fault="stall")
            for k in range(2):
                assert send(http, "worker", f"a{k}", "stall", wait=False).status_code == 202
        wait_until(lambda: stub.stats.in_flight == 2, what="node a's calls at the stub")
        with b.client() as http:
            sent = send(http, "worker", "b", "my turn", wait=False)
            assert sent.status_code == 202

            def refused() -> bool:
                lane = http.get("/v1/kernel").json()["scheduler"]["lanes"][LANE]
                return lane["queued"] == 1 and lane["cluster"]["refused"]["full"] >= 1

            # Node b's call waits for the cluster: both slots are node a's.
            wait_until(refused, what="node b refused a slot")
            assert stub.stats.in_flight == 2
            assert a.proc is not None
            a.proc.send_signal(signal.SIGKILL)
            a.proc.wait(timeout=WAIT_S)
            # Within the claims' lifetime (the lease ttl) node b gets a slot.
            run = wait_for_run(http, sent.json()["id"], TERMINAL)
            assert (run["status"], run["output"]) == ("completed", "stub: my turn")
            assert "message.assistant" in kinds_of(read_events(http, "worker", "b"))
    finally:
        for node in nodes:
            node.cleanup()


def test_a_bad_limit_scope_stops_serve_naming_the_setting(tmp_path: Path) -> None:
    home = tmp_path / "home"
    log = tmp_path / "serve.log"
    env = {"AGENTD_PROVIDERS": json.dumps({"openai": {"rpm": 60, "scope": "everywhere"}})}
    environment = Daemon(home, log, env=env, args=()).env
    proc = ForkServer.get().start(["serve", "--port", str(free_port())],
                                  env=environment, cwd=tmp_path, log_path=log)
    assert proc.wait(timeout=WAIT_S) != 0
    output = log.read_text().strip()
    assert output == ("error: invalid agentd configuration: providers.openai.scope: "
                      "Input should be 'cluster' or 'node'"), output
    assert not home.exists() or not any(home.iterdir())
