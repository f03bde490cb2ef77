"""The CLI against the real app over a socket (see conftest.live_url)."""

from __future__ import annotations

import itertools
import json
import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from tests.cli.conftest import Invoke, one_error_line, wait_for_status
from typer.testing import CliRunner, Result

from agentd.client import Client

runner = CliRunner()


def test_status_against_a_running_daemon(cli: Invoke, live_url: str) -> None:
    result = cli("status")
    assert result.exit_code == 0, result.output
    assert f"running (pid unknown) at {live_url}" in result.stdout
    assert "store: sqlite" in result.stdout

    result = cli("status", "--json")
    assert result.exit_code == 0
    assert json.loads(result.stdout)["health"]["status"] == "ok"


def test_create_with_settings_tools_and_script(
    cli: Invoke, live_url: str, agent_name: str, tmp_path: Path
) -> None:
    script = tmp_path / "turns.json"
    script.write_text(json.dumps([{"text": "scripted hello"}]))
    result = cli(
        "create", agent_name,
        "--instructions", "Be brief.",
        "--tool", "calculator",
        "--setting", "max_steps=3",
        "--setting", "temperature=0.5",
        "--setting", "on_outage=fail",
        "--setting", 'loop_guard={"repeats": 3}',
        "--script", str(script),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert f"created agent {agent_name}" in result.stdout
    with Client(live_url) as client:
        agent = client.get_agent(agent_name)
    assert agent["tools"] == ["calculator"]
    assert agent["instructions"] == "Be brief."
    assert agent["settings"] == {
        "max_steps": 3,
        "temperature": 0.5,
        "on_outage": "fail",
        "loop_guard": {"repeats": 3},
        "script": [{"text": "scripted hello"}],
    }
    # An unknown setting is refused (it used to be stored and ignored).
    line = one_error_line(cli("create", f"{agent_name}-x", "--setting", "max_step=3"))
    assert "settings.max_step" in line and "did you mean 'max_steps'" in line

    result = cli("send", agent_name, "hi")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "scripted hello"


def test_create_errors_are_one_line(cli: Invoke, agent_name: str) -> None:
    assert cli("create", agent_name).exit_code == 0
    line = one_error_line(cli("create", agent_name))
    assert "agent_exists" in line
    line = one_error_line(cli("create", "bad name!"))
    assert "invalid_input" in line
    assert "bad name!" in line


def test_list_and_show(cli: Invoke, agent_name: str) -> None:
    cli("create", agent_name, "--tool", "calculator")
    cli("send", agent_name, "hello", "--session", "user:7")

    result = cli("list")
    assert result.exit_code == 0, result.output
    assert agent_name in result.stdout
    assert "NAME" in result.stdout

    listed = json.loads(cli("list", "--json").stdout)
    assert agent_name in [a["name"] for a in listed]

    result = cli("show", agent_name)
    assert result.exit_code == 0, result.output
    assert "calculator" in result.stdout
    assert "user:7" in result.stdout

    shown = json.loads(cli("show", agent_name, "--json").stdout)
    assert shown["name"] == agent_name and "calculator" in shown["tools"]

    line = one_error_line(cli("show", f"{agent_name}-missing"))
    assert "agent_not_found" in line


def test_send_prints_the_reply_or_the_run(cli: Invoke, agent_name: str) -> None:
    cli("create", agent_name)
    result = cli("send", agent_name, "hello there")
    assert result.exit_code == 0, result.output
    assert result.stdout == "echo: hello there\n"

    result = cli("send", agent_name, "as json", "--session", "a/b", "--json")
    assert result.exit_code == 0, result.output
    run = json.loads(result.stdout)
    assert run["status"] == "completed"
    assert run["session"] == "a/b"
    assert run["output"] == "echo: as json"

    result = cli("send", agent_name, "-", input="from stdin")
    assert result.stdout == "echo: from stdin\n"


def test_send_shows_each_tool_call_on_stderr_while_the_run_goes_on(
        cli: Invoke, agent_name: str) -> None:
    cli("create", agent_name, "--tool", "calculator")
    result = cli("send", agent_name, '/tool calculator {"expression": "6*7"}')
    assert result.exit_code == 0, result.output
    # stdout holds the reply alone; what the run did meanwhile went to stderr.
    assert result.stdout == "calculator returned: 42\n"
    lines = [line.strip() for line in result.stderr.splitlines()]
    assert any(line.startswith("→ calculator(") and "6*7" in line for line in lines), lines
    assert any(line.startswith("← calculator: ") and "42" in line for line in lines), lines


def test_send_exits_1_when_the_run_fails(cli: Invoke, live_url: str, agent_name: str) -> None:
    with Client(live_url) as client:
        client.create_agent(agent_name, settings={"script": [{"error": "model on fire"}]})
    line = one_error_line(cli("send", agent_name, "hi"))
    assert "failed" in line
    assert "model on fire" in line

    result = cli("send", agent_name, "hi", "--json")
    assert result.exit_code == 1
    assert json.loads(result.stdout)["status"] == "failed"


def test_pause_resume_and_a_paused_agent(cli: Invoke, agent_name: str) -> None:
    cli("create", agent_name)
    result = cli("pause", agent_name)
    assert result.exit_code == 0, result.output
    assert "paused" in result.stdout

    line = one_error_line(cli("send", agent_name, "hi"))
    assert "agent_paused" in line
    assert "resume" in line

    result = cli("resume", agent_name)
    assert result.exit_code == 0, result.output
    assert cli("send", agent_name, "hi").exit_code == 0


def test_history_shows_messages_and_tool_calls(cli: Invoke, agent_name: str) -> None:
    cli("create", agent_name, "--tool", "calculator")
    cli("send", agent_name, "hello", "-s", "h")
    cli("send", agent_name, '/tool calculator {"expression": "2+3"}', "-s", "h")

    result = cli("history", agent_name, "--session", "h")
    assert result.exit_code == 0, result.output
    text = result.stdout
    assert "user: hello" in text
    assert "assistant: echo: hello" in text
    assert 'calculator({"expression": "2+3"})' in text
    assert "← calculator: 5" in text
    assert "assistant: calculator returned: 5" in text
    assert "run.started" not in text
    assert text.index("user: hello") < text.index("← calculator: 5")

    verbose = cli("history", agent_name, "--session", "h", "--verbose").stdout
    assert "run.started" in verbose
    assert "#1 " in verbose

    events = json.loads(cli("history", agent_name, "--session", "h", "--json").stdout)
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))

    line = one_error_line(cli("history", agent_name, "--session", "nope"))
    assert "session_not_found" in line


