"""`agentd top` against a real daemon on a socket (agentd.testing.live.LiveServer): two
tenants' agents with runs under way (one in a slow model call, one waiting for a
person's approval of a tool call), read by the unscoped token and by one scoped to a
tenant."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.cli.conftest import one_error_line, serve, wait_for_status
from tests.conftest import wait_until
from typer.testing import CliRunner, Result

from agentd.client import Client

ADMIN = "top-admin-token-0123456789"
ACME = "top-acme-token-0123456789"
#: token-2 (ACME) sees tenant acme's agents only.
ACCESS = {"token-2": {"tenants": ["acme"]}}
ASK = {"policy": {"rules": [{"tool": "calculator", "action": "ask"}]},
       "script": [{"tool_calls": [{"name": "calculator", "arguments": {"expression": "6*7"}}]},
                  {"text": "42"}]}


def invoke(url: str, token: str, *args: str) -> Result:
    from agentd.cli import app

    return CliRunner().invoke(app, ["--url", url, "--token", token, "top", *args])


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, str]]]:
    """The URL, and the ids of the runs under way: ``slow`` (acme-slow, in a model call
    for a minute), ``asker`` (globex-asker, waiting for an approval)."""
    home: Path = tmp_path_factory.mktemp("agentd-top")
    with serve(home, tokens=[ADMIN, ACME], access=ACCESS, shutdown_grace_s=1.0) as url, \
            Client(url, ADMIN) as c:
        c.create_agent("acme-slow", model="scripted", settings={
            "tenant": "acme", "script": [{"text": "late", "delay_ms": 60_000}]})
        c.create_agent("acme-done", model="scripted", settings={"tenant": "acme"})
        c.create_agent("globex-asker", model="scripted", tools=["calculator"],
                       settings={"tenant": "globex", **ASK})
        assert c.send("acme-done", "k", "hello")["status"] == "completed"
        runs = {"slow": c.send("acme-slow", "k", "hi", wait=False)["id"],
                "asker": c.send("globex-asker", "k", "sum", wait=False)["id"]}
        wait_for_status(c, runs["asker"], "waiting_approval")

        def in_model() -> bool:
            busy = {b["agent"]: b for b in c.overview()["busy"]}
            return busy.get("acme-slow", {}).get("waiting_for", {}).get("doing") == "model"

        wait_until(in_model, what="the slow run in its model call")
        yield url, runs


def as_json(result: Result) -> dict[str, Any]:
    assert result.exit_code == 0, result.output
    value: dict[str, Any] = json.loads(result.stdout)
    return value


def runs_of(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["agent"]: r for a in data["agents"] for r in a["runs"]}


def test_json_says_what_each_run_waits_for(daemon: tuple[str, dict[str, str]]) -> None:
    url, ids = daemon
    data = as_json(invoke(url, ADMIN, "--json"))
    runs = runs_of(data)
    assert set(runs) == {"acme-slow", "globex-asker"}  # acme-done has ended
    assert runs["acme-slow"]["run"] == ids["slow"]
    assert runs["acme-slow"]["waiting_for"]["doing"] == "model"
    assert runs["acme-slow"]["waiting_for"]["detail"].startswith("scripted")
    assert runs["globex-asker"]["status"] == "waiting_approval"
    assert runs["globex-asker"]["waiting_for"] | {"since": None} == {
        "doing": "approval", "detail": "calculator", "since": None}
    assert data["runs"]["running"] == 1 and data["runs"]["waiting_approval"] == 1
    assert data["approvals_waiting"] == 1
    assert data["node"] and data["uptime_s"] > 0
    assert data["usage_today"]["calls"] >= 2  # acme-done's answer, the asker's tool call
    lanes = {lane["lane"]: lane for lane in data["lanes"]}
    assert "scripted" in lanes
    assert lanes["scripted"]["in_flight"] >= 1  # the slow call holds its grant
    assert set(lanes["scripted"]["wait_ms"]) >= {"p50", "max"}


def test_one_frame_shows_runs_lanes_and_spend(daemon: tuple[str, dict[str, str]]) -> None:
    url, ids = daemon
    result = invoke(url, ADMIN, "--once")
    assert result.exit_code == 0, result.output
    text = result.stdout
    assert "agentd top" in text and "spend today" in text
    assert "busy agents" in text and "lanes" in text
    assert ids["slow"] in text and ids["asker"] in text
    assert "approval of calculator" in text
    assert "model scripted" in text
    assert "\x1b[?25l" not in text  # one frame printed, not a live screen


def test_a_scoped_token_sees_its_own_agents_only(daemon: tuple[str, dict[str, str]]) -> None:
    url, ids = daemon
    data = as_json(invoke(url, ACME, "--once", "--json"))
    assert set(runs_of(data)) == {"acme-slow"}
    assert data["runs"]["waiting_approval"] == 0 and data["approvals_waiting"] == 0
    assert "globex" not in json.dumps(data) and ids["asker"] not in json.dumps(data)
    text = invoke(url, ACME, "--once").stdout
    assert "acme-slow" in text and "globex" not in text


def test_one_agent(daemon: tuple[str, dict[str, str]]) -> None:
    url, _ = daemon
    data = as_json(invoke(url, ADMIN, "--json", "--agent", "globex-asker"))
    assert set(runs_of(data)) == {"globex-asker"}
    line = one_error_line(invoke(url, ADMIN, "--once", "--agent", "nobody"))
    assert "nobody" in line


def test_live_refreshes_until_ctrl_c(daemon: tuple[str, dict[str, str]],
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Two refreshes, then Ctrl-C (the third sleep): it exits 0 with the frame shown."""
    url, ids = daemon
    from agentd.cli import _top

    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        if len(sleeps) == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(_top, "wait", sleep)
    result = invoke(url, ADMIN, "--interval", "0.5")
    assert result.exit_code == 0, result.output
    assert sleeps == [0.5, 0.5, 0.5]
    assert ids["slow"] in result.stdout and "Traceback" not in result.output
