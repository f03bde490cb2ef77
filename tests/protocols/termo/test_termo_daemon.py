"""`agentd serve --adapter` as a real process over a socket: what a hostile or broken
adapter, a client that goes away, a token for the wrong door and kill -9 do."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import httpx
import pytest
from tests.conftest import wait_until
from tests.protocols.termo.conftest import ADAPTER, TOKEN, SpawnAgentd, frames

from agentd.security.tokens import read_token

pytestmark = pytest.mark.e2e

AUTH = {"Authorization": f"Bearer {TOKEN}"}


def history(url: str, key: str) -> list[dict[str, str]]:
    got = httpx.get(f"{url}/api/sessions/{key}/history", headers=AUTH, timeout=30)
    assert got.status_code == 200, got.text
    messages: list[dict[str, str]] = got.json()["messages"]
    return messages


def test_a_hanging_adapter_times_out_and_the_daemon_goes_on(spawn_agentd: SpawnAgentd
                                                            ) -> None:
    daemon = spawn_agentd("--adapter", ADAPTER, timeout_s=1.0)
    with httpx.Client(base_url=daemon.url, headers=AUTH, timeout=60) as api:
        hung = api.post("/api/send", json={"message": "hang forever", "session_key": "h"})
        assert hung.status_code == 504, hung.text
        assert hung.json()["code"] == "adapter_timeout"
        assert "did not answer within 1s" in hung.json()["error"]
        streamed = api.post("/api/send", json={"message": "hang again", "stream": True,
                                               "session_key": "h"})
        assert frames(streamed.text)[-1]["code"] == "adapter_timeout"
        failed = api.post("/api/send", json={"message": "fail please", "session_key": "h"})
        assert failed.status_code == 502
        assert "the framework gave up" in failed.json()["error"]
        # The session takes the next message; the log kept the failed ones.
        ok = api.post("/api/send", json={"message": "still there?", "session_key": "h"})
        assert ok.status_code == 200 and ok.json()["response"] == "echo[0]: still there?"
        assert [m["content"] for m in history(daemon.url, "h")] == [
            "hang forever", "hang again", "fail please", "still there?",
            "echo[0]: still there?"]


def test_a_client_leaving_mid_stream_loses_nothing(spawn_agentd: SpawnAgentd) -> None:
    daemon = spawn_agentd("--adapter", ADAPTER)
    with httpx.Client(base_url=daemon.url, headers=AUTH, timeout=60) as api, api.stream(
            "POST", "/api/send", json={"message": "slow 6", "stream": True,
                                       "session_key": "d"}) as streamed:
        assert streamed.status_code == 200
        for line in streamed.iter_lines():
            if line.startswith("data: "):
                break  # the first token: leave
    # The run belongs to the daemon: it finishes and its reply is in the log.
    wait_until(lambda: len(history(daemon.url, "d")) == 2, what="the reply logged")
    assert history(daemon.url, "d")[1] == {"role": "assistant",
                                           "content": "t0 t1 t2 t3 t4 t5"}


def test_tokens_open_only_their_own_door(spawn_agentd: SpawnAgentd, tmp_path: Path
                                         ) -> None:
    daemon = spawn_agentd("--adapter", ADAPTER)
    daemon_token = read_token(daemon.home)
    assert daemon_token
    # TERMO_TOKEN opens the termo routes, not agentd's API.
    assert httpx.get(f"{daemon.url}/v1/agents", headers=AUTH).status_code == 401
    # The daemon's own tokens open both.
    own = {"Authorization": f"Bearer {daemon_token}"}
    assert httpx.get(f"{daemon.url}/v1/agents", headers=own).status_code == 200
    sent = httpx.post(f"{daemon.url}/api/send", headers=own, json={"message": "hi"},
                      timeout=60)
    assert sent.status_code == 200 and sent.json()["response"] == "echo[0]: hi"
    # The native API sees the same agent and session.
    events = httpx.get(f"{daemon.url}/v1/agents/agent/sessions/api:direct/events",
                       headers=own).json()["events"]
    assert [e["kind"] for e in events].count("message.assistant") == 1


def test_a_scoped_token_without_the_doors_agent_is_refused(spawn_agentd: SpawnAgentd
                                                            ) -> None:
    """termo mode serves one agent (``agent``): a token whose scope (``access``) holds
    it uses the door; one whose scope does not is answered as no token (401), and
    nothing reaches the agent. Public paths stay public."""
    mine, theirs = "termo-scoped-mine-0123", "termo-scoped-theirs-0123"
    daemon = spawn_agentd("--adapter", ADAPTER, env={
        "AGENTD_TOKENS": json.dumps([mine, theirs]),
        "AGENTD_ACCESS": json.dumps({"token-1": {"agents": ["agent"]},
                                     "token-2": {"agents": ["other-*"]}})})
    refused = {"Authorization": f"Bearer {theirs}"}
    for method, path, body in (("POST", "/api/send", {"message": "hi", "session": "s"}),
                               ("GET", "/api/sessions", None),
                               ("GET", "/api/sessions/s/history", None),
                               ("GET", "/api/config", None)):
        got = httpx.request(method, f"{daemon.url}{path}", headers=refused, json=body,
                            timeout=60)
        assert got.status_code == 401, (path, got.text)
        assert got.json() == {"error": "unauthorized"}
    assert httpx.get(f"{daemon.url}/health", headers=refused).status_code == 200
    own = {"Authorization": f"Bearer {mine}"}
    assert httpx.get(f"{daemon.url}/v1/agents/agent/sessions", headers=own).json()[
        "sessions"] == []
    sent = httpx.post(f"{daemon.url}/api/send", headers=own,
                      json={"message": "hi", "session": "s"}, timeout=60)
    assert sent.status_code == 200 and sent.json()["response"] == "echo[0]: hi"


def test_an_adapter_cannot_open_or_shadow_agentds_api(spawn_agentd: SpawnAgentd) -> None:
    # Greedy declares every path public and a catch-all route.
    daemon = spawn_agentd("--adapter", f"{ADAPTER}:Greedy")
    anonymous = httpx.Client(base_url=daemon.url, timeout=30)
    with anonymous:
        for path in ("/v1/agents", "/v1/runs", "/openapi.json"):
            got = anonymous.get(path)
            assert got.status_code == 401, (path, got.text)
            assert got.json()["error"]["code"] == "unauthorized"
        listed = anonymous.get("/v1/agents", headers={
            "Authorization": f"Bearer {read_token(daemon.home)}"})
        assert listed.status_code == 200 and listed.json()["agents"][0]["name"] == "agent"
        # What is the adapter's own stays its own (public by its choice).
        assert anonymous.get("/anything/else").text == "pong"
        assert anonymous.post("/api/send", json={"message": "hi"}).status_code == 200


def test_config_reaches_initialize_and_toml_names_the_adapter(
        spawn_agentd: SpawnAgentd, tmp_path: Path) -> None:
    # [termo] in agentd.toml (no command-line option but --config, from TERMO_CONFIG).
    home = tmp_path / "toml-home"
    daemon = spawn_agentd(home=home, env={"TERMO_CONFIG": "/etc/my-agent.yaml"},
                          extra_toml=f'[termo]\nadapter = "{ADAPTER}"\nagent = "bob"\n')
    health = httpx.get(f"{daemon.url}/health").json()
    assert health["adapter"] == "test" and health["config_path"] == "/etc/my-agent.yaml"
    token = {"Authorization": f"Bearer {read_token(daemon.home)}"}
    assert httpx.get(f"{daemon.url}/v1/agents/bob", headers=token).json()["model"] == (
        f"adapter:{ADAPTER}:Adapter")
    sent = httpx.post(f"{daemon.url}/api/send", headers=AUTH, json={"message": "yo"},
                      timeout=60)
    assert sent.json()["response"] == "echo[0]: yo"


def test_termo_serves_a_native_agent(spawn_agentd: SpawnAgentd) -> None:
    """`agentd serve --termo --agent NAME`: termo-agent's routes for an agentd agent
    of its own (its model, tools and settings), so a termo client can talk to any
    agent; a non-streamed send is one whole run, a streamed one termo's frames."""
    daemon = spawn_agentd("--termo", "--agent", "helper")
    admin = {"Authorization": f"Bearer {read_token(daemon.home)}"}
    agent = httpx.get(f"{daemon.url}/v1/agents/helper", headers=admin, timeout=30).json()
    assert agent["model"] == "scripted"  # created with the defaults: no adapter
    httpx.patch(f"{daemon.url}/v1/agents/helper", headers=admin, timeout=30,
                json={"tools": ["calculator"]}).raise_for_status()
    got = httpx.post(f"{daemon.url}/api/send", headers=AUTH, timeout=30,
                     json={"message": "hello", "session_key": "u:1"})
    assert got.status_code == 200, got.text
    assert got.json() == {"response": "echo: hello", "session_key": "u:1"}
    with httpx.stream("POST", f"{daemon.url}/api/send", headers=AUTH, timeout=30,
                      json={"message": '/tool calculator {"expression": "6*7"}',
                            "session_key": "u:1", "stream": True}) as stream:
        body = "".join(stream.iter_text())
    kinds = [f.get("type") for f in frames(body)]
    assert "tool_start" in kinds and "tool_end" in kinds and kinds[-1] == "done", kinds
    assert history(daemon.url, "u:1")[:2] == [
        {"role": "user", "content": "hello"}, {"role": "assistant", "content": "echo: hello"}]
    tools = httpx.get(f"{daemon.url}/api/tools", headers=AUTH, timeout=30).json()
    assert [t["name"] for t in tools] == ["calculator"]
    config = httpx.get(f"{daemon.url}/api/config", headers=AUTH, timeout=30).json()
    assert config["name"] == "helper" and config["model"] == "scripted"
    restarted = httpx.post(f"{daemon.url}/api/restart", headers=AUTH, timeout=30)
    assert restarted.json() == {"status": "ok"}
    # The termo token opens these routes only, and only for this agent.
    assert httpx.get(f"{daemon.url}/v1/agents", headers=AUTH, timeout=30
                     ).status_code == 401