def test_history_treats_content_as_text_not_markup(cli: Invoke, agent_name: str) -> None:
    cli("create", agent_name)
    cli("send", agent_name, "[bold]not markup[/bold]")
    result = cli("history", agent_name)
    assert "user: [bold]not markup[/bold]" in result.stdout


#: What a hostile model or tool output would send to the operator's terminal: set the
#: clipboard (OSC 52), retitle the window, clear the screen, overwrite the line.
HOSTILE = ("ok\x1b]52;c;Y3VybCBldmlsfHNo\x07 \x1b]0;pwned\x07\x1b[2J\rfake\u202egnp.exe\x9b31m"
           " zero\u200bwidth\u2066tag\U000e0041")


def test_model_and_tool_text_reach_the_terminal_inert(cli: Invoke, agent_name: str,
                                                      live_url: str) -> None:
    cli("create", agent_name, "--tool", "current_time")
    with Client(live_url, timeout=30.0) as client:
        client.update_agent(agent_name, settings={"script": [
            {"tool_calls": [{"name": "current_time", "arguments": {"timezone": HOSTILE}}]},
            {"text": HOSTILE}]})
    sent = cli("send", agent_name, HOSTILE, "-s", "x")
    outputs = [sent.output]
    for args in (("history", agent_name, "-s", "x"),
                 ("history", agent_name, "-s", "x", "--verbose"),
                 ("history", agent_name, "-s", "x", "--json"),
                 ("sessions", agent_name)):
        result = cli(*args)
        assert result.exit_code == 0, result.output
        outputs.append(result.output)
    for out in outputs:
        for bad in ("\x1b", "\x07", "\r", "\u202e", "\x9b", "\u200b", "\u2066",
                    "\U000e0041"):
            assert bad not in out, (bad, out)
    # Nothing is hidden: the sequences show as text a person can read.
    assert "\\x1b]52;c;Y3VybCBldmlsfHNo\\x07" in outputs[1]
    assert "\\u202e" in outputs[1]
    assert "zero\\u200bwidth\\u2066tag\\U000e0041" in outputs[1]


