"""The CLI without a daemon: help, status/stop/start with nothing (or a fake) running,
argument parsing and the message a user sees when the daemon is unreachable."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import typer
from tests.conftest import free_port
from typer.testing import CliRunner

from agentd.cli import app
from agentd.cli.app import _parse_setting

runner = CliRunner()

COMMANDS = [
    "serve",
    "start",
    "stop",
    "status",
    "create",
    "list",
    "show",
    "delete",
    "pause",
    "resume",
    "stop-agent",
    "send",
    "chat",
    "history",
    "tail",
    "sessions",
    "delete-session",
    "checkpoint",
    "checkpoints",
    "fork",
    "run",
    "cancel",
    "approvals",
    "approve",
    "deny",
]


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty AGENTD_HOME, and a URL where nothing listens."""
    monkeypatch.setenv("AGENTD_HOME", str(tmp_path))
    monkeypatch.setenv("AGENTD_PORT", str(free_port()))
    for var in ("AGENTD_URL", "AGENTD_TOKEN", "AGENTD_HOST"):
        monkeypatch.delenv(var, raising=False)
    return tmp_path


def spawn_fake_daemon(*, ignore_sigterm: bool = False) -> subprocess.Popen[str]:
    """A process whose command line says agentd, like the real daemon's does."""
    code = textwrap.dedent(
        f"""
        import signal, sys, time
        if {ignore_sigterm!r}:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print("ready", flush=True)
        time.sleep(120)
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, "agentd-fake-daemon"], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    return proc


def assert_gone(pid: int) -> None:
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


@pytest.fixture
def fake_daemon() -> Iterator[list[subprocess.Popen[str]]]:
    procs: list[subprocess.Popen[str]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


# -- help -------------------------------------------------------------------------


def test_root_help_lists_every_command() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in COMMANDS:
        assert command in result.stdout
    assert "agentd start" in result.stdout  # the quick start
    assert "AGENTD_URL" in result.stdout


def test_no_arguments_shows_help() -> None:
    result = runner.invoke(app, [])
    assert "Usage" in result.output
    assert "create" in result.output


@pytest.mark.parametrize("command", COMMANDS)
def test_each_command_has_help_with_an_example(command: str) -> None:
    result = runner.invoke(app, [command, "--help"])
    assert result.exit_code == 0, result.output
    assert f"agentd {command}" in result.stdout
    assert "Example" in result.stdout


def test_version() -> None:
    from agentd import __version__

    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert __version__ in result.stdout


def test_python_dash_m_runs_the_cli() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "agentd", "--help"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "Usage: agentd" in result.stdout


def test_cli_and_client_do_not_import_the_server() -> None:
    code = (
        "import sys, agentd.cli, agentd.client\n"
        "bad = sorted(m for m in sys.modules if m.startswith("
        "('agentd.server', 'agentd.runtime', 'agentd.store')))\n"
        "print(','.join(bad))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""


# -- daemon commands with nothing running -------------------------------------------


def test_status_when_nothing_runs(home: Path) -> None:
    result = runner.invoke(app, ["status"])
    assert result.exit_code == 1
    assert "not running" in result.stdout
    assert "Traceback" not in result.output


def test_status_json_when_nothing_runs(home: Path) -> None:
    import json

    result = runner.invoke(app, ["status", "--json"])
    assert result.exit_code == 1
    assert json.loads(result.stdout)["running"] is False


def test_stop_when_nothing_runs(home: Path) -> None:
    result = runner.invoke(app, ["stop"])
    assert result.exit_code == 0
    assert "not running" in result.stdout
    assert "no pid file" in result.stdout


def test_stop_removes_a_stale_pid_file(home: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    pid_file = home / "agentd.pid"
    pid_file.write_text(f"{dead.pid}\n")
    result = runner.invoke(app, ["stop"])
    assert result.exit_code == 0
    assert "stale" in result.stdout
    assert not pid_file.exists()


@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="needs /proc")
def test_stop_never_signals_a_process_that_is_not_agentd(home: Path) -> None:
    # The pid in a stale file may belong to another program by now.
    other = subprocess.Popen(["sleep", "60"])
    try:
        (home / "agentd.pid").write_text(str(other.pid))
        result = runner.invoke(app, ["stop"])
        assert result.exit_code == 0
        assert "stale" in result.stdout
        assert other.poll() is None
    finally:
        other.kill()
        other.wait()


def test_stop_terminates_the_daemon_and_removes_the_pid_file(
    home: Path, fake_daemon: list[subprocess.Popen[str]]
) -> None:
    proc = spawn_fake_daemon()
    fake_daemon.append(proc)
    pid_file = home / "agentd.pid"
    pid_file.write_text(str(proc.pid))
    result = runner.invoke(app, ["stop", "--timeout", "20"])
    assert result.exit_code == 0, result.output
    assert "stopped" in result.stdout
    proc.wait(timeout=5)  # `stop` may have reaped it already: no exit status to check
    assert_gone(proc.pid)
    assert not pid_file.exists()


def test_stop_needs_force_to_kill(home: Path, fake_daemon: list[subprocess.Popen[str]]) -> None:
    proc = spawn_fake_daemon(ignore_sigterm=True)
    fake_daemon.append(proc)
    pid_file = home / "agentd.pid"
    pid_file.write_text(str(proc.pid))

    result = runner.invoke(app, ["stop", "--timeout", "0.3"])
    assert result.exit_code == 1
    assert "--force" in result.stderr
    assert proc.poll() is None
    assert pid_file.exists()

    result = runner.invoke(app, ["stop", "--timeout", "0.3", "--force"])
    assert result.exit_code == 0, result.output
    assert "killed" in result.stdout
    proc.wait(timeout=5)
    assert_gone(proc.pid)
    assert not pid_file.exists()


def test_start_refuses_when_the_pid_file_names_a_live_daemon(
    home: Path, fake_daemon: list[subprocess.Popen[str]]
) -> None:
    proc = spawn_fake_daemon()
    fake_daemon.append(proc)
    (home / "agentd.pid").write_text(str(proc.pid))
    result = runner.invoke(app, ["start"])
    assert result.exit_code == 1
    assert "already running" in result.stderr
    assert str(proc.pid) in result.stderr
    assert proc.poll() is None


def test_status_reports_a_live_pid_whose_api_does_not_answer(
    home: Path, fake_daemon: list[subprocess.Popen[str]]
) -> None:
    proc = spawn_fake_daemon()
    fake_daemon.append(proc)
    (home / "agentd.pid").write_text(str(proc.pid))
    result = runner.invoke(app, ["status"])
    assert result.exit_code == 1
    assert f"process {proc.pid} is alive" in result.stdout


def test_invalid_configuration_is_one_clean_line(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AGENTD_PORT", "not-a-port")
    result = runner.invoke(app, ["status"])
    assert result.exit_code == 1
    assert "invalid agentd configuration" in result.stderr
    assert "port" in result.stderr
    assert "Traceback" not in result.output


# -- unreachable daemon ---------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["list"],
        ["show", "demo"],
        ["create", "demo", "--setting", "a=1"],
        ["send", "demo", "hi"],
        ["history", "demo"],
        ["pause", "demo"],
        ["delete", "demo", "--yes"],
        ["chat", "demo"],
        ["stop-agent", "demo"],
        ["send", "demo", "hi", "--no-wait"],
        ["tail", "demo"],
        ["tail", "demo", "--after", "0"],
        ["sessions", "demo"],
        ["delete-session", "demo", "cli", "--yes"],
        ["run", "r_1"],
        ["cancel", "r_1"],
    ],
)
def test_unreachable_daemon_is_one_clear_line(args: list[str], home: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = runner.invoke(app, ["--url", url, *args], input="")
    assert result.exit_code == 1
    assert result.exception is None or isinstance(result.exception, SystemExit)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error:")
    assert url in lines[0]
    assert "not reachable" in lines[0]
    assert "agentd start" in lines[0]
    assert "Traceback" not in result.output


def test_url_comes_from_agentd_port_when_not_given(home: Path) -> None:
    port = os.environ["AGENTD_PORT"]
    result = runner.invoke(app, ["list"])
    assert result.exit_code == 1
    assert f"http://127.0.0.1:{port}" in result.stderr


def test_agentd_url_env_is_used(home: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = runner.invoke(app, ["list"], env={"AGENTD_URL": url})
    assert result.exit_code == 1
    assert url in result.stderr


# -- argument parsing -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("temperature=0.2", ("temperature", 0.2)),
        ("max_steps=4", ("max_steps", 4)),
        ("verbose=true", ("verbose", True)),
        ("nothing=null", ("nothing", None)),
        ("greeting=hello world", ("greeting", "hello world")),
        ('quoted="42"', ("quoted", "42")),
        ('limits={"a": [1, 2]}', ("limits", {"a": [1, 2]})),
        ("empty=", ("empty", "")),
        ("url=http://x/?a=b", ("url", "http://x/?a=b")),
        (" key =1", ("key", 1)),
    ],
)
def test_setting_values_are_json_when_they_parse(raw: str, expected: tuple[str, object]) -> None:
    assert _parse_setting(raw) == expected


@pytest.mark.parametrize("raw", ["novalue", "=1", " =x"])
def test_bad_setting_is_a_usage_error(raw: str) -> None:
    with pytest.raises(typer.BadParameter):
        _parse_setting(raw)
    result = runner.invoke(app, ["--url", "http://127.0.0.1:9", "create", "x", "--setting", raw])
    assert result.exit_code == 2
    assert "KEY=VALUE" in result.output


def test_script_must_be_a_json_list(tmp_path: Path) -> None:
    script = tmp_path / "turns.json"
    script.write_text('{"text": "not a list"}')
    result = runner.invoke(
        app, ["--url", "http://127.0.0.1:9", "create", "x", "--script", str(script)]
    )
    assert result.exit_code == 2
    assert "JSON list" in result.output

    script.write_text("[not json")
    result = runner.invoke(
        app, ["--url", "http://127.0.0.1:9", "create", "x", "--script", str(script)]
    )
    assert result.exit_code == 2
    assert "not valid JSON" in result.output


def test_stop_and_stop_agent_point_at_each_other() -> None:
    daemon_help = runner.invoke(app, ["stop", "--help"]).stdout
    assert "stop-agent" in daemon_help
    agent_help = runner.invoke(app, ["stop-agent", "--help"]).stdout
    assert "does not stop the daemon" in agent_help
    assert "agentd resume NAME" in agent_help


def test_new_commands_sit_in_their_help_panels() -> None:
    text = runner.invoke(app, ["--help"], env={"COLUMNS": "100"}).stdout
    panels: dict[str, list[str]] = {}
    current = ""
    for line in text.splitlines():
        if line.startswith("╭─"):
            current = line.strip("╭─╮ ").split(" ─")[0]
        elif line.startswith("│ ") and current:
            word = line[2:].split(" ", 1)[0]
            if word and not word.startswith("-"):
                panels.setdefault(current, []).append(word)
    assert {"stop-agent", "pause", "resume"} <= set(panels["Agents"])
    assert {"send", "history", "chat", "tail"} <= set(panels["Conversations"])
    assert panels["Sessions"] == [
        "sessions", "delete-session", "checkpoint", "checkpoints", "fork", "compact"
    ]
    assert panels["Runs"] == ["runs", "run", "cancel", "decide", "subtasks", "approvals",
                             "approve", "deny", "trace", "replay", "export", "eval"]
    assert "stop-agent" not in panels["Daemon"]


def test_count_and_after_must_not_be_negative() -> None:
    for args in (["--count", "0"], ["--after", "-1"]):
        result = runner.invoke(app, ["--url", "http://127.0.0.1:9", "tail", "demo", *args])
        assert result.exit_code == 2, result.output


def test_delete_session_asks_first(home: Path) -> None:
    result = runner.invoke(
        app,
        ["--url", f"http://127.0.0.1:{free_port()}", "delete-session", "demo", "user:1"],
        input="n\n",
    )
    assert result.exit_code == 1
    assert "Delete session 'user:1' of agent 'demo'" in result.output
    assert "not reachable" not in result.output


def test_delete_asks_first(home: Path) -> None:
    result = runner.invoke(
        app, ["--url", f"http://127.0.0.1:{free_port()}", "delete", "demo"], input="n\n"
    )
    assert result.exit_code == 1
    assert "Delete agent 'demo'" in result.output
    assert "not reachable" not in result.output  # refused before asking the daemon


@pytest.mark.parametrize(
    "args",
    [
        ["resume"],
        ["resume", "demo", "k"],
        ["resume", "demo", "k", "--checkpoint", "c_1", "--seq", "1"],
        ["resume", "demo", "--checkpoint", "c_1"],
        ["resume", "--seq", "1"],
        ["fork"],
        ["fork", "demo"],
        ["fork", "demo", "k"],
        ["fork", "demo", "k", "--checkpoint", "c_1", "--seq", "1"],
        ["fork", "--seq", "1", "--key", "new"],
        ["resume", "demo", "k", "--seq", "-1"],
    ],
)
def test_bad_resume_and_fork_arguments_are_usage_errors(args: list[str], home: Path) -> None:
    # Nothing listens at the URL: a request would end in exit 1 (not reachable).
    url = f"http://127.0.0.1:{free_port()}"
    result = runner.invoke(app, ["--url", url, *args])
    assert result.exit_code == 2, result.output
    assert "not reachable" not in result.output
    assert "Traceback" not in result.output
    assert "Usage: agentd" in result.output