def test_without_adapter_there_are_no_termo_routes(spawn_agentd: SpawnAgentd) -> None:
    daemon = spawn_agentd()
    token = {"Authorization": f"Bearer {read_token(daemon.home)}"}
    got = httpx.post(f"{daemon.url}/api/send", headers=token, json={"message": "x"})
    assert got.status_code == 404
    assert "adapter" not in httpx.get(f"{daemon.url}/health").json()


def test_an_adapter_that_cannot_load_stops_the_daemon(tmp_path: Path) -> None:
    from tests.daemons import Daemon
    from tests.protocols.termo.conftest import agentd_env

    home = tmp_path / "home"
    daemon = Daemon(home, tmp_path / "bad.log", env=agentd_env(home),
                    args=("--adapter", "no_such_module_here:Adapter"))
    with pytest.raises(pytest.fail.Exception, match="exited"):
        daemon.start()
    assert "no_such_module_here" in daemon.log()
    daemon.cleanup()


@pytest.mark.parametrize("store", ["sqlite", pytest.param("postgresql",
                                                            marks=pytest.mark.postgres)])
def test_kill_mid_run_keeps_the_acknowledged_message(spawn_agentd: SpawnAgentd,
                                                     store: str,
                                                     request: pytest.FixtureRequest
                                                     ) -> None:
    db = {} if store == "sqlite" else {
        "AGENTD_DATABASE_URL": request.getfixturevalue("pg_url")}
    daemon = spawn_agentd("--adapter", ADAPTER, env=db)
    with httpx.Client(base_url=daemon.url, headers=AUTH, timeout=60) as api, api.stream(
            "POST", "/api/send", json={"message": "slow 50", "stream": True,
                                       "session_key": "k"}) as streamed:
        assert streamed.status_code == 200
        for line in streamed.iter_lines():
            if line.startswith("data: "):
                break  # acknowledged and under way
        assert daemon.signal_and_wait(signal.SIGKILL) == -signal.SIGKILL
    daemon = spawn_agentd("--adapter", ADAPTER, env=db)
    # The message is in the log; the turn was not sent again (the adapter is not
    # idempotent): its run ended interrupted, with no reply.
    assert history(daemon.url, "k") == [{"role": "user", "content": "slow 50"}]
    token = {"Authorization": f"Bearer {read_token(daemon.home)}"}
    wait_until(lambda: "run.interrupted" in [e["kind"] for e in httpx.get(
        f"{daemon.url}/v1/agents/agent/sessions/k/events", headers=token
    ).json()["events"]], what="the cut-off run ended interrupted")
    events = httpx.get(f"{daemon.url}/v1/agents/agent/sessions/k/events",
                       headers=token).json()["events"]
    assert "message.assistant" not in [e["kind"] for e in events]
    again = httpx.post(f"{daemon.url}/api/send", headers=AUTH, timeout=60,
                       json={"message": "after", "session_key": "k"})
    assert again.status_code == 200 and again.json()["response"] == "echo[0]: after"