def test_delete(cli: Invoke, agent_name: str) -> None:
    cli("create", agent_name)
    result = cli("delete", agent_name, input="n\n")
    assert result.exit_code == 1
    assert cli("show", agent_name).exit_code == 0

    result = cli("delete", agent_name, input="y\n")
    assert result.exit_code == 0, result.output
    assert f"deleted agent {agent_name}" in result.stdout
    assert "agent_not_found" in one_error_line(cli("show", agent_name))

    cli("create", agent_name)
    assert cli("delete", agent_name, "--yes").exit_code == 0
    assert "agent_not_found" in one_error_line(cli("delete", agent_name, "--yes"))


def test_chat_streams_replies_and_tools(cli: Invoke, live_url: str, agent_name: str) -> None:
    script = [
        {"text": "streamed word by word", "delay_ms": 30},
        {"tool_calls": [{"name": "calculator", "arguments": {"expression": "6*7"}}]},
        {"text": "six times seven is 42"},
        {"error": "model on fire"},
    ]
    with Client(live_url) as client:
        client.create_agent(agent_name, tools=["calculator"], settings={"script": script})
    lines = "hello\n\nmultiply please\nbreak\n/exit\nnever sent\n"
    result = cli("chat", agent_name, "--session", "c", input=lines)
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "streamed word by word\n" in out
    assert 'calculator({"expression": "6*7"})' in out
    assert "← calculator: 42" in out
    assert "six times seven is 42\n" in out
    assert "model on fire" in result.stderr
    with Client(live_url) as client:
        users = [
            e["data"]["content"]
            for e in client.events(agent_name, "c")
            if e["kind"] == "message.user"
        ]
    assert users == ["hello", "multiply please", "break"]


def test_chat_keeps_going_after_an_api_error(cli: Invoke, live_url: str, agent_name: str) -> None:
    cli("create", agent_name)
    cli("pause", agent_name)
    result = cli("chat", agent_name, input="one\ntwo\n")
    assert result.exit_code == 0, result.output
    assert result.stderr.count("agent_paused") == 2


def test_chat_with_an_unknown_agent(cli: Invoke, agent_name: str) -> None:
    assert "agent_not_found" in one_error_line(cli("chat", agent_name, input="hi\n"))


