"""Adapter-backed agents in the real daemon process (`python -m agentd serve`), the
adapter allowed by the operator's agentd.toml, over a real socket: a turn with a
reported tool, streamed; a name not allowed refused; and kill -9 while an adapter
answers: a non-idempotent adapter's turn is not sent again (the run ends
interrupted), an idempotent one's is, and nothing acknowledged is lost."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.conftest import wait_until
from tests.daemons import Spawn, create_agent

import agentd

pytestmark = pytest.mark.e2e

MOD = "tests.adapters.sample_adapters"
SRC = Path(agentd.__file__).resolve().parents[1]
ROOT = SRC.parent




def configure(home: Path, markers: Path, sleep_s: float) -> dict[str, str]:
    home.mkdir(parents=True, exist_ok=True)
    (home / "agentd.toml").write_text(
        f'[adapters]\nallow = ["{MOD}:*"]\ntimeout_s = 120\n')
    markers.mkdir(exist_ok=True)
    # This tree's agentd and its tests' adapters (the daemon runs elsewhere).
    return {"PYTHONPATH": f"{SRC}:{ROOT}", "AGENTD_ADAPTER_TEST_DIR": str(markers),
            "AGENTD_ADAPTER_TEST_SLEEP": str(sleep_s), "AGENTD_DEMO_AGENT": "false"}


def run_of(api: httpx.Client, run_id: str) -> dict[str, Any]:
    got = api.get(f"/v1/runs/{run_id}")
    assert got.status_code == 200, got.text
    out: dict[str, Any] = got.json()
    return out


def test_adapter_agent_over_a_real_socket(spawn: Spawn, home: Path, tmp_path: Path
                                          ) -> None:
    daemon = spawn(env=configure(home, tmp_path / "m", 0.1))
    with daemon.client() as api:
        create_agent(api, "tooly", model=f"adapter:{MOD}:ToolUser")
        done = api.post("/v1/agents/tooly/sessions/u%3A1/messages",
                        json={"content": "owls", "wait": True})
        assert done.status_code == 200, done.text
        assert done.json()["output"] == "found owls"
        with api.stream("POST", "/v1/agents/tooly/sessions/u%3A1/messages",
                        json={"content": "bats", "stream": True}) as streamed:
            assert streamed.status_code == 200
            body = streamed.read().decode()
        assert "event: token" in body and "event: tool_start" in body
        assert '"output":"found bats"' in body
        kinds = [e["kind"] for e in api.get(
            "/v1/agents/tooly/sessions/u%3A1/events").json()["events"]]
        assert kinds.count("tool.started") == 2 and kinds.count("run.completed") == 2
        refused = api.post("/v1/agents", json={"name": "evil",
                                               "model": "adapter:os:system"})
        assert refused.status_code == 422, refused.text
        assert refused.json()["error"]["details"]["errors"][0]["field"] == "body.model"
        unauthenticated = httpx.post(f"{daemon.url}/v1/agents/tooly/sessions/k/messages",
                                     json={"content": "x"})
        assert unauthenticated.status_code == 401


@pytest.mark.parametrize("store", ["sqlite", pytest.param("postgresql",
                                                            marks=pytest.mark.postgres)])
def test_kill_while_an_adapter_answers(spawn: Spawn, home: Path, tmp_path: Path,
                                       store: str, request: pytest.FixtureRequest) -> None:
    markers = tmp_path / "m"
    # On PostgreSQL the restarted process is the same node (its node id comes from
    # its home): it takes its runs back at once, as on SQLite.
    db = {} if store == "sqlite" else {
        "AGENTD_DATABASE_URL": request.getfixturevalue("pg_url")}
    daemon = spawn(env={**configure(home, markers, 60.0), **db})
    sends = markers / "sends"
    with daemon.client() as api:
        create_agent(api, "once", model=f"adapter:{MOD}:SlowFile")
        create_agent(api, "again", model=f"adapter:{MOD}:idempotent_slow")
        first = api.post("/v1/agents/once/sessions/k/messages",
                         json={"content": "pay 5", "wait": False})
        second = api.post("/v1/agents/again/sessions/k/messages",
                          json={"content": "look up", "wait": False})
        assert first.status_code == second.status_code == 202
        wait_until(lambda: sends.exists() and len(sends.read_text().split("\n")) >= 3,
                   what="both adapters called")
    assert daemon.signal_and_wait(signal.SIGKILL) == -signal.SIGKILL

    daemon = spawn(env={**configure(home, markers, 0.1), **db})
    with daemon.client() as api:
        def ended(run_id: str) -> dict[str, Any] | None:
            run = run_of(api, run_id)
            return run if run["status"] not in ("queued", "running") else None

        once = wait_until(lambda: ended(first.json()["id"]), what="the first run ended")
        again = wait_until(lambda: ended(second.json()["id"]), what="the second run ended")
        events = api.get("/v1/agents/once/sessions/k/events").json()["events"]
        assert once["status"] == "interrupted", once
        interrupted = next(e for e in events if e["kind"] == "run.interrupted")
        assert "not idempotent" in interrupted["data"]["reason"]
        assert again["status"] == "completed" and again["output"] == "again look up"
    # The non-idempotent turn was sent once; the idempotent one twice.
    assert sorted(sends.read_text().splitlines()) == ["look up", "look up", "pay 5"]
