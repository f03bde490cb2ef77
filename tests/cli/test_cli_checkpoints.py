"""checkpoint, checkpoints, resume (restore) and fork against the real app over a socket
(see conftest.live_url), and `status` showing the node and sleeping agents."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
from tests.cli.conftest import Invoke, one_error_line, wait_for_status
from typer.testing import CliRunner, Result

from agentd.client import Client

runner = CliRunner()

#: A reply that takes long enough for the tests to find its run still going.
SLOW = [{"text": "a very slow reply", "delay_ms": 120_000}]
#: Each message (and its run) adds 5 events: message.user, run.queued, run.started,
#: message.assistant, run.completed.
PER_MESSAGE = 5


@pytest.fixture
def client(live_url: str) -> Iterator[Client]:
    with Client(live_url, timeout=30.0) as c:
        yield c


def usage_error(result: Result) -> str:
    """The message of a usage error (exit 2), its box and line breaks taken out."""
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    return " ".join(result.output.replace("│", " ").split())


def last_seq(client: Client, agent: str, key: str) -> int:
    seq: int = client.get_session(agent, key)["last_seq"]
    return seq


def kinds(client: Client, agent: str, key: str) -> list[str]:
    return [e["kind"] for e in client.events(agent, key)]


def user_messages(client: Client, agent: str, key: str) -> list[str]:
    return [e["data"]["content"] for e in client.events(agent, key) if e["kind"] == "message.user"]


def checkpoint_id(result: Result) -> str:
    assert result.exit_code == 0, result.output
    found = re.search(r"\bc_\w+", result.stdout)
    assert found, result.stdout
    return found.group(0)


def two_messages_and_a_checkpoint(cli: Invoke, agent: str, key: str = "k") -> str:
    """Session ``key``: "one" (seqs 1-5), checkpoint ``first`` (6), "two" (7-11)."""
    assert cli("create", agent).exit_code == 0
    assert cli("send", agent, "one", "-s", key).exit_code == 0
    cp = checkpoint_id(cli("checkpoint", agent, key, "--name", "first"))
    assert cli("send", agent, "two", "-s", key).exit_code == 0
    return cp


# -- checkpoint, checkpoints ------------------------------------------------------------


def test_checkpoint_prints_its_id_seq_and_name(
    cli: Invoke, client: Client, agent_name: str
) -> None:
    cli("create", agent_name)
    assert "session_not_found" in one_error_line(cli("checkpoint", agent_name, "k"))
    cli("send", agent_name, "hello", "-s", "k")

    result = cli("checkpoint", agent_name, "k", "--name", "before-refactor")
    cp = checkpoint_id(result)
    assert result.stdout.strip() == f"created checkpoint {cp} at seq 6, named before-refactor"
    assert last_seq(client, agent_name, "k") == 6
    assert client.events(agent_name, "k")[-1]["kind"] == "checkpoint"

    result = cli("checkpoint", agent_name, "k")
    unnamed = checkpoint_id(result)
    assert result.stdout.strip() == f"created checkpoint {unnamed} at seq 7"

    result = cli("checkpoint", agent_name, "k", "--name", "as-json", "--json")
    assert result.exit_code == 0, result.output
    created = json.loads(result.stdout)
    assert created["seq"] == 8
    assert (created["agent"], created["session"]) == (agent_name, "k")
    assert (created["name"], created["kind"]) == ("as-json", "manual")
    assert client.get_checkpoint(created["id"]) == created


def test_checkpoint_errors_change_nothing(cli: Invoke, client: Client, agent_name: str) -> None:
    cli("create", agent_name)
    cli("send", agent_name, "hello", "-s", "k")
    checkpoint_id(cli("checkpoint", agent_name, "k", "--name", "first"))
    before = last_seq(client, agent_name, "k")

    line = one_error_line(cli("checkpoint", agent_name, "k", "--name", "first"))
    assert "checkpoint_exists" in line
    assert "first" in line
    line = one_error_line(cli("checkpoint", agent_name, "k", "--name", "bad name!"))
    assert "invalid_input" in line
    assert last_seq(client, agent_name, "k") == before
    assert len(client.checkpoints(agent_name, "k")) == 1

    assert "agent_not_found" in one_error_line(cli("checkpoint", f"{agent_name}-x", "k"))
    assert "agent_not_found" in one_error_line(cli("checkpoints", f"{agent_name}-x", "k"))
    assert "session_not_found" in one_error_line(cli("checkpoints", agent_name, "nope"))


def test_checkpoints_lists_them_oldest_first(
    cli: Invoke, client: Client, agent_name: str
) -> None:
    cli("create", agent_name)
    cli("send", agent_name, "hello", "-s", "k")
    result = cli("checkpoints", agent_name, "k")
    assert result.exit_code == 0, result.output
    assert "no checkpoints yet" in result.stdout

    first = checkpoint_id(cli("checkpoint", agent_name, "k", "--name", "first"))
    cli("send", agent_name, "again", "-s", "k")
    second = checkpoint_id(cli("checkpoint", agent_name, "k"))

    result = cli("checkpoints", agent_name, "k")
    assert result.exit_code == 0, result.output
    header = result.stdout.splitlines()[0].split()
    assert [h for h in header if h.isalpha()] == ["ID", "SEQ", "KIND", "NAME", "CREATED"]
    assert re.search(rf"{first}\s+│\s+6\s+│\s+manual\s+│\s+first\s+│\s+\d{{4}}-", result.stdout)
    assert re.search(rf"{second}\s+│\s+12\s+│\s+manual\s+│\s+-\s", result.stdout)
    assert result.stdout.index(first) < result.stdout.index(second)

    listed = json.loads(cli("checkpoints", agent_name, "k", "--json").stdout)
    assert listed == client.checkpoints(agent_name, "k")
    assert [(c["id"], c["seq"], c["name"]) for c in listed] == [
        (first, 6, "first"),
        (second, 12, None),
    ]


# -- resume AGENT SESSION --checkpoint / --seq, resume --checkpoint ID --------------------


def test_resume_a_session_to_a_checkpoint_by_name(
    cli: Invoke, client: Client, agent_name: str
) -> None:
    cp = two_messages_and_a_checkpoint(cli, agent_name)
    assert last_seq(client, agent_name, "k") == 11

    result = cli("resume", agent_name, "k", "--checkpoint", "first")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == (
        f"session k of {agent_name} restored to seq 6 (checkpoint {cp}); "
        "events 7-11 kept in the log as its archive"
    )
    events = client.events(agent_name, "k")
    assert len(events) == 12  # nothing deleted, one event added
    restored = events[-1]
    assert restored["kind"] == "session.restored"
    assert restored["data"] == {
        "to_seq": 6,
        "checkpoint": cp,
        "archived": {"from_seq": 7, "to_seq": 11},
    }
    assert "session restored to seq 6" in cli("history", agent_name, "-s", "k").stdout

    # The session goes on from the checkpoint: a fork of its state now holds "one" only.
    new_key = cli("fork", agent_name, "k", "--seq", "12", "--key", "state").stdout.strip()
    assert new_key == "state"
    assert user_messages(client, agent_name, "state") == ["one"]
    assert cli("send", agent_name, "three", "-s", "k").stdout == "echo: three\n"


def test_resume_a_session_by_checkpoint_id_and_by_seq(
    cli: Invoke, client: Client, agent_name: str
) -> None:
    cp = two_messages_and_a_checkpoint(cli, agent_name)

    result = cli("resume", agent_name, "k", "--checkpoint", cp, "--json")
    assert result.exit_code == 0, result.output
    restored = json.loads(result.stdout)
    assert restored["session"]["key"] == "k"
    assert restored["session"]["last_seq"] == 12
    assert restored["event"]["seq"] == 12
    assert restored["event"]["kind"] == "session.restored"
    assert restored["event"]["data"]["to_seq"] == 6
    assert restored["event"]["data"]["checkpoint"] == cp

    result = cli("resume", agent_name, "k", "--seq", "3")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == (
        f"session k of {agent_name} restored to seq 3; events 4-12 kept in the log as its archive"
    )
    assert client.events(agent_name, "k")[-1]["data"] == {
        "to_seq": 3,
        "checkpoint": None,
        "archived": {"from_seq": 4, "to_seq": 12},
    }

    result = cli("resume", agent_name, "k", "--seq", "0")
    assert result.exit_code == 0, result.output
    assert "restored to seq 0" in result.stdout
    assert last_seq(client, agent_name, "k") == 14


def test_resume_with_only_a_checkpoint_id(cli: Invoke, client: Client, agent_name: str) -> None:
    cp = two_messages_and_a_checkpoint(cli, agent_name, key="a/b")

    result = cli("resume", "--checkpoint", cp)
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == (
        f"session a/b of {agent_name} restored to seq 6 (checkpoint {cp}); "
        "events 7-11 kept in the log as its archive"
    )
    last = client.events(agent_name, "a/b")[-1]
    assert (last["seq"], last["kind"], last["data"]["to_seq"]) == (12, "session.restored", 6)

    restored = json.loads(cli("resume", "--checkpoint", cp, "--json").stdout)
    assert (restored["session"]["agent"], restored["session"]["key"]) == (agent_name, "a/b")
    assert restored["event"]["seq"] == 13

    # A name is only a name within its session: alone, --checkpoint must be an id.
    line = one_error_line(cli("resume", "--checkpoint", "first"))
    assert "checkpoint_not_found" in line
    assert last_seq(client, agent_name, "a/b") == 13


def test_resume_an_agent_still_works(cli: Invoke, client: Client, agent_name: str) -> None:
    cli("create", agent_name)
    cli("pause", agent_name)
    result = cli("resume", agent_name)
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == f"agent {agent_name} is running"
    assert json.loads(cli("resume", agent_name, "--json").stdout)["name"] == agent_name
    assert "agent_not_found" in one_error_line(cli("resume", f"{agent_name}-missing"))


def test_restore_errors_change_nothing(cli: Invoke, client: Client, agent_name: str) -> None:
    cp = two_messages_and_a_checkpoint(cli, agent_name)
    cli("send", agent_name, "elsewhere", "-s", "other")
    before = client.events(agent_name, "k")

    line = one_error_line(cli("resume", agent_name, "k", "--checkpoint", "nope"))
    assert "checkpoint_not_found" in line
    assert "nope" in line
    line = one_error_line(cli("resume", "--checkpoint", "c_doesnotexist"))
    assert "checkpoint_not_found" in line
    # A checkpoint of one session cannot restore another.
    line = one_error_line(cli("resume", agent_name, "other", "--checkpoint", cp))
    assert "checkpoint_not_found" in line
    assert last_seq(client, agent_name, "other") == PER_MESSAGE

    line = one_error_line(cli("resume", agent_name, "k", "--seq", "12"))
    assert "invalid_input" in line
    assert line.count("0 to 11") == 1  # said once, not again from details.errors

    assert "session_not_found" in one_error_line(
        cli("resume", agent_name, "nope", "--seq", "0")
    )
    assert "agent_not_found" in one_error_line(
        cli("resume", f"{agent_name}-missing", "k", "--seq", "0")
    )
    assert client.events(agent_name, "k") == before


def test_restore_is_refused_while_a_run_is_busy(
    cli: Invoke, client: Client, agent_name: str
) -> None:
    client.create_agent(agent_name, settings={"script": [{"text": "quick"}, *SLOW]})
    cli("send", agent_name, "quick one", "-s", "k")
    cp = checkpoint_id(cli("checkpoint", agent_name, "k", "--name", "first"))
    result = cli("send", agent_name, "slow one", "-s", "k", "--no-wait")
    assert result.exit_code == 0, result.output
    run_id = result.stdout.strip()
    wait_for_status(client, run_id, "running")
    before = client.events(agent_name, "k")

    for args in (
        [agent_name, "k", "--checkpoint", "first"],
        [agent_name, "k", "--seq", "0"],
        ["--checkpoint", cp],
    ):
        line = one_error_line(cli("resume", *args))
        assert "session_busy" in line
        assert run_id in line
        assert client.events(agent_name, "k") == before

    assert cli("cancel", run_id).exit_code == 0
    assert cli("resume", agent_name, "k", "--checkpoint", "first").exit_code == 0
    assert client.events(agent_name, "k")[-1]["kind"] == "session.restored"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["A", "k"], "needs --checkpoint ID_OR_NAME or --seq N"),
        (["A", "k", "--checkpoint", "first", "--seq", "1"], "not both"),
        (["--checkpoint", "first", "--seq", "1"], "not both"),
        (["A", "--checkpoint", "first"], "give the SESSION too"),
        (["A", "--seq", "1"], "give the SESSION too"),
        (["--seq", "1"], "--seq needs AGENT SESSION"),
        ([], "give AGENT to resume an agent"),
    ],
)
def test_bad_resume_arguments_send_nothing(
    cli: Invoke, client: Client, agent_name: str, args: list[str], message: str
) -> None:
    two_messages_and_a_checkpoint(cli, agent_name)
    cli("pause", agent_name)  # checkpoints the session: one more event
    before = client.events(agent_name, "k")
    args = [agent_name if a == "A" else a for a in args]
    assert message in usage_error(cli("resume", *args))
    assert client.events(agent_name, "k") == before
    assert client.get_agent(agent_name)["state"] == "paused"  # nor was the agent resumed


# -- fork -------------------------------------------------------------------------------


def copied(events: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """What a fork copies of each event: everything but its seq and checkpoints."""
    return [
        (e["kind"], e["run_id"], e["data"], e["at"]) for e in events if e["kind"] != "checkpoint"
    ]


def test_fork_at_a_checkpoint_copies_the_events(
    cli: Invoke, client: Client, agent_name: str
) -> None:
    cp = two_messages_and_a_checkpoint(cli, agent_name)
    source = client.events(agent_name, "k")

    result = cli("fork", agent_name, "k", "--checkpoint", "first", "--key", "k-retry")
    assert result.exit_code == 0, result.output
    assert result.stdout == "k-retry\n"
    forked = client.events(agent_name, "k-retry")
    assert [e["seq"] for e in forked] == list(range(1, len(forked) + 1))
    assert copied(forked[:-1]) == copied(source[:6])
    assert forked[-1]["kind"] == "session.forked"
    assert forked[-1]["data"] == {
        "agent": agent_name,
        "session": "k",
        "seq": 6,
        "checkpoint": cp,
        "copied_events": PER_MESSAGE,
    }
    assert client.events(agent_name, "k") == source  # the source is left as it was

    # The fork is a session like any other; the source does not see its messages.
    assert cli("send", agent_name, "in the fork", "-s", "k-retry").exit_code == 0
    assert user_messages(client, agent_name, "k-retry") == ["one", "in the fork"]
    assert user_messages(client, agent_name, "k") == ["one", "two"]

    result = cli("fork", agent_name, "k", "--seq", "11", "--json")
    assert result.exit_code == 0, result.output
    session = json.loads(result.stdout)
    assert session["key"].startswith("k~")
    assert session["last_seq"] == 2 * PER_MESSAGE + 1
    assert copied(client.events(agent_name, session["key"])[:-1]) == copied(source)


def test_fork_with_only_a_checkpoint_id(cli: Invoke, client: Client, agent_name: str) -> None:
    cp = two_messages_and_a_checkpoint(cli, agent_name, key="a/b")

    result = cli("fork", "--checkpoint", cp, "--key", "branch")
    assert result.exit_code == 0, result.output
    assert result.stdout == "branch\n"
    assert user_messages(client, agent_name, "branch") == ["one"]
    assert client.events(agent_name, "branch")[-1]["data"]["session"] == "a/b"

    result = cli("fork", "--checkpoint", cp)
    assert result.exit_code == 0, result.output
    generated = result.stdout.strip()
    assert generated.startswith("a/b~")
    assert client.get_session(agent_name, generated)["last_seq"] == PER_MESSAGE + 1
    assert last_seq(client, agent_name, "a/b") == 11


def test_fork_errors_change_nothing(cli: Invoke, client: Client, agent_name: str) -> None:
    cp = two_messages_and_a_checkpoint(cli, agent_name)
    cli("send", agent_name, "taken", "-s", "taken")
    taken = client.events(agent_name, "taken")
    source = client.events(agent_name, "k")

    for args in (
        [agent_name, "k", "--seq", "1", "--key", "taken"],
        [agent_name, "k", "--checkpoint", "first", "--key", "k"],
        ["--checkpoint", cp, "--key", "taken"],
    ):
        line = one_error_line(cli("fork", *args))
        assert "session_exists" in line
        assert client.events(agent_name, "taken") == taken

    line = one_error_line(cli("fork", agent_name, "k", "--checkpoint", "nope", "--key", "n1"))
    assert "checkpoint_not_found" in line
    assert "checkpoint_not_found" in one_error_line(cli("fork", "--checkpoint", "c_nope"))
    line = one_error_line(cli("fork", agent_name, "k", "--seq", "99", "--key", "n2"))
    assert "invalid_input" in line
    assert "0 to 11" in line

    assert client.events(agent_name, "k") == source
    assert sorted(s["key"] for s in client.list_sessions(agent_name)) == ["k", "taken"]


def test_fork_of_a_deleted_session(cli: Invoke, client: Client, agent_name: str) -> None:
    cp = two_messages_and_a_checkpoint(cli, agent_name, key="gone")
    assert cli("delete-session", agent_name, "gone", "--yes").exit_code == 0

    line = one_error_line(cli("fork", agent_name, "gone", "--seq", "1", "--key", "x"))
    assert "session_not_found" in line
    line = one_error_line(cli("fork", "--checkpoint", cp, "--key", "x"))
    assert "checkpoint_not_found" in line
    assert "checkpoint_not_found" in one_error_line(cli("resume", "--checkpoint", cp))
    assert client.list_sessions(agent_name) == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["A", "k"], "needs --checkpoint ID_OR_NAME or --seq N"),
        (["A", "k", "--checkpoint", "first", "--seq", "1"], "not both"),
        (["A"], "give SESSION and --checkpoint or --seq too"),
        (["A", "--checkpoint", "first"], "give the SESSION too"),
        (["--seq", "1", "--key", "new"], "--seq needs AGENT SESSION"),
        (["--key", "new"], "or --checkpoint ID alone"),
        ([], "or --checkpoint ID alone"),
    ],
)
def test_bad_fork_arguments_send_nothing(
    cli: Invoke, client: Client, agent_name: str, args: list[str], message: str
) -> None:
    two_messages_and_a_checkpoint(cli, agent_name)
    args = [agent_name if a == "A" else a for a in args]
    assert message in usage_error(cli("fork", *args))
    assert [s["key"] for s in client.list_sessions(agent_name)] == ["k"]
    assert last_seq(client, agent_name, "k") == 11


# -- status, run ------------------------------------------------------------------------


def test_status_shows_the_node_and_sleeping_agents(
    cli: Invoke, client: Client, agent_name: str
) -> None:
    cli("create", agent_name)
    health = client.health()
    result = cli("status")
    assert result.exit_code == 0, result.output
    assert f"node: {health['node']}" in result.stdout
    found = re.search(r"agents: (\d+) \((\d+) awake, (\d+) asleep\)", result.stdout)
    assert found, result.stdout
    total, awake, asleep = map(int, found.groups())
    assert total >= 1
    assert total == awake + asleep


def test_run_shows_the_node_that_ran_it(cli: Invoke, client: Client, agent_name: str) -> None:
    cli("create", agent_name)
    run = json.loads(cli("send", agent_name, "hi", "--json").stdout)
    assert run["node"]
    assert re.search(rf"node\s+{re.escape(run['node'])}", cli("run", run["id"]).stdout)