def test_a_wrong_token_says_how_to_set_one(
    auth_url: str, auth_token: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from agentd.cli import app

    monkeypatch.delenv("AGENTD_TOKEN", raising=False)
    line = one_error_line(runner.invoke(app, ["--url", auth_url, "--token", "wrong", "list"]))
    assert "unauthorized" in line
    assert "AGENTD_TOKEN" in line
    assert "--token" in line

    result = runner.invoke(app, ["--url", auth_url, "list"], env={"AGENTD_TOKEN": auth_token})
    assert result.exit_code == 0, result.output


# -- stop-agent, run, cancel, send --no-wait ----------------------------------------

SLOW = [{"text": "a very slow reply", "delay_ms": 120_000}]


def queued_id(result: Result) -> str:
    assert result.exit_code == 0, result.output
    run_id = result.stdout.strip()
    assert run_id.startswith("r_")
    assert "\n" not in run_id
    return run_id


def test_stop_agent_cancels_its_runs_until_resumed(
    cli: Invoke, live_url: str, agent_name: str
) -> None:
    with Client(live_url) as client:
        client.create_agent(agent_name, settings={"script": SLOW})
        active = queued_id(cli("send", agent_name, "first", "--no-wait"))
        wait_for_status(client, active, "running")
        waiting = queued_id(cli("send", agent_name, "second", "--no-wait"))
        assert client.get_run(waiting)["status"] == "queued"

        result = cli("stop-agent", agent_name)
        assert result.exit_code == 0, result.output
        assert f"agent {agent_name} is stopped" in result.stdout
        assert f"agentd resume {agent_name}" in result.stdout
        assert client.get_run(active)["status"] == "cancelled"
        assert client.get_run(waiting)["status"] == "cancelled"
        assert client.get_agent(agent_name)["state"] == "stopped"

    line = one_error_line(cli("send", agent_name, "refused"))
    assert "agent_stopped" in line
    assert cli("stop-agent", agent_name, "--json").exit_code == 0  # stopping again is fine

    assert cli("resume", agent_name).exit_code == 0
    again = queued_id(cli("send", agent_name, "accepted again", "--no-wait"))
    assert cli("cancel", again).exit_code == 0

    assert "agent_not_found" in one_error_line(cli("stop-agent", f"{agent_name}-missing"))


def test_run_shows_output_usage_or_error(cli: Invoke, live_url: str, agent_name: str) -> None:
    cli("create", agent_name)
    done = json.loads(cli("send", agent_name, "hello run", "-s", "user:5", "--json").stdout)

    result = cli("run", done["id"])
    assert result.exit_code == 0, result.output
    text = result.stdout
    for expected in (done["id"], "completed", agent_name, "user:5", "echo: hello run"):
        assert expected in text
    assert re.search(r"steps\s+1\b", text)
    assert re.search(r"usage\s+\d+ in, \d+ out, \d+ cached tokens", text)

    shown = json.loads(cli("run", done["id"], "--json").stdout)
    assert shown == done

    failing = f"{agent_name}-f"
    with Client(live_url) as client:
        client.create_agent(failing, settings={"script": [{"error": "model on fire"}]})
    failed = json.loads(cli("send", failing, "hi", "--json").stdout)
    result = cli("run", failed["id"])
    assert result.exit_code == 0, result.output
    assert "failed" in result.stdout
    assert "model on fire [model_error]" in result.stdout

    assert "run_not_found" in one_error_line(cli("run", "r_doesnotexist"))


def test_cancel_a_running_run_and_one_that_already_ended(
    cli: Invoke, live_url: str, agent_name: str
) -> None:
    with Client(live_url) as client:
        client.create_agent(agent_name, settings={"script": SLOW})
        run_id = queued_id(cli("send", agent_name, "take your time", "--no-wait"))
        wait_for_status(client, run_id, "running")

        result = cli("cancel", run_id)
        assert result.exit_code == 0, result.output
        assert f"run {run_id} is cancelled" in result.stdout
        assert client.get_run(run_id)["status"] == "cancelled"

    result = cli("cancel", run_id, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["status"] == "cancelled"

    fast = f"{agent_name}-fast"
    cli("create", fast)
    done = json.loads(cli("send", fast, "quick", "--json").stdout)
    result = cli("cancel", done["id"])
    assert result.exit_code == 0, result.output
    assert "already ended (completed); nothing to cancel" in result.stdout
    assert json.loads(cli("run", done["id"], "--json").stdout)["status"] == "completed"

    assert "run_not_found" in one_error_line(cli("cancel", "r_doesnotexist"))


def test_send_no_wait_prints_the_run_id(cli: Invoke, live_url: str, agent_name: str) -> None:
    cli("create", agent_name)
    run_id = queued_id(cli("send", agent_name, "in the background", "-s", "bg", "--no-wait"))
    with Client(live_url) as client:
        run = wait_for_status(client, run_id, "completed")
    assert run["session"] == "bg"
    assert run["output"] == "echo: in the background"

    result = cli("send", agent_name, "as json", "--no-wait", "--json")
    assert result.exit_code == 0, result.output
    queued = json.loads(result.stdout)
    assert queued["status"] == "queued"
    assert queued["input"] == "as json"

    assert "agent_not_found" in one_error_line(
        cli("send", f"{agent_name}-missing", "hi", "--no-wait")
    )


def test_send_with_an_idempotency_key_runs_once(
    cli: Invoke, live_url: str, agent_name: str
) -> None:
    cli("create", agent_name)
    first = cli("send", agent_name, "pay order 7", "--idempotency-key", "order-7")
    assert first.stdout == "echo: pay order 7\n"

    retry = cli("send", agent_name, "pay order 7 again", "--idempotency-key", "order-7", "--json")
    assert retry.exit_code == 0, retry.output
    run = json.loads(retry.stdout)
    assert run["output"] == "echo: pay order 7"

    no_wait = cli("send", agent_name, "x", "--idempotency-key", "order-7", "--no-wait")
    assert queued_id(no_wait) == run["id"]

    other = cli("send", agent_name, "new", "--idempotency-key", "order-8", "--json")
    assert json.loads(other.stdout)["id"] != run["id"]
    with Client(live_url) as client:
        users = [
            e["data"]["content"]
            for e in client.events(agent_name, "cli")
            if e["kind"] == "message.user"
        ]
    assert users == ["pay order 7", "new"]


# -- sessions, delete-session -------------------------------------------------------


def test_sessions_lists_keys_and_last_seq(cli: Invoke, agent_name: str) -> None:
    cli("create", agent_name)
    result = cli("sessions", agent_name)
    assert result.exit_code == 0, result.output
    assert "no sessions yet" in result.stdout

    cli("send", agent_name, "one", "-s", "user:1")
    cli("send", agent_name, "two", "-s", "a/b")
    cli("send", agent_name, "three", "-s", "a/b")

    result = cli("sessions", agent_name)
    assert result.exit_code == 0, result.output
    assert "SESSION" in result.stdout
    assert re.search(r"user:1\s+│\s+5\s", result.stdout)
    assert re.search(r"a/b\s+│\s+10\s", result.stdout)

    listed = json.loads(cli("sessions", agent_name, "--json").stdout)
    assert {s["key"]: s["last_seq"] for s in listed} == {"user:1": 5, "a/b": 10}
    assert all(s["updated_at"] for s in listed)

    assert "agent_not_found" in one_error_line(cli("sessions", f"{agent_name}-missing"))


def test_delete_session(cli: Invoke, agent_name: str) -> None:
    cli("create", agent_name)
    cli("send", agent_name, "keep me", "-s", "keep")
    cli("send", agent_name, "drop me", "-s", "a/b")

    result = cli("delete-session", agent_name, "a/b", input="n\n")
    assert result.exit_code == 1
    assert cli("history", agent_name, "-s", "a/b").exit_code == 0

    result = cli("delete-session", agent_name, "a/b", input="y\n")
    assert result.exit_code == 0, result.output
    assert f"deleted session a/b of agent {agent_name}" in result.stdout
    assert "session_not_found" in one_error_line(cli("history", agent_name, "-s", "a/b"))
    keys = [s["key"] for s in json.loads(cli("sessions", agent_name, "--json").stdout)]
    assert keys == ["keep"]

    assert "session_not_found" in one_error_line(cli("delete-session", agent_name, "a/b", "--yes"))
    assert "agent_not_found" in one_error_line(
        cli("delete-session", f"{agent_name}-missing", "keep", "--yes")
    )


# -- tail ---------------------------------------------------------------------------
# tail follows until --count events or Ctrl-C, so it runs as a real process with a
# timeout: a tail that never ends fails the test instead of hanging the suite.


def agentd_process(live_url: str, *args: str) -> list[str]:
    return [sys.executable, "-m", "agentd", "--url", live_url, *args]


def process_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("AGENTD_") or k == "AGENTD_HOME"}  # (its token)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def run_tail(live_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        agentd_process(live_url, "tail", *args),
        capture_output=True,
        text=True,
        timeout=60,
        env=process_env(),
    )


