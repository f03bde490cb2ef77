"""Two daemon processes on one PostgreSQL database, with the default node liveness
(agentd.runtime.nodes): a node killed with SIGKILL has its run taken over by the
other long before the run's lease would expire; a node stopped with SIGSTOP (alive,
its liveness lock held) is not: the other waits for the lease to expire, and when the
stopped node goes on, the lease's fencing refuses what it would write.

The run is held in an idempotent tool, ``gate``, that waits for a file the test
creates; every node that enters or passes it says so in a file (the effects the test
counts)."""

from __future__ import annotations

import os
import signal
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
from tests.conftest import wait_until
from tests.daemons import (
    WAIT_S,
    Daemon,
    create_agent,
    kinds_of,
    read_events,
    send,
    wait_for_run,
)

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]

GATE_TOOLS = '''
import asyncio
import os
from pathlib import Path

from agentd.tools import tool


def _mark(name: str) -> None:
    with (Path(os.environ["GATE_DIR"]) / name).open("a") as f:
        f.write(os.environ["AGENTD_NODE_ID"] + "\\n")


@tool(idempotent=True, timeout_s=600)
async def gate() -> str:
    """Wait until the test opens the gate."""
    _mark("entered")
    while not (Path(os.environ["GATE_DIR"]) / "open").exists():
        await asyncio.sleep(0.02)
    _mark("passed")
    return "opened"
'''
SCRIPT = [{"tool_calls": [{"name": "gate", "arguments": {}}]}, {"text": "through"}]


def _nodes(tmp_path: Path, pg_url: str, ttl_s: float) -> list[Daemon]:
    # The daemons' working directory (their homes' parent) is on their sys.path.
    (tmp_path / "gate_tools.py").write_text(GATE_TOOLS)
    (tmp_path / "gate").mkdir()
    env = {"AGENTD_DATABASE_URL": pg_url, "AGENTD_LEASE_TTL_S": str(ttl_s),
           "AGENTD_DEMO_AGENT": "false", "AGENTD_TOOL_MODULES": '["gate_tools"]',
           "GATE_DIR": str(tmp_path / "gate")}
    return [Daemon(tmp_path / f"node-{n}", tmp_path / f"node-{n}.log",
                   env={**env, "AGENTD_NODE_ID": f"node-{n}"}, args=()) for n in "ab"]


def _marks(tmp_path: Path, name: str) -> list[str]:
    path = tmp_path / "gate" / name
    return path.read_text().split() if path.exists() else []


def _lease(pg_url: str, run_id: str) -> tuple[str, float]:
    with psycopg.connect(pg_url) as conn:
        row = conn.execute("SELECT lease_owner, lease_expires_at FROM runs WHERE id = %s",
                           (run_id,)).fetchone()
    assert row is not None
    return str(row[0]), float(row[1])


def _at(event: dict[str, Any]) -> float:
    return datetime.fromisoformat(event["at"].replace("Z", "+00:00")).timestamp()


def _start_held_run(a: Daemon, tmp_path: Path) -> str:
    with a.client() as http:
        create_agent(http, "held", tools=["gate"], settings={"script": SCRIPT})
        run_id: str = send(http, "held", "k", "go", wait=False).json()["id"]
    wait_until(lambda: _marks(tmp_path, "entered") == ["node-a"],
               what=lambda: f"node a in the gate:\n{a.log()}")
    return run_id


def _resumed(b: Daemon, run_id: str) -> dict[str, Any]:
    def found() -> dict[str, Any] | None:
        with b.client() as http:
            return next((e for e in read_events(http, "held", "k")
                         if e["kind"] == "run.resumed" and e["run_id"] == run_id), None)

    event: dict[str, Any] = wait_until(found, what=lambda: f"node b resuming the run:\n"
                                                          f"{b.log()}", interval=0.1)
    return event


def _finish(b: Daemon, tmp_path: Path, run_id: str) -> list[dict[str, Any]]:
    (tmp_path / "gate" / "open").touch()
    with b.client() as http:
        run = wait_for_run(http, run_id, {"completed", "failed", "cancelled"})
        assert (run["status"], run["output"], run["node"]) == ("completed", "through",
                                                                "node-b")
        log = [e for e in read_events(http, "held", "k") if e["run_id"] == run_id]
        health = http.get("/health").json()
    assert health["node_lock"] == "held"
    # One result of the call, one end of the run: whatever the other node did.
    assert kinds_of(log).count("tool.finished") == 1
    assert kinds_of(log).count("run.completed") == 1 and log[-1]["kind"] == "run.completed"
    return log


def test_a_killed_node_is_taken_over_long_before_its_lease_expires(
        tmp_path: Path, pg_url: str) -> None:
    nodes = _nodes(tmp_path, pg_url, ttl_s=600)  # leases that hold for ten minutes
    try:
        a, b = (node.start() for node in nodes)
        run_id = _start_held_run(a, tmp_path)
        owner, expires = _lease(pg_url, run_id)
        assert owner == "node-a"
        assert a.proc is not None
        a.proc.kill()
        a.proc.wait(timeout=WAIT_S)
        resumed = _resumed(b, run_id)
        assert resumed["data"]["previous_owner"] == "node-a"
        # Taken over while node a's lease still held: its death was seen, not waited
        # out (the lease had minutes left).
        assert _at(resumed) < expires - 60
        wait_until(lambda: _marks(tmp_path, "entered") == ["node-a", "node-b"],
                   what="node b running the idempotent call again")
        _finish(b, tmp_path, run_id)
        assert _marks(tmp_path, "passed") == ["node-b"]
    finally:
        for node in nodes:
            node.cleanup()


def test_a_stopped_node_is_waited_for_and_fenced_when_it_goes_on(
        tmp_path: Path, pg_url: str) -> None:
    nodes = _nodes(tmp_path, pg_url, ttl_s=10)
    try:
        a, b = (node.start() for node in nodes)
        run_id = _start_held_run(a, tmp_path)
        a_pid = a.pid
        os.kill(a_pid, signal.SIGSTOP)
        try:
            # Node a is alive (its process, its connections and its liveness lock are
            # there) but does nothing: node b must wait for its lease to expire.
            owner, expires = _lease(pg_url, run_id)
            assert owner == "node-a"
            resumed = _resumed(b, run_id)
            assert resumed["data"]["previous_owner"] == "node-a"
            assert _at(resumed) >= expires
            wait_until(lambda: _marks(tmp_path, "entered") == ["node-a", "node-b"],
                       what="node b running the idempotent call again")
        finally:
            os.kill(a_pid, signal.SIGCONT)
        # Node a goes on: it finds the run's lease lost and stops driving it (its call
        # may even return: the gate opens); nothing it would write about the run is
        # written.
        log = _finish(b, tmp_path, run_id)
        with a.client() as http:
            wait_until(lambda: http.get("/health").json()["active_runs"] == 0,
                       what=lambda: f"node a letting the run go:\n{a.log()}")
            assert http.get("/health").json()["node_lock"] == "held"
        with b.client() as http:
            assert [e for e in read_events(http, "held", "k")
                    if e["run_id"] == run_id] == log
        assert _marks(tmp_path, "passed").count("node-b") == 1
    finally:
        for node in nodes:
            node.cleanup()
