"""The real daemon process (`python -m agentd serve`) over real sockets on 127.0.0.1:
the demo agent, streaming, live event subscriptions, SIGTERM, restarts, a crash,
and the token / bind-address rules.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from httpx_sse import connect_sse
from tests.conftest import TERMINAL, free_port, wait_until
from tests.daemons import (
    TOOL_MESSAGE,
    WAIT_S,
    Daemon,
    Spawn,
    assert_dense,
    create_agent,
    frames_of,
    kinds_of,
    quote,
    read_events,
    send,
    wait_for_run,
)

pytestmark = pytest.mark.e2e


# -- the demo agent and streaming -------------------------------------------------------


def test_demo_agent_calls_a_tool(spawn: Spawn) -> None:
    daemon = spawn()
    with daemon.client() as client:
        health = client.get("/health").json()
        assert health["status"] == "ok" and health["store"] == "sqlite"
        demo = client.get("/v1/agents/demo")
        assert demo.status_code == 200, demo.text
        assert "calculator" in demo.json()["tools"]

        response = send(client, "demo", "user:1", TOOL_MESSAGE)
        assert response.status_code == 200, response.text
        run = response.json()
        assert run["status"] == "completed"
        assert run["output"] == "calculator returned: 42"

        events = read_events(client, "demo", "user:1")
        assert_dense(events)
        finished = [e for e in events if e["kind"] == "tool.finished"]
        assert [e["data"]["output"] for e in finished] == ["42"]
        assert events[-1]["kind"] == "run.completed"


def test_stream_a_reply_over_the_socket(spawn: Spawn) -> None:
    daemon = spawn()
    reply = "a reply streamed word by word"
    with daemon.client() as client:
        # The delay spreads the words out, so tokens are sent while the run goes on.
        create_agent(client, "streamer", settings={"script": [{"text": reply,
                                                               "delay_ms": 400}]})
        with connect_sse(client, "POST", "/v1/agents/streamer/sessions/s1/messages",
                         json={"content": "hi", "stream": True}) as source:
            assert source.response.status_code == 200
            frames = frames_of(source.iter_sse())  # returns only when the server ends it

        names = [f["event"] for f in frames]
        assert names[:3] == ["message.user", "run.queued", "run.started"]
        assert names[-2:] == ["message.assistant", "done"]
        tokens = [f for f in frames if f["event"] == "token"]
        assert tokens, names
        assert "".join(t["data"]["text"] for t in tokens) == reply
        committed = [f for f in frames if f["event"] != "token"]
        assert [f["id"].partition("@")[0] for f in committed] == [
            str(f["data"]["seq"]) for f in committed]
        assert len({f["id"].partition("@")[2] for f in frames}) == 1  # one session tag
        assert [f["data"]["seq"] for f in committed] == [1, 2, 3, 4, 5]
        assert frames[-1]["data"]["data"]["output"] == reply
        assert [e["seq"] for e in read_events(client, "streamer", "s1")] == [1, 2, 3, 4, 5]

        create_agent(client, "echo")
        with connect_sse(client, "POST", "/v1/agents/echo/sessions/s1/messages",
                         json={"content": "hello", "stream": True}) as source:
            frames = frames_of(source.iter_sse())
        assert frames[-1]["event"] == "done"
        assert frames[-1]["data"]["data"]["output"] == "echo: hello"


def test_live_event_subscription(spawn: Spawn) -> None:
    daemon = spawn()
    with daemon.client() as client:
        create_agent(client, "live", settings={"script": [{"text": "live words here",
                                                           "delay_ms": 200}]})
        assert send(client, "live", "chat:1", "first").json()["status"] == "completed"
        last_seq = client.get("/v1/agents/live/sessions/chat%3A1").json()["last_seq"]
        assert last_seq == 5

    connected = threading.Event()
    received: list[dict[str, Any]] = []
    failures: list[BaseException] = []

    def subscribe() -> None:
        try:
            with httpx.Client(base_url=daemon.url, timeout=WAIT_S,
                              headers=daemon.auth()) as sub, connect_sse(
                    sub, "GET", "/v1/agents/live/sessions/chat%3A1/events",
                    headers={"Last-Event-ID": str(last_seq)}) as source:
                assert source.response.status_code == 200
                connected.set()
                for sse in source.iter_sse():
                    received.append({"event": sse.event, "id": sse.id,
                                     "data": orjson.loads(sse.data)})
                    if sse.event == "done":
                        return
        except BaseException as exc:
            failures.append(exc)
        finally:
            connected.set()

    thread = threading.Thread(target=subscribe, daemon=True)
    thread.start()
    try:
        assert connected.wait(WAIT_S)
        assert not failures, failures
        assert received == []  # nothing after Last-Event-ID yet
        with daemon.client() as client:
            run = send(client, "live", "chat:1", "second").json()
            assert run["status"] == "completed"
        thread.join(WAIT_S)
        assert not thread.is_alive(), "the subscription saw no done frame"
    finally:
        if thread.is_alive():
            daemon.cleanup()  # ends the stream, so the thread can finish
            thread.join(WAIT_S)
    assert not failures, failures

    committed = [f for f in received if f["event"] != "token"]
    assert [f["event"] for f in committed] == [
        "message.user", "run.queued", "run.started", "message.assistant", "done"]
    assert [f["data"]["seq"] for f in committed] == [6, 7, 8, 9, 10]
    assert [f["id"].partition("@")[0] for f in committed] == ["6", "7", "8", "9", "10"]
    assert committed[0]["data"]["data"] == {"content": "second"}
    assert all(f["data"]["run_id"] == run["id"] for f in committed)
    assert "".join(f["data"]["text"] for f in received if f["event"] == "token") in (
        "", "live words here")


# -- stopping, restarting, crashing -------------------------------------------------------


def test_sigterm_then_restart_keeps_everything(spawn: Spawn, home: Path) -> None:
    daemon = spawn()
    pid_file = home / "agentd.pid"
    assert pid_file.read_text().strip() == str(daemon.pid)
    with daemon.client() as client:
        create_agent(client, "keeper", tools=["calculator"])
        # The script position is the number of assistant messages in the session, so
        # the third reply proves the history was read back from the log.
        create_agent(client, "counter", settings={"script": [
            {"text": "one"}, {"text": "two"}, {"text": "three"}]})
        assert send(client, "keeper", "user:1", "hello").json()["output"] == "echo: hello"
        assert send(client, "keeper", "user:1", TOOL_MESSAGE).json()["output"] == \
            "calculator returned: 42"
        assert send(client, "keeper", "a/b", "slash").json()["status"] == "completed"
        assert [send(client, "counter", "c", m).json()["output"] for m in "xy"] == \
            ["one", "two"]
        agents = client.get("/v1/agents").json()["agents"]
        sessions = {name: client.get(f"/v1/agents/{name}/sessions").json()["sessions"]
                    for name in ("keeper", "counter")}
        logs = {(name, key): read_events(client, name, key)
                for name, key in [("keeper", "user:1"), ("keeper", "a/b"),
                                  ("counter", "c")]}
        run_ids = {e["run_id"] for log in logs.values() for e in log}
        runs = {run_id: client.get(f"/v1/runs/{run_id}").json() for run_id in run_ids}

    assert daemon.signal_and_wait(signal.SIGTERM) == 0, daemon.log()
    assert not pid_file.exists()

    again = spawn()
    assert pid_file.read_text().strip() == str(again.pid)
    with again.client() as client:
        assert client.get("/v1/agents").json()["agents"] == agents
        # Shutting down checkpointed every session: one "checkpoint" event more each.
        for name, before in sessions.items():
            now = client.get(f"/v1/agents/{name}/sessions").json()["sessions"]
            assert [{k: v for k, v in s.items() if k not in ("last_seq", "checkpoint_seq",
                                                           "updated_at")} for s in now] \
                == [{k: v for k, v in s.items() if k not in ("last_seq", "checkpoint_seq",
                                                           "updated_at")} for s in before]
            assert [s["last_seq"] for s in now] == [s["last_seq"] + 1 for s in before]
            assert [s["checkpoint_seq"] for s in now] == [s["last_seq"] for s in now]
        for (name, key), before in logs.items():
            log = read_events(client, name, key)
            assert log[:-1] == before
            assert (log[-1]["kind"], log[-1]["run_id"], log[-1]["data"]["kind"]) == (
                "checkpoint", None, "shutdown")
            listed = client.get(f"/v1/agents/{name}/sessions/{quote(key)}"
                                "/checkpoints").json()["checkpoints"]
            assert [(c["seq"], c["kind"]) for c in listed] == [(log[-1]["seq"], "shutdown")]
        for run_id, before in runs.items():
            assert client.get(f"/v1/runs/{run_id}").json() == before

        last = logs[("keeper", "user:1")][-1]["seq"] + 1
        run = send(client, "keeper", "user:1", "again").json()
        assert (run["status"], run["output"]) == ("completed", "echo: again")
        after = read_events(client, "keeper", "user:1", after=last)
        assert_dense(after, start=last + 1)
        assert after[0]["kind"] == "message.user"
        assert after[0]["data"] == {"content": "again"}
        session = client.get("/v1/agents/keeper/sessions/user%3A1").json()
        assert session["last_seq"] == after[-1]["seq"]

        assert send(client, "counter", "c", "z").json()["output"] == "three"

    assert again.signal_and_wait(signal.SIGTERM) == 0, again.log()
    assert not pid_file.exists()


def test_sigkill_loses_no_acknowledged_message(spawn: Spawn) -> None:
    from agentd.testing import StubLLMServer

    with StubLLMServer() as stub:
        _sigkill_loses_no_acknowledged_message(spawn, stub)


def _sigkill_loses_no_acknowledged_message(spawn: Spawn, stub: Any) -> None:
    daemon = spawn()
    sessions = [f"crash:{i}" for i in range(5)]
    acked: list[tuple[str, str, str]] = []  # (run id, session key, content)
    # A run certainly mid-way when the process dies: its first step (a tool call) is
    # committed and its second model call hangs until the kill, whatever the machine's
    # speed (no delay decides the order). The next daemon asks once more and is answered.
    stub.enqueue(tool_calls=[{"name": "calculator", "arguments": {"expression": "6*7"}}])
    stub.enqueue(fault="stall")
    stub.enqueue("done late")
    with daemon.client() as client:
        create_agent(client, "slow", tools=["calculator"], model="openai-compatible:stub",
                     settings={"base_url": stub.base_url, "max_retries": 0})
        slow = send(client, "slow", "s", "take your time", wait=False)
        assert slow.status_code == 202, slow.text
        wait_until(lambda: len(stub.requests) == 2, what="the slow run's second model call")
        assert "tool.finished" in kinds_of(read_events(client, "slow", "s"))

        # Short runs, ten per session: at the kill some are done, some running,
        # most still queued.
        create_agent(client, "worker", settings={"script": [{"text": "worked",
                                                             "delay_ms": 50}]})
        for n in range(50):
            key, content = sessions[n % len(sessions)], f"job {n}"
            response = send(client, "worker", key, content, wait=False)
            assert response.status_code == 202, response.text
            acked.append((response.json()["id"], key, content))
    daemon.signal_and_wait(signal.SIGKILL)

    again = spawn()
    with again.client() as client:
        runs = {run_id: wait_for_run(client, run_id, TERMINAL) for run_id, _, _ in acked}
        slow_run = wait_for_run(client, slow.json()["id"], TERMINAL)

        # The slow run resumed from its last committed step: the recorded model
        # response was not requested again and the tool did not run twice.
        assert (slow_run["status"], slow_run["output"]) == ("completed", "done late")
        assert len(stub.requests) == 3
        slow_log = read_events(client, "slow", "s")
        assert [e["kind"] for e in slow_log] == [
            "message.user", "run.queued", "run.started", "message.assistant",
            "tool.started", "tool.finished", "run.resumed", "message.assistant",
            "run.completed"]
        assert [e["data"]["step"] for e in slow_log if e["kind"] == "message.assistant"] == [
            1, 2]

        assert {r["status"] for r in runs.values()} == {"completed"}
        for key in sessions:
            log = read_events(client, "worker", key)
            assert_dense(log)
            mine = [(run_id, content) for run_id, k, content in acked if k == key]
            users = [(e["run_id"], e["data"]["content"]) for e in log
                     if e["kind"] == "message.user"]
            assert users == mine  # every acknowledged message, once, in order
            for run_id, _ in mine:
                kinds = [e["kind"] for e in log if e["run_id"] == run_id]
                terminal = [k for k in kinds if k in (
                    "run.completed", "run.failed", "run.cancelled", "run.interrupted")]
                assert terminal == ["run.completed"], (run_id, kinds)
                assert kinds.count("run.started") == 1, (run_id, kinds)
                assert kinds.count("message.assistant") == 1, (run_id, kinds)
                assert runs[run_id]["output"] == "worked"
        session = client.get(f"/v1/agents/worker/sessions/{quote(sessions[0])}").json()
        assert session["last_seq"] == read_events(client, "worker", sessions[0])[-1]["seq"]


def test_a_run_parked_by_an_outage_survives_sigkill(spawn: Spawn) -> None:
    """The provider is down: the run parks (model.outage). The daemon is killed; the
    provider comes back; the next daemon takes the run over and finishes it."""
    from agentd.testing import StubLLMServer

    kernel = {"AGENTD_RETRY_BASE_S": "0.01", "AGENTD_RETRY_MAX_S": "0.05",
              "AGENTD_BREAKER_FAILURES": "2", "AGENTD_BREAKER_COOLDOWN_S": "0.2"}
    with StubLLMServer() as stub:
        for _ in range(1000):
            stub.enqueue(fault="http_503")
        daemon = spawn(env=kernel)
        with daemon.client() as client:
            create_agent(client, "a", model="openai-compatible:stub",
                         settings={"base_url": stub.base_url})
            sent = send(client, "a", "k", "are you there?", wait=False)
            assert sent.status_code == 202, sent.text
            wait_until(lambda: "model.outage" in kinds_of(read_events(client, "a", "k")),
                       what="the run parked")
            assert wait_for_run(client, sent.json()["id"], {"running"})["steps"] == 0
        daemon.signal_and_wait(signal.SIGKILL)
        stub.clear()
        stub.enqueue(text="back again")
        again = spawn(env=kernel)
        with again.client() as client:
            run = wait_for_run(client, sent.json()["id"], TERMINAL)
            assert (run["status"], run["output"]) == ("completed", "back again")
            log = read_events(client, "a", "k")
            assert_dense(log)
            # What the run waited for (run.waiting: the retries, then the outage) is
            # logged with the outage.
            assert "run.waiting" in [e["kind"] for e in log]
            kinds = [e["kind"] for e in log if e["kind"] != "run.waiting"]
            assert kinds[:4] == ["message.user", "run.queued", "run.started", "model.outage"]
            assert kinds[-3:] == ["run.resumed", "message.assistant", "run.completed"]
            assert kinds.count("message.user") == 1


def test_an_approval_and_a_shell_survive_sigkill(spawn: Spawn, home: Path) -> None:
    """A shell command the policy asks about waits for approval; the daemon is
    SIGKILLed; the next daemon lists the same request, and approving it runs the
    command in the sandbox once."""
    daemon = spawn()
    with daemon.client() as client:
        assert client.get("/health").json()["sandbox"] in ("bubblewrap", "gvisor",
                                                           "process")
        create_agent(client, "ops", model="scripted", tools=["shell"], settings={
            # In an isolating sandbox without network any command runs: ask by rule.
            "policy": {"rules": [{"tool": "shell", "commands": ["rm *"], "action": "ask"}]},
            "script": [{"tool_calls": [{"name": "shell", "arguments": {
                "command": "rm -rf old && echo cleaned >> log.txt"}}]},
                {"text": "done"}]})
        sent = send(client, "ops", "k", "clean up", wait=False)
        assert sent.status_code == 202, sent.text
        run_id = sent.json()["id"]
        wait_for_run(client, run_id, {"waiting_approval"})
        [before] = client.get("/v1/approvals").json()["approvals"]
        assert before["name"] == "shell" and "destructive" in before["policy"]["categories"]
    daemon.signal_and_wait(signal.SIGKILL)
    again = spawn()
    with again.client() as client:
        after = wait_until(lambda: client.get("/v1/approvals").json()["approvals"],
                           what="the approval request back")
        assert [a["approval_id"] for a in after] == [before["approval_id"]]
        decided = client.post(f"/v1/approvals/{before['approval_id']}",
                              json={"action": "approve", "by": "test"})
        assert decided.status_code == 200, decided.text
        run = wait_for_run(client, run_id, TERMINAL)
        assert (run["status"], run["output"]) == ("completed", "done")
        kinds = [e["kind"] for e in read_events(client, "ops", "k")]
        assert kinds.count("approval.requested") == 1
        assert kinds.count("tool.started") == 1
    [log] = list((home / "workspaces").glob("*/log.txt"))
    assert log.read_text() == "cleaned\n"


# -- auth and binding -------------------------------------------------------------------


def test_token_is_required_when_configured(spawn: Spawn) -> None:
    daemon = spawn(env={"AGENTD_TOKEN": "e2e-s3cret"})
    assert "AUTH IS OFF" not in daemon.log()
    assert not (daemon.home / "token").exists()  # a configured token is the token
    with httpx.Client(base_url=daemon.url, timeout=WAIT_S) as anonymous:
        assert anonymous.get("/health").status_code == 200
        for headers in ({}, {"Authorization": "Bearer wrong"}):
            response = anonymous.get("/v1/agents", headers=headers)
            assert response.status_code == 401
            assert response.json()["error"]["code"] == "unauthorized"
        refused = send(anonymous, "demo", "k", "hi")
        assert refused.status_code == 401
    with daemon.client(token="e2e-s3cret") as client:
        agents = client.get("/v1/agents")
        assert agents.status_code == 200
        assert [a["name"] for a in agents.json()["agents"]] == ["demo"]
        assert send(client, "demo", "k", "hi").json()["output"] == "echo: hi"
        # The refused message left nothing behind: this is the session's first run.
        first = read_events(client, "demo", "k")[0]
        assert (first["seq"], first["data"]) == (1, {"content": "hi"})


def _listeners(port: int) -> list[str] | None:
    """Local addresses listening on ``port`` per /proc/net/tcp{,6} (None: no procfs)."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            if table.endswith("6"):
                continue
            return None
        for line in lines:
            local, state = line.split()[1], line.split()[3]
            address, _, hex_port = local.partition(":")
            if state == "0A" and int(hex_port, 16) == port:
                found.append(address)
    return found