def test_tail_replays_history_after_a_seq(cli: Invoke, live_url: str, agent_name: str) -> None:
    cli("create", agent_name, "--tool", "calculator")
    cli("send", agent_name, "hello", "-s", "t")
    cli("send", agent_name, '/tool calculator {"expression": "2+3"}', "-s", "t")

    result = run_tail(live_url, agent_name, "-s", "t", "--after", "0", "--count", "2")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["user: hello", "assistant: echo: hello"]

    result = run_tail(live_url, agent_name, "-s", "t", "--after", "5", "--count", "3")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == 'user: /tool calculator {"expression": "2+3"}'
    assert lines[1] == '  → calculator({"expression": "2+3"})'
    assert lines[2] == "  ← calculator: 5"

    result = run_tail(live_url, agent_name, "-s", "t", "--after", "0", "--json", "--count", "5")
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert [e["seq"] for e in events] == [1, 2, 3, 4, 5]
    assert [e["kind"] for e in events][:2] == ["message.user", "run.queued"]

    result = run_tail(live_url, agent_name, "-s", "t", "--after", "0", "-v", "--count", "2")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[1].startswith("#2 · run.queued")


def test_tail_follows_messages_sent_while_it_runs(
    cli: Invoke, live_url: str, agent_name: str
) -> None:
    cli("create", agent_name)
    cli("send", agent_name, "before tail", "-s", "live")
    stop = threading.Event()

    def keep_sending() -> None:
        # Whenever tail starts listening, more messages follow: no race to lose.
        with Client(live_url) as client:
            n = 0
            while not stop.is_set() and n < 2000:
                n += 1
                client.send(agent_name, "live", f"ping {n}")
                stop.wait(0.05)

    sender = threading.Thread(target=keep_sending, daemon=True)
    sender.start()
    try:
        result = run_tail(live_url, agent_name, "--session", "live", "--count", "4")
    finally:
        stop.set()
        sender.join(timeout=30)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 4, lines
    assert "before tail" not in result.stdout  # without --after, only new events
    assert all(re.fullmatch(r"(user: |assistant: echo: )ping \d+", line) for line in lines)
    pairs = {(a, b) for a, b in itertools.pairwise(lines)}
    assert any(
        a.startswith("user: ") and b == f"assistant: echo: {a.removeprefix('user: ')}"
        for a, b in pairs
    ), lines


