"""The daemon's JSON log (``[telemetry] log_format = "json"``), from a real daemon
process at DEBUG: every line is a JSON object, every line logged for a run names its
agent, session, run and trace, and no secret the daemon holds or was sent (its token,
a named token, a provider key, a webhook secret) appears on any line, tracebacks
included. ``agentd logs`` then filters that log."""

from __future__ import annotations

import json
import secrets
import signal
import sys
from pathlib import Path

import pytest
from tests.daemons import Daemon, Spawn, create_agent, send
from typer.testing import CliRunner

from agentd.cli.app import app
from agentd.logcontext import default_trace_id

pytestmark = pytest.mark.e2e

#: A tool module as an operator would load one (``tool_modules``): an async tool (it
#: runs in the daemon's process, in the run's task) that logs what it is given and,
#: asked to, fails with it in its exception: the runtime logs the traceback.
TOOLS = '''
import logging

from agentd.tools import tool

log = logging.getLogger("leaky_tools")


@tool
async def leak(text: str, fail: bool = False) -> str:
    """Log the text; fail with it when asked."""
    log.debug("leak was given %s", text)
    if fail:
        raise RuntimeError(f"cannot use {text}")
    return "logged"
'''

IDS = ("agent", "agent_id", "session", "session_id", "run_id", "trace_id")


def _start(spawn: Spawn, tmp_path: Path, token: str, api_key: str) -> Daemon:
    # The daemon's working directory (the home's parent) is on its sys.path.
    (tmp_path / "leaky_tools.py").write_text(TOOLS)
    return spawn(env={
        "AGENTD_TELEMETRY": '{"log_format": "json"}',
        "AGENTD_LOG_LEVEL": "DEBUG",
        "AGENTD_TOKEN": token,
        "AGENTD_TOOL_MODULES": '["leaky_tools"]',
        "AGENTD_WEBHOOKS": '{"allow_hosts": ["127.0.0.1"], "allow_http": ["127.0.0.1"]}',
        "ANTHROPIC_API_KEY": api_key,
        "AGENTD_DEMO_AGENT": "false",
    })


def test_every_line_is_json_names_its_run_and_holds_no_secret(
        spawn: Spawn, tmp_path: Path) -> None:
    # Values of no recognisable shape: only the daemon's knowledge of them (its
    # token, its environment) can keep them out of the log.
    token = secrets.token_urlsafe(24)
    api_key = "anthropic-" + secrets.token_hex(16)
    daemon = _start(spawn, tmp_path, token, api_key)
    with daemon.client(token) as admin:
        made = admin.post("/v1/tokens", json={"name": "ci", "role": "admin"})
        assert made.status_code == 201, made.text
        named = made.json()["token"]
    with daemon.client(named) as client:
        create_agent(client, "leaky", model="scripted", tools=["leak"])
        hook = client.post("/v1/agents/leaky/webhooks",
                           json={"url": "http://127.0.0.1:9/hook"})
        assert hook.status_code == 201, hook.text
        webhook_secret = hook.json()["secret"]
        assert webhook_secret.startswith("whsec_")

        calm = send(client, "leaky", "user:1", '/tool leak {"text": "hello"}', wait=True)
        assert calm.status_code == 200, calm.text
        calm_run = calm.json()
        assert calm_run["status"] == "completed"

        # The hostile turn: every secret (and a forged token of the named tokens'
        # shape) in the message, in what the tool logs and in the traceback it causes.
        forged = "agd_abcdefghij_" + secrets.token_urlsafe(32)
        hostile = " ".join([token, named, api_key, webhook_secret, forged])
        args = json.dumps({"text": hostile, "fail": True})
        bad = send(client, "leaky", "user:2", f"/tool leak {args}", wait=True)
        assert bad.status_code == 200, bad.text
        bad_run = bad.json()
    assert daemon.signal_and_wait(signal.SIGTERM) == 0

    text = daemon.log()
    for secret in (token, named, api_key, webhook_secret, forged):
        assert secret not in text, f"a secret is in the log: {secret[:6]}..."

    lines = [json.loads(line) for line in text.splitlines() if line.strip()]
    assert all({"time", "level", "logger", "message"} <= line.keys() for line in lines)
    assert any(line["level"] == "DEBUG" for line in lines)
    assert any(line["logger"].startswith("uvicorn") for line in lines)  # (its own too)

    given = [line for line in lines if line["logger"] == "leaky_tools"]
    assert [line["run_id"] for line in given] == [calm_run["id"], bad_run["id"]]
    assert given[0]["message"] == "leak was given hello"
    assert "<redacted>" in given[1]["message"]
    raised = [line for line in lines if line["message"] == "tool leak raised"]
    assert len(raised) == 1
    assert "RuntimeError: cannot use <redacted>" in raised[0]["exception"]
    for line, run in ((given[0], calm_run), (given[1], bad_run), (raised[0], bad_run)):
        assert {key: line[key] for key in ("agent", "session", "run_id", "trace_id")} == {
            "agent": "leaky", "session": run["session"], "run_id": run["id"],
            "trace_id": default_trace_id(run["id"])}
        assert line["agent_id"] and line["session_id"]
    # Lines of no run carry no ids; a run's lines carry all of them.
    assert all(set(IDS) <= line.keys() or not set(IDS) & line.keys() for line in lines)

    # agentd logs: the lines of one run, of one level and up.
    runner = CliRunner()
    shown = runner.invoke(app, ["logs", "--file", str(daemon.log_path), "--run",
                                bad_run["id"], "--json", "-n", "0"])
    assert shown.exit_code == 0, shown.output
    picked = [json.loads(line) for line in shown.stdout.splitlines()]
    assert picked and {line["run_id"] for line in picked} == {bad_run["id"]}
    assert len(picked) == sum(line.get("run_id") == bad_run["id"] for line in lines)
    errors = runner.invoke(app, ["logs", "--file", str(daemon.log_path), "--agent",
                                 "leaky", "--level", "error", "-n", "0"])
    assert errors.exit_code == 0, errors.output
    assert "tool leak raised" in errors.stdout and "leak was given" not in errors.stdout
    assert "RuntimeError: cannot use <redacted>" in errors.stdout
    print(f"{len(lines)} lines, {sum('run_id' in line for line in lines)} of runs",
          file=sys.stderr)
