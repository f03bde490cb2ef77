"""The CLI against the real app over a socket (see conftest.live_url)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Protocol

import pytest
from typer.testing import CliRunner, Result

from agentd.client import Client

runner = CliRunner()


class Invoke(Protocol):
    def __call__(self, *args: str, input: str | None = None) -> Result: ...


@pytest.fixture
def cli(live_url: str, live_home: Path, monkeypatch: pytest.MonkeyPatch) -> Invoke:
    monkeypatch.setenv("AGENTD_HOME", str(live_home))
    monkeypatch.delenv("AGENTD_TOKEN", raising=False)

    def invoke(*args: str, input: str | None = None) -> Result:
        from agentd.cli import app

        return runner.invoke(app, ["--url", live_url, *args], input=input)

    return invoke


def one_error_line(result: Result) -> str:
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error:")
    return lines[0]


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
        "--setting", "style=terse",
        "--setting", 'limits={"a": 1}',
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
        "style": "terse",
        "limits": {"a": 1},
        "script": [{"text": "scripted hello"}],
    }

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
    assert shown["agent"]["name"] == agent_name
    assert [s["key"] for s in shown["sessions"]] == ["user:7"]

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
