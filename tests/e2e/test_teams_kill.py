"""Teams through a real daemon process killed with SIGKILL in the middle of a step:
after the restart the team run completes, and every member step ran exactly once
(one child run per step, one message in its session, finished children reused)."""

from __future__ import annotations

import signal
from typing import Any

import httpx
import pytest
from tests.conftest import TERMINAL, wait_until
from tests.daemons import (
    Spawn,
    create_agent,
    read_events,
    send,
    wait_for_run,
)

pytestmark = pytest.mark.e2e


def steps_of(client: httpx.Client, run_id: str) -> list[dict[str, Any]]:
    response = client.get(f"/v1/runs/{run_id}/subtasks")
    assert response.status_code == 200, response.text
    steps: list[dict[str, Any]] = response.json()["subtasks"]
    return steps


def kill_during(spawn: Spawn, setup: Any, team: str, running: int,
                env: dict[str, str] | None = None) -> tuple[httpx.Client, str]:
    """Start a run of ``team``, SIGKILL the daemon while its step ``running`` (1-based)
    is under way, start it again; the client of the new daemon and the run's id."""
    daemon = spawn(env=env)
    with daemon.client() as client:
        setup(client)
        sent = send(client, team, "k", "write about tides", wait=False)
        assert sent.status_code == 202, sent.text
        run_id: str = sent.json()["id"]

        def under_way() -> bool:
            steps = steps_of(client, run_id)
            return len(steps) == running and steps[-1]["status"] == "running"

        wait_until(under_way, what=lambda: f"step {running} under way: "
                                           f"{steps_of(client, run_id)}")
    daemon.signal_and_wait(signal.SIGKILL)
    again = spawn(env=env)
    return again.client(), run_id


def assert_each_step_once(client: httpx.Client, run_id: str, steps: list[dict[str, Any]]
                          ) -> None:
    # One child per step; each child's session got one message per step and each
    # child run ended once.
    assert len({s["run_id"] for s in steps}) == len(steps)
    assert len({s["id"] for s in steps}) == len(steps)
    for step in steps:
        agent, key = step["agent"], step["session"]
        log = read_events(client, agent, key)
        mine = [e for e in log if e["run_id"] == step["run_id"]]
        kinds = [e["kind"] for e in mine]
        assert kinds.count("message.user") == 1, (step, kinds)
        assert kinds.count("run.started") == 1, (step, kinds)
        assert kinds.count("run.completed") == 1, (step, kinds)
    log = read_events(client, "team", "k")
    kinds = [e["kind"] for e in log if e["run_id"] == run_id]
    # Resumed after the kill (on a loaded machine a short lease may also slip and the
    # run be taken over again: the steps are still each started once).
    assert kinds.count("run.resumed") >= 1, kinds
    assert kinds.count("subtask.started") == len(steps), kinds
    assert kinds.count("subtask.finished") == len(steps), kinds
    assert kinds[-2:] == ["message.assistant", "run.completed"], kinds
    assert [e["seq"] for e in log] == list(range(1, len(log) + 1))


@pytest.mark.parametrize("store", ["sqlite", pytest.param("postgresql",
                                                          marks=pytest.mark.postgres)])
def test_a_pipeline_killed_mid_step_completes_each_step_once(
        spawn: Spawn, store: str, request: pytest.FixtureRequest) -> None:
    def setup(client: httpx.Client) -> None:
        for name in ("a", "b", "c"):
            create_agent(client, name, settings={"script": [
                {"text": f"{name} wrote", "delay_ms": 1500}]})
        create_agent(client, "team", settings={"team": {
            "pattern": "pipeline", "members": ["a", "b", "c"]}})

    # On PostgreSQL the new process is another node: it takes the runs over once the
    # killed node's leases expire (3 s here).
    env = None if store == "sqlite" else {
        "AGENTD_DATABASE_URL": request.getfixturevalue("pg_url"),
        "AGENTD_LEASE_TTL_S": "3"}
    client, run_id = kill_during(spawn, setup, "team", running=2, env=env)
    with client:
        run = wait_for_run(client, run_id, TERMINAL)
        assert (run["status"], run["output"]) == ("completed", "c wrote"), run
        steps = steps_of(client, run_id)
        assert [(s["agent"], s["status"]) for s in steps] == [
            ("a", "completed"), ("b", "completed"), ("c", "completed")]
        assert_each_step_once(client, run_id, steps)
        # b was given a's reply: the input of a step after the kill comes from the log.
        b_run = client.get(f"/v1/runs/{steps[1]['run_id']}").json()
        assert b_run["input"] == "a wrote"


def test_a_loop_killed_mid_round_completes_each_step_once(spawn: Spawn) -> None:
    def setup(client: httpx.Client) -> None:
        create_agent(client, "gen", settings={"script": [
            {"text": "draft one", "delay_ms": 200}, {"text": "draft two", "delay_ms": 2000}]})
        create_agent(client, "critic", settings={"script": [
            {"text": "more about the moon", "delay_ms": 200}, {"text": "APPROVED"}]})
        create_agent(client, "team", settings={"team": {
            "pattern": "loop", "generator": "gen", "critic": "critic", "max_rounds": 4}})

    client, run_id = kill_during(spawn, setup, "team", running=3)
    with client:
        run = wait_for_run(client, run_id, TERMINAL)
        assert (run["status"], run["output"]) == ("completed", "draft two"), run
        steps = steps_of(client, run_id)
        assert [s["title"] for s in steps] == [
            "loop round 1: gen", "loop round 1: critic", "loop round 2: gen",
            "loop round 2: critic"]
        assert_each_step_once(client, run_id, steps)
        # The generator kept one conversation: two messages, two replies.
        gen_log = read_events(client, "gen", steps[0]["session"])
        assert [e["kind"] for e in gen_log].count("message.user") == 2
        assert "more about the moon" in [e for e in gen_log
                                         if e["kind"] == "message.user"][1]["data"]["content"]
        wait_until(lambda: all(s["status"] == "completed" for s in steps_of(client, run_id)),
                   what="every step completed")
