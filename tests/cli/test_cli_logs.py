"""``agentd logs``: the daemon's log file filtered by run, agent, session, level and
time, and followed (``-f``) as it grows, is replaced or has a line written in parts.
(tests/e2e/test_json_logs_e2e.py runs it on a real daemon's log.)"""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from tests.daemons import clean_env
from typer.testing import CliRunner

from agentd.cli.app import app

runner = CliRunner()


def _line(message: str, *, level: str = "INFO", run: str | None = None,
          agent: str = "bot", when: datetime | None = None) -> str:
    record: dict[str, Any] = {
        "time": (when or datetime.now(UTC)).isoformat(timespec="milliseconds")
        .replace("+00:00", "Z"),
        "level": level, "logger": "agentd.test", "message": message}
    if run is not None:
        record.update(agent=agent, agent_id=f"a_{agent}", session="user:1",
                      session_id="s_1", run_id=run, trace_id="0" * 31 + "1")
    return json.dumps(record)


@pytest.fixture
def log(tmp_path: Path) -> Path:
    path = tmp_path / "agentd.log"
    old = datetime.now(UTC) - timedelta(hours=3)
    path.write_text("\n".join([
        "--- agentd start 2025-01-01T00:00:00+00:00 127.0.0.1:8721 ---",
        _line("started"),
        _line("ancient", run="r_1", when=old),
        _line("step one", run="r_1", level="DEBUG"),
        _line("other agent", run="r_2", agent="other"),
        _line("tool raised", run="r_1", level="ERROR"),
        _line("warned", level="WARNING"),
    ]) + "\n")
    return path


def _logs(*args: str) -> list[str]:
    result = runner.invoke(app, ["logs", *args])
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.stdout.splitlines()]
    return [record.get("message", record.get("text")) for record in records]


def test_filters_pick_lines_by_run_agent_level_and_time(log: Path) -> None:
    where = ["--file", str(log), "--json"]
    assert _logs(*where, "--run", "r_1") == ["ancient", "step one", "tool raised"]
    assert _logs(*where, "--agent", "other") == ["other agent"]
    assert _logs(*where, "--agent", "a_bot", "--level", "info") == ["ancient",
                                                                      "tool raised"]
    assert _logs(*where, "--session", "user:1", "--since", "1h") == [
        "step one", "other agent", "tool raised"]
    assert _logs(*where, "--level", "WARNING") == ["tool raised", "warned"]
    assert _logs(*where, "--run", "r_1", "-n", "1") == ["tool raised"]
    # No filter: every line, the start marker (no JSON) as {"text": ...}.
    everything = _logs(*where)
    assert len(everything) == 7 and everything[0].startswith("--- agentd start")


def test_text_rendering_names_the_run(log: Path) -> None:
    result = runner.invoke(app, ["logs", "--file", str(log), "--run", "r_1", "-n", "1"])
    assert result.exit_code == 0, result.output
    assert result.stdout.rstrip().endswith(
        "ERROR agentd.test [agent=bot session=user:1 run_id=r_1]: tool raised")


def test_clear_messages_without_a_log_or_a_json_one(tmp_path: Path) -> None:
    missing = runner.invoke(app, ["logs", "--file", str(tmp_path / "none.log")])
    assert missing.exit_code == 1 and "no log file at" in missing.stderr
    text = tmp_path / "text.log"
    text.write_text("2025-01-31 12:00:00,123 INFO agentd: run r_9 started\n"
                    "2025-01-31 12:00:01,000 DEBUG agentd: other\n")
    found = runner.invoke(app, ["logs", "--file", str(text), "--run", "r_9"])
    assert found.exit_code == 0
    assert found.stdout.splitlines() == ["2025-01-31 12:00:00,123 INFO agentd: run r_9 started"]
    assert "no JSON lines" in found.stderr
    bad = runner.invoke(app, ["logs", "--file", str(text), "--since", "yesterday"])
    assert bad.exit_code == 1 and "--since" in bad.stderr


def _reader(stream: Any) -> queue.Queue[str]:
    lines: queue.Queue[str] = queue.Queue()

    def read() -> None:
        for line in stream:
            lines.put(line.rstrip("\n"))

    threading.Thread(target=read, daemon=True).start()
    return lines


def _next(lines: queue.Queue[str], proc: subprocess.Popen[str]) -> str:
    try:
        return lines.get(timeout=30)
    except queue.Empty:
        proc.kill()
        pytest.fail(f"agentd logs -f printed nothing new; stderr: {proc.stderr.read()}")  # type: ignore[union-attr]


def test_follow_prints_new_lines_of_the_run_through_rotation(log: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "agentd", "logs", "-f", "--file", str(log), "--run", "r_1",
         "--json", "-n", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=clean_env())
    try:
        lines = _reader(proc.stdout)
        assert json.loads(_next(lines, proc))["message"] == "tool raised"  # the last one
        with log.open("a") as handle:
            handle.write(_line("not this run", run="r_2") + "\n")
            # A line written in two parts is printed once, whole.
            half = _line("new step", run="r_1")
            handle.write(half[:20])
            handle.flush()
            time.sleep(0.5)  # (not a timing assertion: the follower reads the half first)
            handle.write(half[20:] + "\n")
        assert json.loads(_next(lines, proc))["message"] == "new step"
        # Rotated: the old file moved away, a new one in its place.
        log.rename(log.with_suffix(".log.1"))
        log.write_text(_line("after rotation", run="r_1") + "\n")
        assert json.loads(_next(lines, proc))["message"] == "after rotation"
        assert lines.empty()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
