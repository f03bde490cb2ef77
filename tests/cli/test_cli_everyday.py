"""The everyday commands added for issue 12 against a live daemon: tools, runs,
tail --all, edit, set, history's run headers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
from tests.cli.conftest import Invoke, one_error_line

from agentd.client import Client

# -- tools --------------------------------------------------------------------------


def test_tools_lists_every_tool_and_shows_one(cli: Invoke) -> None:
    result = cli("tools")
    assert result.exit_code == 0, result.output
    assert "calculator" in result.stdout and "read-only" in result.stdout
    listed = json.loads(cli("tools", "--json").stdout)
    assert "shell" in {t["name"] for t in listed}

    one = cli("tools", "calculator")
    assert one.exit_code == 0, one.output
    assert "expression (string, required)" in one.stdout
    assert json.loads(cli("tools", "calculator", "--json").stdout)["name"] == "calculator"

    assert "tool_not_found" in one_error_line(cli("tools", "no-such-tool"))


# -- runs ---------------------------------------------------------------------------


def test_runs_lists_and_filters(cli: Invoke, live_url: str, agent_name: str) -> None:
    cli("create", agent_name)
    other = f"{agent_name}-b"
    cli("create", other)
    for text in ("one", "two", "three"):
        assert cli("send", agent_name, text, "-s", "r").exit_code == 0
    assert cli("send", other, "elsewhere").exit_code == 0

    mine = json.loads(cli("runs", "--agent", agent_name, "--json").stdout)
    assert [r["input"] for r in mine] == ["three", "two", "one"]
    assert {r["status"] for r in mine} == {"completed"}

    two = json.loads(cli("runs", "-a", agent_name, "--limit", "2", "--json").stdout)
    assert [r["input"] for r in two] == ["three", "two"]
    table = cli("runs", "-a", agent_name, "--limit", "2")
    assert table.exit_code == 0 and "more runs match" in table.stdout

    none = cli("runs", "-a", agent_name, "--status", "failed,cancelled")
    assert none.exit_code == 0 and "no runs match" in none.stdout

    everyone = json.loads(cli("runs", "--limit", "1000", "--json").stdout)
    assert {agent_name, other} <= {r["agent"] for r in everyone}

    assert "unknown run status" in one_error_line(cli("runs", "--status", "finished"))
    assert "agent_not_found" in one_error_line(cli("runs", "--agent", f"{agent_name}-none"))


# -- set ----------------------------------------------------------------------------


def test_set_changes_fields_and_dotted_settings(cli: Invoke, live_url: str,
                                                agent_name: str) -> None:
    cli("create", agent_name, "--setting", 'policy={"network": false}')
    result = cli("set", agent_name, "settings.max_steps=5", "settings.policy.network=true",
                 "tools=calculator,current_time", "instructions=Be brief.")
    assert result.exit_code == 0, result.output
    assert "changed" in result.stdout and "settings.max_steps" in result.stdout
    with Client(live_url) as client:
        agent = client.get_agent(agent_name)
    assert agent["settings"]["max_steps"] == 5
    assert agent["settings"]["policy"] == {"network": True}  # merged, not replaced
    assert agent["tools"] == ["calculator", "current_time"]
    assert agent["instructions"] == "Be brief."

    assert cli("set", agent_name, "settings.max_steps=null").exit_code == 0
    with Client(live_url) as client:
        assert "max_steps" not in client.get_agent(agent_name)["settings"]


def test_set_refuses_bad_input_and_leaves_the_agent(cli: Invoke, live_url: str,
                                                     agent_name: str) -> None:
    cli("create", agent_name, "--tool", "calculator")
    with Client(live_url) as client:
        before = client.get_agent(agent_name)
    assert "unknown tool" in one_error_line(cli("set", agent_name, "tools=nosuch"))
    bad_key = cli("set", agent_name, "colour=blue")
    assert bad_key.exit_code == 2 and "settings.KEY" in bad_key.output
    assert cli("set", agent_name, "nothing").exit_code == 2
    with Client(live_url) as client:
        assert client.get_agent(agent_name) == before


# -- edit ---------------------------------------------------------------------------

# A stand-in for $EDITOR: each time it opens, it applies the next step of a plan (a
# JSON list in $EDIT_PLAN, the step's index kept in a file next to it) and records
# the text it was shown.
_EDITOR = textwrap.dedent("""
    import json, os, sys
    plan = json.loads(os.environ["EDIT_PLAN"])
    state = os.environ["EDIT_STATE"]
    step = int(open(state).read()) if os.path.exists(state) else 0
    open(state, "w").write(str(step + 1))
    path = sys.argv[-1]
    text = open(path).read()
    with open(state + f".{step}.seen", "w") as seen:
        seen.write(text)
    action = plan[step]
    if action == "fail":
        sys.exit(3)
    if action == "quit":
        sys.exit(0)
    lines = [l for l in text.splitlines() if not l.lstrip().startswith("//")]
    fields = json.loads("\\n".join(lines))
    fields.update(action)
    open(path, "w").write(json.dumps(fields, indent=2))