def test_a_fresh_daemon_makes_its_token_and_keeps_its_files_private(
        spawn: Spawn, home: Path) -> None:
    # A plain `python -m agentd serve` (no fork server): the files a new interpreter's
    # first start makes, and its first log line.
    daemon = spawn(fresh=True)
    token_file = home / "token"
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    with httpx.Client(base_url=daemon.url, timeout=WAIT_S) as anonymous:
        assert anonymous.get("/v1/agents").status_code == 401
        assert send(anonymous, "demo", "k", "hi").status_code == 401
    with daemon.client() as client:  # with the token from the file
        assert send(client, "demo", "k", "hi").json()["output"] == "echo: hi"
    # Everything the daemon wrote is its user's alone.
    for path in home.rglob("*"):
        if path.is_symlink() or path.is_relative_to(home / "workspaces"):
            continue
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode & 0o077 == 0, (path, oct(mode))
    names = {p.name for p in home.iterdir()}
    assert {"agentd.db", "agentd.db-wal", "token"} <= names, names
    # The CLI on this machine picks the token up on its own.
    env = {**daemon.env, "AGENTD_PORT": str(daemon.port)}
    listed = subprocess.run([sys.executable, "-m", "agentd", "list", "--json"], env=env,
                            capture_output=True, text=True, timeout=60, check=False)
    assert listed.returncode == 0, listed.stderr
    assert [a["name"] for a in json.loads(listed.stdout)] == ["demo"]
    # Its log says at once that it is starting (a first start was silent for ~9 s),
    # then where the console is and which token signs in to it.
    lines = daemon.log().splitlines()
    assert any("starting" in line for line in lines[:3]), lines[:3]
    console = next(line for line in lines if "the console:" in line)
    assert f"{daemon.url}/ui/" in console and str(token_file) in console, console


