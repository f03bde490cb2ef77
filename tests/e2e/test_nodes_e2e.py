"""Several real daemons on one PostgreSQL database (issue 33): a cancel sent to one
node reaches a run another drives at once; bad input at start (a database with a newer
schema, a node id already in use) is refused with a clear message."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.conftest import TERMINAL, free_port
from tests.daemons import (
    SRC,
    WAIT_S,
    Daemon,
    clean_env,
    create_agent,
    kinds_of,
    read_events,
    send,
    wait_for_run,
)

from agentd.store import open_store
from agentd.store._schema import MIGRATIONS

pytestmark = pytest.mark.e2e

#: Long enough that the old way (a cancel seen at the driving node's next lease
#: renewal, every third of it) takes far longer than the cancel request waits.
LEASE_TTL_S = "240"


@pytest.fixture
def nodes(tmp_path: Path, pg_url: str) -> Iterator[list[Daemon]]:
    env = {"AGENTD_DATABASE_URL": pg_url, "AGENTD_LEASE_TTL_S": LEASE_TTL_S,
           "AGENTD_DEMO_AGENT": "false"}
    daemons = [Daemon(tmp_path / f"node-{n}", tmp_path / f"node-{n}.log",
                      env={**env, "AGENTD_NODE_ID": f"node-{n}"}, args=()) for n in "ab"]
    try:
        yield [daemon.start() for daemon in daemons]
    finally:
        for daemon in daemons:
            daemon.cleanup()


@pytest.mark.postgres
def test_a_cancel_sent_to_one_node_stops_a_run_on_another(nodes: list[Daemon]) -> None:
    """Node b drives a run stuck in a minute-long model call; node a is asked to cancel
    it. Node a cannot (it does not hold the run): it asks node b through the store,
    which announces it, and answers once the run is cancelled. The old way, node b saw
    the request at its next lease renewal (80 s here) and node a answered before that
    with the run still running."""
    a, b = nodes
    with a.client() as on_a, b.client() as on_b:
        create_agent(on_a, "slow", settings={"script": [{"text": "late",
                                                         "delay_ms": 60_000}]})
        run_id = send(on_b, "slow", "k", "go", wait=False).json()["id"]
        running = wait_for_run(on_b, run_id, {"running"})
        assert running["node"] == "node-b"
        answer = on_a.post(f"/v1/runs/{run_id}/cancel")
        assert answer.status_code == 200, answer.text
        assert answer.json()["status"] == "cancelled", answer.json()
        # Recorded by node b, once, as the run's last event; its session takes the
        # next message.
        events = [e for e in read_events(on_a, "slow", "k") if e["run_id"] == run_id]
        assert kinds_of(events)[-1] == "run.cancelled"
        assert kinds_of(events).count("run.cancelled") == 1
        assert events[-1]["data"]["reason"] == "cancelled by request"
        assert on_b.get(f"/v1/runs/{run_id}").json()["node"] == "node-b"
        on_a.patch("/v1/agents/slow", json={"settings": {"script": [{"text": "next"}]}})
        following = send(on_a, "slow", "k", "again", wait=False).json()["id"]
        assert wait_for_run(on_a, following, TERMINAL)["output"] == "next"


# -- bad input at start -------------------------------------------------------------------


def _serve(home: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``agentd serve`` that is expected to refuse to start (a fresh interpreter)."""
    full = {**clean_env(), "AGENTD_HOME": str(home), "AGENTD_PORT": str(free_port()),
            "PYTHONPATH": str(SRC), "AGENTD_DEMO_AGENT": "false", **env}
    return subprocess.run([sys.executable, "-m", "agentd", "serve"], env=full,
                          cwd=home.parent, capture_output=True, text=True, timeout=120,
                          check=False)


@pytest.mark.postgres
def test_a_second_daemon_under_a_node_id_in_use_refuses_to_start(
        tmp_path: Path, pg_url: str) -> None:
    env = {"AGENTD_DATABASE_URL": pg_url, "AGENTD_NODE_ID": "twin"}
    first = Daemon(tmp_path / "one", tmp_path / "one.log", env=env, args=())
    try:
        first.start()
        refused = _serve(tmp_path / "two", env)
        assert refused.returncode != 0
        assert ("agentd cannot start: node id 'twin' is in use by another agentd daemon "
                "on this database") in refused.stderr, refused.stderr
        assert "AGENTD_NODE_ID" in refused.stderr
        assert "Traceback" not in refused.stderr
        with first.client() as http:  # the first one is untouched
            create_agent(http, "a")
            run = send(http, "a", "k", "hello", wait=False).json()["id"]
            assert wait_for_run(http, run, TERMINAL)["status"] == "completed"
        # Killed, its node id is free at once (its connection, and the lock, are gone).
        assert first.proc is not None
        first.proc.kill()
        first.proc.wait(timeout=WAIT_S)
        second = Daemon(tmp_path / "two", tmp_path / "two.log", env=env, args=())
        try:
            with second.start().client() as http:
                assert http.get("/v1/agents/a").status_code == 200
        finally:
            second.cleanup()
    finally:
        first.cleanup()


@pytest.mark.parametrize("dialect", ["sqlite", pytest.param(
    "postgresql", marks=pytest.mark.postgres)])
def test_a_database_with_a_newer_schema_stops_the_daemon(tmp_path: Path, dialect: str,
                                                         request: pytest.FixtureRequest
                                                         ) -> None:
    home = tmp_path / "home"
    url = (f"sqlite:///{home / 'agentd.db'}" if dialect == "sqlite"
           else request.getfixturevalue("pg_url"))
    newer = MIGRATIONS[-1][0] + 1

    async def migrate_from_the_future() -> None:
        home.mkdir()
        store = await open_store(url)
        await store.engine.write(lambda tx: tx.execute(
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, 0)",
            (newer, "next")))
        await store.close()

    asyncio.run(migrate_from_the_future())
    refused = _serve(home, {"AGENTD_DATABASE_URL": url})
    assert refused.returncode != 0
    assert (f"agentd cannot start: the database's schema is at version {newer} (next), "
            f"newer than this agentd") in refused.stderr, refused.stderr
    assert f"it needs an agentd that knows schema version {newer}" in refused.stderr
    assert "Traceback" not in refused.stderr
