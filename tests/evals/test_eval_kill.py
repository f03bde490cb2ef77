"""An eval run survives a SIGKILL of its daemon: the cases queued in the store when the
process died run after the restart, the case whose fork was under way goes on with the
same fork (its run resumes from its last committed step: nothing is forked twice), and
the suite ends with every case graded exactly once."""

from __future__ import annotations

import signal
from typing import Any

from tests.conftest import wait_until
from tests.daemons import Spawn, create_agent, send

SLOW = {"script": [{"text": "echo: go", "delay_ms": 400}]}


def test_an_eval_run_resumes_after_a_sigkill(spawn: Spawn, home: Any) -> None:
    home.mkdir(parents=True, exist_ok=True)
    (home / "agentd.toml").write_text("[evals]\nconcurrency = 1\npoll_s = 0.2\n")
    daemon = spawn()
    with daemon.client() as client:
        create_agent(client, "a")
        run = send(client, "a", "s", "go", wait=True).json()
        assert run["status"] == "completed", run
        suite = client.post("/v1/evals/suites", json={"agent": "a", "name": "k"}).json()
        for n in range(5):
            made = client.post(f"/v1/evals/suites/{suite['id']}/cases", json={
                "from_run": run["id"], "name": f"case {n}"})
            assert made.status_code == 201, made.text
        # Each case's fork answers after 0.4 s: one at a time, five in all.
        started = client.post(f"/v1/evals/suites/{suite['id']}/runs",
                              json={"settings": SLOW, "keep_sessions": True})
        assert started.status_code == 202, started.text
        eval_run = started.json()["id"]

        def mid_way() -> dict[str, Any] | None:
            page = client.get(f"/v1/evals/runs/{eval_run}/results").json()["results"]
            done = [r for r in page if r["status"] == "passed"]
            under_way = [r for r in page if r["status"] == "running" and r["run_id"]
                         and client.get(f"/v1/runs/{r['run_id']}").json()["status"]
                         == "running"]
            return {"done": done, "under_way": under_way[0]} if done and under_way \
                else None

        seen = wait_until(mid_way, what="a case graded and the next one's fork in its model call")
    daemon.signal_and_wait(signal.SIGKILL)

    again = spawn()
    with again.client() as client:
        final = client.get(f"/v1/evals/runs/{eval_run}", params={"wait": "true"},
                           timeout=120).json()
        assert final["status"] == "completed", final
        assert final["counts"]["passed"] == 5 and final["summary"]["passed"] == 5, final
        results = client.get(f"/v1/evals/runs/{eval_run}/results").json()["results"]
        assert sorted(r["case"] for r in results) == [f"case {n}" for n in range(5)]
        # The case under way at the kill kept its fork (the same run, resumed).
        interrupted = next(r for r in results
                           if r["case_id"] == seen["under_way"]["case_id"])
        assert interrupted["run_id"] == seen["under_way"]["run_id"]
        fork = client.get(f"/v1/runs/{interrupted['run_id']}").json()
        assert fork["status"] == "completed", fork
        log = client.get(f"/v1/agents/a/sessions/{fork['session']}/events").json()["events"]
        kinds = [e["kind"] for e in log if e["run_id"] == fork["id"]]
        assert "run.resumed" in kinds and kinds.count("message.user") == 1, kinds
        # Graded cases stayed as they were; every case was forked once (one session
        # each, one run in each).
        for before in seen["done"]:
            after = next(r for r in results if r["case_id"] == before["case_id"])
            assert after["run_id"] == before["run_id"]
        keys = [s["key"] for s in client.get("/v1/agents/a/sessions").json()["sessions"]]
        forks = sorted(k for k in keys if k.startswith(f"fork:{eval_run}:"))
        assert forks == sorted(r["session"] for r in results), keys
        for key in forks:
            runs = client.get("/v1/runs", params={"agent": "a", "session": key}).json()
            assert len(runs["runs"]) == 1, (key, runs)