""")


@pytest.fixture
def editor(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    script = tmp_path / "editor.py"
    script.write_text(_EDITOR)
    state = tmp_path / "state"
    monkeypatch.setenv("EDITOR", f"{sys.executable} {script}")
    monkeypatch.setenv("EDIT_STATE", str(state))

    def plan(*steps: object) -> Path:
        monkeypatch.setenv("EDIT_PLAN", json.dumps(steps))
        return state

    return plan


def test_edit_applies_the_changes(cli: Invoke, live_url: str, agent_name: str,
                                  editor) -> None:  # type: ignore[no-untyped-def]
    cli("create", agent_name, "-i", "old")
    editor({"instructions": "new", "settings": {"max_steps": 3}})
    result = cli("edit", agent_name)
    assert result.exit_code == 0, result.output
    assert "changed instructions, settings" in result.stdout
    with Client(live_url) as client:
        agent = client.get_agent(agent_name)
    assert agent["instructions"] == "new" and agent["settings"]["max_steps"] == 3


def test_edit_reopens_with_the_error_beside_the_field(cli: Invoke, live_url: str,
                                                      agent_name: str, editor
                                                      ) -> None:  # type: ignore[no-untyped-def]
    cli("create", agent_name, "--tool", "calculator")
    state = editor({"tools": ["nosuch"]}, {"tools": ["current_time"]})
    result = cli("edit", agent_name)
    assert result.exit_code == 0, result.output
    assert "refused" in result.stderr
    second = Path(f"{state}.1.seen").read_text().splitlines()
    at = next(i for i, line in enumerate(second) if line.strip().startswith('"tools":'))
    assert second[at - 1].strip().startswith("// error:")
    assert "nosuch" in second[at - 1]
    with Client(live_url) as client:
        assert client.get_agent(agent_name)["tools"] == ["current_time"]


def test_edit_leaves_the_agent_on_abort(cli: Invoke, live_url: str, agent_name: str,
                                        editor) -> None:  # type: ignore[no-untyped-def]
    cli("create", agent_name, "-i", "keep me")
    with Client(live_url) as client:
        before = client.get_agent(agent_name)

    editor("quit")  # closes without saving
    result = cli("edit", agent_name)
    assert result.exit_code == 0 and "no change" in result.stdout

    editor({"tools": ["nosuch"]}, "quit")  # refused, then given up
    result = cli("edit", agent_name)
    assert result.exit_code == 0 and "no change" in result.stdout

    editor("fail")  # the editor itself fails
    line = one_error_line(cli("edit", agent_name))
    assert "unchanged" in line

    with Client(live_url) as client:
        assert client.get_agent(agent_name) == before


def test_edit_says_so_when_the_text_is_not_json(cli: Invoke, live_url: str,
                                                agent_name: str, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    cli("create", agent_name)
    script = tmp_path / "breaks.py"
    marker = tmp_path / "opened"
    script.write_text(textwrap.dedent(f"""
        import os, sys
        path = sys.argv[-1]
        if os.path.exists({str(marker)!r}):
            open({str(marker)!r} + ".seen", "w").write(open(path).read())
            sys.exit(0)  # the second time: quit without saving
        open({str(marker)!r}, "w").write("1")
        open(path, "w").write("{{ not json")
    """))
    monkeypatch.setenv("EDITOR", f"{sys.executable} {script}")
    result = cli("edit", agent_name)
    assert result.exit_code == 0, result.output
    assert "// error: not valid JSON" in Path(f"{marker}.seen").read_text()


# -- history ------------------------------------------------------------------------


def test_history_heads_each_run_so_answers_match_their_messages(
        cli: Invoke, live_url: str, agent_name: str) -> None:
    with Client(live_url) as client:
        client.create_agent(agent_name, settings={"script": [
            {"text": "first answer", "delay_ms": 1500}, {"text": "second answer"}]})
        first = client.send(agent_name, "q", "first question", wait=False)
        second = client.send(agent_name, "q", "second question", wait=True)
        assert client.get_run(first["id"])["status"] == "completed"
    text = cli("history", agent_name, "-s", "q").stdout
    order = [f"── run 1 · {first['id']}", "user: first question",
             f"── run 2 · {second['id']}", "user: second question",
             f"── run 1, continued · {first['id']}", "assistant: first answer",
             f"── run 2, continued · {second['id']}", "assistant: second answer"]
    positions = [text.index(part) for part in order]
    assert positions == sorted(positions), text


# -- tail --all -----------------------------------------------------------------------


def test_tail_all_follows_every_agent(cli: Invoke, live_url: str, agent_name: str) -> None:
    other = f"{agent_name}-b"
    cli("create", agent_name)
    cli("create", other)
    stop = threading.Event()

    def keep_sending() -> None:
        # The feed is live only: keep sending until tail has seen enough.
        with Client(live_url) as client:
            n = 0
            while not stop.is_set() and n < 500:
                n += 1
                client.send(agent_name, "a", f"to a {n}")
                client.send(other, "b", f"to b {n}")
                stop.wait(0.05)

    sender = threading.Thread(target=keep_sending, daemon=True)
    sender.start()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTD_")
           or k == "AGENTD_HOME"}
    try:
        result = subprocess.run(
            [sys.executable, "-m", "agentd", "--url", live_url, "tail", "--all", "--json",
             "--count", "12"], capture_output=True, text=True, timeout=60, env=env)
        one = subprocess.run(
            [sys.executable, "-m", "agentd", "--url", live_url, "tail", other, "--all",
             "--count", "4"], capture_output=True, text=True, timeout=60, env=env)
    finally:
        stop.set()
        sender.join(timeout=30)
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(events) == 12
    assert {(e["agent"], e["session"]) for e in events} == {(agent_name, "a"), (other, "b")}
    assert {"message.user", "message.assistant"} <= {e["kind"] for e in events}
    assert one.returncode == 0, one.stderr
    lines = one.stdout.splitlines()
    assert len(lines) == 4 and all(line.startswith(f"{other}/b ") for line in lines)


def test_tail_needs_a_name_or_all(cli: Invoke) -> None:
    result = cli("tail")
    assert result.exit_code == 2 and "--all" in result.output
    assert cli("tail", "--all", "--after", "3").exit_code == 2
    assert "agent_not_found" in one_error_line(cli("tail", "no-such-agent", "--all"))