def test_without_auth_it_binds_to_loopback_only(spawn: Spawn) -> None:
    daemon = spawn("--host", "0.0.0.0", env={"AGENTD_AUTH": "none"})
    log = daemon.log()
    assert "binding to 127.0.0.1 instead of 0.0.0.0" in log, log
    assert "AUTH IS OFF" in log, log
    assert httpx.get(f"{daemon.url}/health", timeout=10).json()["status"] == "ok"
    listeners = _listeners(daemon.port)
    if listeners is not None:
        assert listeners == ["0100007F"], listeners  # 127.0.0.1, and nothing else


# -- two nodes on one PostgreSQL database ---------------------------------------------


@pytest.mark.postgres
def test_a_killed_nodes_runs_are_taken_over_by_the_other(tmp_path: Path, pg_url: str
                                                        ) -> None:
    """Two daemons share PostgreSQL. One is killed with runs under way; the other
    takes them over once their leases expire and finishes each from its last
    committed step: no model step made twice, one run at a time per session."""
    env = {"AGENTD_DATABASE_URL": pg_url, "AGENTD_LEASE_TTL_S": "1",
           "AGENTD_DEMO_AGENT": "false"}
    nodes = [Daemon(tmp_path / f"node-{n}", tmp_path / f"node-{n}.log",
                    env={**env, "AGENTD_NODE_ID": f"node-{n}"}, args=()) for n in "ab"]
    from agentd.testing import StubLLMServer

    stub = StubLLMServer()
    stub.start()
    try:
        a, b = (node.start() for node in nodes)
        sessions = [f"s{i}" for i in range(6)]
        with a.client() as http:
            # A tool step is committed at once; the answer after it hangs until node a
            # is killed (the stub stalls it), however long the six take to get there;
            # node b's call gets it. Each session has its own agent and model name, so
            # each conversation has its own queue at the stub.
            for key in sessions:
                stub.enqueue(tool_calls=[{"name": "calculator",
                                          "arguments": {"expression": "2*3"}}], model=key)
                stub.enqueue(fault="stall", model=key)
                stub.enqueue("finished", model=key)
                create_agent(http, f"slow-{key}", tools=["calculator"],
                             model=f"openai-compatible:{key}",
                             settings={"base_url": stub.base_url, "max_retries": 0})
            runs = [send(http, f"slow-{key}", key, "go", wait=False).json()["id"]
                    for key in sessions]
            # A second message per session queues behind the first.
            queued = [send(http, f"slow-{key}", key, "then", wait=False).json()["id"]
                      for key in sessions]
            wait_until(lambda: len(stub.requests) == 2 * len(sessions),
                       what=lambda: f"every second model call made:\n{a.log()}",
                       interval=0.05)
            assert all("tool.finished" in kinds_of(read_events(http, f"slow-{key}", key))
                       for key in sessions)
            assert {http.get(f"/v1/runs/{r}").json()["node"] for r in runs} == {"node-a"}
        assert a.proc is not None
        a.proc.kill()
        a.proc.wait(timeout=WAIT_S)

        with b.client() as http:
            finished = {run_id: wait_for_run(http, run_id, TERMINAL)
                        for run_id in runs + queued}
            assert all(r["status"] == "completed" for r in finished.values()), finished
            assert all(r["node"] == "node-b" for r in finished.values())
            assert all(finished[r]["output"] == "finished" for r in runs)
            for key in sessions:
                log = read_events(http, f"slow-{key}", key)
                assert_dense(log, start=1)
                first = [e for e in log if e["run_id"] == log[0]["run_id"]]
                kinds = [e["kind"] for e in first]
                assert kinds == ["message.user", "run.queued", "run.started",
                                 "message.assistant", "tool.started", "tool.finished",
                                 "run.resumed", "message.assistant", "run.completed"], kinds
                resumed = first[kinds.index("run.resumed")]["data"]
                assert resumed["previous_owner"] == "node-a"
                # The queued message ran after, on node b, in order.
                starts = [e["run_id"] for e in log if e["kind"] == "run.started"]
                ends = [e["run_id"] for e in log if e["kind"] == "run.completed"]
                assert starts == ends and len(starts) == 2
                health = http.get("/health").json()
                assert health["node"] == "node-b"
    finally:
        for node in nodes:
            node.cleanup()
        stub.close()


def test_an_unusable_sandbox_backend_stops_the_daemon(tmp_path: Path) -> None:
    from agentd.sandbox.backends import detect

    unusable = [n for n, why in detect().items()
                if why is not None and n in ("gvisor", "bubblewrap")]
    if not unusable:
        pytest.skip("every backend works here")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTD_")}
    env.update(AGENTD_HOME=str(tmp_path / "home"), AGENTD_PORT=str(free_port()),
               AGENTD_SANDBOX=f'{{"backend": "{unusable[0]}"}}')
    done = subprocess.run([sys.executable, "-m", "agentd", "serve"], env=env,
                          cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert f"sandbox.backend: sandbox backend '{unusable[0]}' is not usable" in done.stderr
    assert "Traceback" not in done.stderr
