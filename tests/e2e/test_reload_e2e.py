"""A real daemon process reloads its agentd.toml: on SIGHUP and on ``POST
/v1/admin/reload`` (and ``agentd reload``), without a restart. Each effect is seen
through the API (a lane's limit in /v1/kernel, a token refused, the next run's tool
denied, the audit log) or in the daemon's log, waited for by polling, never by
sleeping; a file that cannot be loaded changes nothing and the log says why."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.conftest import wait_until
from tests.daemons import Daemon, Spawn, create_agent, read_events, send
from typer.testing import CliRunner

pytestmark = pytest.mark.e2e

ADMIN = "e2e-reload-admin-0123456789abcdefghij"
OTHER = "e2e-reload-other-0123456789abcdefghij"


def _toml(concurrency: int, *, tokens: tuple[str, ...] = (ADMIN, OTHER), top: str = "",
          tail: str = "") -> str:
    listed = ", ".join(f'"{t}"' for t in tokens)
    return (f"{top}demo_agent = false\ntokens = [{listed}]\n\n"
            f"[providers.openai]\nconcurrency = {concurrency}\n{tail}")


def _concurrency(client: httpx.Client) -> int:
    lanes = client.get("/v1/kernel").json()["scheduler"]["lanes"]
    value: int = lanes["openai"]["limits"]["concurrency"]
    return value


def _status(daemon: Daemon, token: str) -> int:
    return httpx.get(f"{daemon.url}/v1/agents", headers=daemon.auth(token),
                     timeout=30).status_code


def _reload_rows(client: httpx.Client) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = client.get(
        "/v1/audit", params={"action": "config.reload"}).json()["rows"]
    return rows


def _cli(daemon: Daemon, *args: str) -> Any:
    from agentd.cli.app import app

    return CliRunner().invoke(app, ["--url", daemon.url, "--token", ADMIN, "reload", *args])


def test_sighup_and_the_api_reload_a_running_daemon(spawn: Spawn, home: Path) -> None:
    home.mkdir(parents=True, exist_ok=True)
    config = home / "agentd.toml"
    config.write_text(_toml(2))
    daemon = spawn()
    with daemon.client(ADMIN) as client:
        assert _concurrency(client) == 2
        create_agent(client, "calc", tools=["calculator"])

        # SIGHUP: a raised limit and a token taken out, seen through the API.
        config.write_text(_toml(7, tokens=(ADMIN,)))
        os.kill(daemon.pid, signal.SIGHUP)
        wait_until(lambda: _concurrency(client) == 7, what="the new limit in /v1/kernel")
        assert _status(daemon, OTHER) == 401
        assert "applied providers.openai.concurrency, tokens" in daemon.log()

        # A file that cannot be loaded: nothing changes, the log says why.
        config.write_text(_toml(9, tokens=(ADMIN, OTHER)) + "concurrency = [\n")
        os.kill(daemon.pid, signal.SIGHUP)
        wait_until(lambda: "configuration reload (SIGHUP) refused" in daemon.log(),
                   what=lambda: f"the refusal in the log:\n{daemon.log()}")
        assert "not valid TOML" in daemon.log()
        assert _concurrency(client) == 7 and _status(daemon, OTHER) == 401
        rows = _reload_rows(client)
        assert [(r["actor"], r["outcome"]) for r in rows] == [
            ("(SIGHUP)", "allowed"), ("(SIGHUP)", "denied")]
        assert rows[0]["details"]["applied"] == ["providers.openai.concurrency", "tokens"]

        # The API (and the CLI): the policy denies a tool from the next run on; the
        # log turns to JSON lines; a change that needs a restart is reported, not
        # applied (the port in the file is not one: the command line's --port wins,
        # at start as on a reload).
        before = send(client, "calc", "s1", '/tool calculator {"expression": "6*7"}')
        assert before.status_code == 200, before.text
        deny = '[[policy.rules]]\ntool = "calculator"\naction = "deny"\n'
        config.write_text(_toml(7, tokens=(ADMIN,), tail=deny + '[telemetry]\n'
                                'log_format = "json"\n'))
        answer = client.post("/v1/admin/reload")
        assert answer.status_code == 200, answer.text
        assert answer.json()["applied"] == ["policy.rules", "telemetry.log_format"]
        after = send(client, "calc", "s2", '/tool calculator {"expression": "6*7"}')
        assert after.status_code == 200, after.text
        finished = [e["data"] for e in read_events(client, "calc", "s2")
                    if e["kind"] == "tool.finished"]
        assert finished and finished[0]["denied"] is True
        unchanged = _cli(daemon)
        assert unchanged.exit_code == 0, unchanged.output
        assert unchanged.output.startswith("nothing changed")
        lines = daemon.log().splitlines()
        assert json.loads(lines[-1])["level"] in ("INFO", "WARNING", "DEBUG")

        config.write_text(_toml(7, tokens=(ADMIN,), top="port = 1\ntool_workers = 3\n", tail=deny +
                                '[telemetry]\nlog_format = "json"\n'))
        restart = _cli(daemon, "--json")
        assert restart.exit_code == 0, restart.output
        assert json.loads(restart.stdout)["restart_required"] == ["tool_workers"]
        text = _cli(daemon)
        assert "needs a restart" in text.output and "tool_workers" in text.output
        assert client.get("/health").json()["status"] == "ok"

        # Bad input through the CLI: one line naming the field, exit 1.
        config.write_text(_toml(0, tokens=(ADMIN,)))
        bad = _cli(daemon)
        assert bad.exit_code == 1
        assert "providers.openai.concurrency" in bad.stderr and "invalid_config" in bad.stderr
        assert _concurrency(client) == 7
    with daemon.client(OTHER) as other:
        refused = other.post("/v1/admin/reload")
        assert refused.status_code == 401
