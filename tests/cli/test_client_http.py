"""agentd.client against the real app over a socket (see conftest.live_url)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentd.client import APIError, Client
from agentd.security.tokens import read_token


@pytest.fixture
def client(live_url: str, live_home: Path) -> Iterator[Client]:
    with Client(live_url, token=read_token(live_home), timeout=30.0) as c:
        yield c


def test_health(client: Client) -> None:
    health = client.health()
    assert health["status"] == "ok"
    assert health["store"] == "sqlite"
    assert {"version", "agents", "active_runs"} <= set(health)


def test_agent_lifecycle(client: Client, agent_name: str) -> None:
    created = client.create_agent(
        agent_name, instructions="Be brief.", tools=["calculator"], settings={"max_steps": 4}
    )
    assert created["name"] == agent_name
    assert created["model"] == "scripted"
    assert created["tools"] == ["calculator"]
    assert created["settings"] == {"max_steps": 4}
    assert agent_name in [a["name"] for a in client.list_agents()]
    assert client.get_agent(agent_name)["instructions"] == "Be brief."

    updated = client.update_agent(agent_name, instructions="Be thorough.")
    assert updated["instructions"] == "Be thorough."

    assert client.pause_agent(agent_name)["state"] == "paused"
    assert client.resume_agent(agent_name)["state"] != "paused"

    client.delete_agent(agent_name)
    with pytest.raises(APIError) as info:
        client.get_agent(agent_name)
    assert (info.value.status, info.value.code) == (404, "agent_not_found")


def test_errors_carry_status_code_and_message(client: Client, agent_name: str) -> None:
    client.create_agent(agent_name)
    with pytest.raises(APIError) as info:
        client.create_agent(agent_name)
    assert (info.value.status, info.value.code) == (409, "agent_exists")
    assert agent_name in info.value.message
    assert info.value.retryable is False

    with pytest.raises(APIError) as info:
        client.create_agent("no spaces allowed!")
    assert (info.value.status, info.value.code) == (422, "invalid_input")

    with pytest.raises(APIError) as info:
        client.create_agent(f"{agent_name}-x", model="nosuchprovider:model")
    assert info.value.status == 422

    with pytest.raises(APIError) as info:
        client.get_run("r_does_not_exist")
    assert (info.value.status, info.value.code) == (404, "run_not_found")

    with pytest.raises(APIError) as info:
        client.get_session(agent_name, "never-used")
    assert (info.value.status, info.value.code) == (404, "session_not_found")


def test_send_and_sessions_with_keys_that_need_encoding(client: Client, agent_name: str) -> None:
    client.create_agent(agent_name)
    for key in ("user:1", "a/b", "with space?&#"):
        run = client.send(agent_name, key, f"hi {key}")
        assert run["status"] == "completed"
        assert run["output"] == f"echo: hi {key}"
        assert run["session"] == key
        assert client.get_session(agent_name, key)["key"] == key
        assert client.get_run(run["id"])["output"] == run["output"]
    keys = {s["key"] for s in client.list_sessions(agent_name)}
    assert keys == {"user:1", "a/b", "with space?&#"}

    client.delete_session(agent_name, "a/b")
    assert {s["key"] for s in client.list_sessions(agent_name)} == {"user:1", "with space?&#"}


def test_send_without_waiting_then_read_the_run(client: Client, agent_name: str) -> None:
    client.create_agent(agent_name)
    run = client.send(agent_name, "k", "later", wait=False)
    assert run["status"] in ("queued", "running", "completed")
    # Waiting is the server's job; reading the log until the run is done is ours.
    done = next(
        f for f in client.follow(agent_name, "k") if f.event == "done" and f.run_id == run["id"]
    )
    assert done.data["data"]["output"] == "echo: later"
    assert client.get_run(run["id"])["status"] == "completed"


def test_a_paused_agent_refuses_messages(client: Client, agent_name: str) -> None:
    client.create_agent(agent_name)
    client.pause_agent(agent_name)
    with pytest.raises(APIError) as info:
        client.send(agent_name, "k", "hi")
    assert (info.value.status, info.value.code) == (409, "agent_paused")
    with pytest.raises(APIError) as info:
        list(client.stream(agent_name, "k", "hi"))
    assert (info.value.status, info.value.code) == (409, "agent_paused")
    client.resume_agent(agent_name)
    assert client.send(agent_name, "k", "hi")["status"] == "completed"


def test_stream_yields_tokens_and_done(client: Client, agent_name: str) -> None:
    script = [{"text": "one two three four", "delay_ms": 40}]
    client.create_agent(agent_name, settings={"script": script})
    frames = list(client.stream(agent_name, "s", "go"))
    names = [f.event for f in frames]
    assert names[-1] == "done"
    tokens = [f for f in frames if f.event == "token"]
    assert len(tokens) > 1  # streamed word by word, not in one piece
    assert "".join(f.data["text"] for f in tokens) == "one two three four"
    run_id = frames[-1].run_id
    assert run_id is not None
    assert all(f.run_id == run_id for f in frames)
    assert client.get_run(run_id)["output"] == "one two three four"
    # Ids are session seqs: they only go up, and tokens carry the last committed one.
    ids = [f.id for f in frames]
    assert all(isinstance(i, int) for i in ids)
    assert ids == sorted(ids)  # type: ignore[type-var]


def test_stream_shows_tools_and_errors(client: Client, agent_name: str) -> None:
    script = [
        {"tool_calls": [{"name": "calculator", "arguments": {"expression": "6*7"}}]},
        {"text": "it is 42"},
        {"error": "the model fell over"},
    ]
    client.create_agent(agent_name, tools=["calculator"], settings={"script": script})
    frames = list(client.stream(agent_name, "s", "what is 6*7?"))
    by_name = {f.event: f for f in frames}
    assert by_name["tool_start"].data["data"]["arguments"] == {"expression": "6*7"}
    assert by_name["tool_end"].data["data"]["output"] == "42"
    assert frames[-1].event == "done"

    frames = list(client.stream(agent_name, "s", "again"))
    assert frames[-1].event == "error"
    assert "fell over" in json.dumps(frames[-1].data)


def test_events_pages_and_follow_replays(client: Client, agent_name: str) -> None:
    client.create_agent(agent_name)
    client.send(agent_name, "k", "first")
    client.send(agent_name, "k", "second")
    events = client.events(agent_name, "k")
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    kinds = [e["kind"] for e in events]
    assert kinds.count("message.user") == 2
    assert kinds.count("run.completed") == 2

    page = client.events(agent_name, "k", after=2, limit=3)
    assert [e["seq"] for e in page] == [3, 4, 5]

    followed = []
    for frame in client.follow(agent_name, "k", after=0):
        followed.append(frame)
        if frame.id == len(events):
            break
    assert [f.id for f in followed] == [e["seq"] for e in events]
    assert followed[-1].event == "done"


def test_cancel_a_slow_run(client: Client, agent_name: str) -> None:
    client.create_agent(agent_name, settings={"script": [{"text": "slow", "delay_ms": 30_000}]})
    run = client.send(agent_name, "k", "take your time", wait=False)
    cancelled = client.cancel_run(run["id"])
    assert cancelled["id"] == run["id"]
    final = next(
        f for f in client.follow(agent_name, "k") if f.event == "done" and f.run_id == run["id"]
    )
    assert final.data["kind"] == "run.cancelled"
    assert client.get_run(run["id"])["status"] == "cancelled"


def test_bearer_token(auth_url: str, auth_token: str) -> None:
    with Client(auth_url, token="") as anonymous:
        assert anonymous.health()["status"] == "ok"  # public
        with pytest.raises(APIError) as info:
            anonymous.list_agents()
        assert (info.value.status, info.value.code) == (401, "unauthorized")
    with Client(auth_url, token="wrong") as wrong, pytest.raises(APIError) as info:
        wrong.list_agents()
    assert info.value.status == 401
    with Client(auth_url, token=auth_token) as client:
        assert isinstance(client.list_agents(), list)


def test_checkpoint_restore_and_fork(client: Client, agent_name: str) -> None:
    client.create_agent(agent_name)
    client.send(agent_name, "k", "one")
    created = client.checkpoint(agent_name, "k", name="first")
    assert (created["seq"], created["name"], created["kind"]) == (6, "first", "manual")
    assert (created["agent"], created["session"]) == (agent_name, "k")
    client.send(agent_name, "k", "two")
    assert client.checkpoints(agent_name, "k") == [created]
    assert client.get_checkpoint(created["id"]) == created

    restored = client.restore(agent_name, "k", checkpoint="first")
    assert restored["session"]["last_seq"] == 12
    assert restored["event"]["kind"] == "session.restored"
    assert restored["event"]["data"]["to_seq"] == 6
    again = client.restore_checkpoint(created["id"])
    assert again["event"]["seq"] == 13
    assert client.restore(agent_name, "k", seq=0)["event"]["data"]["to_seq"] == 0

    forked = client.fork(agent_name, "k", seq=11, new_key="f")
    assert forked["key"] == "f"
    users = [e["data"]["content"] for e in client.events(agent_name, "f")
             if e["kind"] == "message.user"]
    assert users == ["one", "two"]
    generated = client.fork_checkpoint(created["id"])
    assert generated["key"].startswith("k~")
    assert client.fork_checkpoint(created["id"], new_key="g")["key"] == "g"


def test_checkpoint_errors_are_api_errors(client: Client, agent_name: str) -> None:
    client.create_agent(agent_name)
    client.send(agent_name, "k", "one")
    client.checkpoint(agent_name, "k", name="first")
    for call, status, code in (
        (lambda: client.checkpoint(agent_name, "k", name="first"), 409, "checkpoint_exists"),
        (lambda: client.checkpoint(agent_name, "nope"), 404, "session_not_found"),
        (lambda: client.get_checkpoint("c_nope"), 404, "checkpoint_not_found"),
        (lambda: client.restore(agent_name, "k", checkpoint="nope"), 404,
         "checkpoint_not_found"),
        (lambda: client.restore(agent_name, "k", seq=99), 422, "invalid_input"),
        (lambda: client.restore(agent_name, "k"), 422, "invalid_input"),
        (lambda: client.restore(agent_name, "k", seq=1, checkpoint="first"), 422,
         "invalid_input"),
        (lambda: client.restore_checkpoint("c_nope"), 404, "checkpoint_not_found"),
        (lambda: client.fork(agent_name, "k", seq=1, new_key="k"), 409, "session_exists"),
        (lambda: client.fork(agent_name, "k"), 422, "invalid_input"),
        (lambda: client.fork_checkpoint("c_nope"), 404, "checkpoint_not_found"),
    ):
        with pytest.raises(APIError) as info:
            call()
        assert (info.value.status, info.value.code) == (status, code)
    assert client.get_session(agent_name, "k")["last_seq"] == 6


def test_frame_ids_name_the_session(client: Client, agent_name: str) -> None:
    client.create_agent(agent_name)
    client.send(agent_name, "k", "one")
    client.send(agent_name, "other", "one")
    frames = list(client.stream(agent_name, "k", "two"))
    tag = client.get_session(agent_name, "k")["tag"]
    assert all(f.raw_id == f"{f.id}@{tag}" for f in frames)

    # Resuming from a saved frame id replays what came after it.
    saved = frames[0]
    assert saved.id == 6
    after = client.follow(agent_name, "k", last_event_id=saved.raw_id)
    assert next(after).id == 7
    after.close()

    # An id of another session is refused rather than read as this session's seq.
    with pytest.raises(APIError) as info:
        next(client.follow(agent_name, "other", last_event_id=saved.raw_id))
    assert (info.value.status, info.value.code) == (422, "wrong_session")

    # Restoring keeps the session (and its tag): a follower goes on across it.
    client.restore(agent_name, "k", seq=5)
    seen = []
    for frame in client.follow(agent_name, "k", last_event_id=frames[-1].raw_id):
        seen.append(frame)
        break
    assert seen[0].event == "session.restored"
    assert seen[0].raw_id == f"{frames[-1].id + 1}@{tag}"