def test_tail_stops_cleanly_on_ctrl_c(cli: Invoke, live_url: str, agent_name: str) -> None:
    cli("create", agent_name)
    cli("send", agent_name, "something to show")
    proc = subprocess.Popen(
        agentd_process(live_url, "tail", agent_name, "--after", "0"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=process_env(),
        # Ctrl-C as a terminal sends it: a suite started in the background (``cmd &``
        # in a script) has SIGINT ignored, and the child would inherit that.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "user: something to show\n"  # now following
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr


def test_tail_errors_are_one_line(cli: Invoke, live_url: str, agent_name: str) -> None:
    cli("create", agent_name)
    for args, code in (
        ([f"{agent_name}-missing"], "agent_not_found"),
        ([agent_name, "-s", "nope"], "session_not_found"),
        ([agent_name, "-s", "nope", "--after", "0"], "session_not_found"),
    ):
        result = run_tail(live_url, *args)
        assert result.returncode == 1, result.stdout
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        assert lines[0].startswith("error:")
        assert code in lines[0]


def test_send_with_a_schema_prints_the_json_that_matched(
    cli: Invoke, agent_name: str, tmp_path: Path
) -> None:
    cli("create", agent_name)
    schema = {"type": "object", "properties": {"x": {"type": "integer"}}, "required": ["x"]}
    inline = cli("send", agent_name, "a point?", "--schema", json.dumps(schema))
    assert inline.exit_code == 0, inline.output
    assert json.loads(inline.stdout) == {"x": 0}
    path = tmp_path / "point.schema.json"
    path.write_text(json.dumps(schema))
    from_file = cli("send", agent_name, "again?", "--schema", str(path), "--no-wait")
    assert from_file.exit_code == 0, from_file.output
    # Refused before anything is sent: not JSON, not an object, not a schema.
    assert cli("send", agent_name, "x", "--schema", "{nope").exit_code == 2
    assert cli("send", agent_name, "x", "--schema", str(tmp_path / "missing")).exit_code == 2
    refused = cli("send", agent_name, "x", "--schema", '{"$ref": "#"}')
    assert refused.exit_code == 1 and "refers back" in refused.output
