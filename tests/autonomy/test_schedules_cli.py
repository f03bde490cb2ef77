"""`agentd schedule add|list|show|next|pause|resume|delete|fires` against a live daemon
(a real app on a socket, through the client)."""

from __future__ import annotations

import json
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
from tests.cli.conftest import (  # noqa: F401 (fixtures)
    Invoke,
    agent_name,
    cli,
    live_home,
    live_url,
    one_error_line,
)
from tests.conftest import wait_until

from agentd.client import Client


@pytest.fixture(autouse=True)
def wide_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "250")


def _agent(url: str, name: str) -> None:
    with Client(url) as client:
        client.create_agent(name, model="scripted",
                            settings={"schedules": {"min_interval_s": 1}})


def test_add_list_show_next_pause_resume_delete(cli: Invoke, live_url: str,  # noqa: F811
                                                agent_name: str,  # noqa: F811
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    # A wide terminal: the list shows the session and content from 120 columns
    # (tests/cli/test_cli_widths.py has it at 80).
    monkeypatch.setenv("COLUMNS", "160")
    _agent(live_url, agent_name)
    made = cli("schedule", "add", agent_name, "Morning summary", "--cron", "0 9 * * 1-5",
               "--tz", "Europe/Berlin", "--session", "daily", "--json")
    assert made.exit_code == 0, made.output
    sched = json.loads(made.stdout)
    sid = sched["id"]
    listed = cli("schedule", "list", agent_name)
    assert listed.exit_code == 0 and sid in listed.stdout
    assert "cron 0 9 * * 1-5 (Europe/Berlin)" in listed.stdout
    assert "Morning summary" in listed.stdout
    nxt = cli("schedule", "next", sid, "-n", "3", "--json")
    times = [datetime.fromisoformat(t).astimezone(ZoneInfo("Europe/Berlin"))
             for t in json.loads(nxt.stdout)]
    assert len(times) == 3 and all((t.hour, t.minute) == (9, 0) for t in times)
    paused = cli("schedule", "pause", sid)
    assert paused.exit_code == 0 and f"paused {sid}" in paused.stdout
    shown = cli("schedule", "show", sid)
    assert "paused: paused by request" in shown.stdout
    assert "no more fire times" in cli("schedule", "next", sid).stdout
    resumed = cli("schedule", "resume", sid)
    assert resumed.exit_code == 0 and "next 20" in resumed.stdout
    assert cli("schedule", "delete", sid).exit_code == 0
    gone = cli("schedule", "show", sid)
    assert "not found" in one_error_line(gone)


def test_bad_input_is_one_clear_line(cli: Invoke, live_url: str,  # noqa: F811
                                     agent_name: str) -> None:  # noqa: F811
    _agent(live_url, agent_name)
    bad_cron = cli("schedule", "add", agent_name, "x", "--cron", "0 25 * * *")
    assert "cron" in one_error_line(bad_cron)
    bad_tz = cli("schedule", "add", agent_name, "x", "--every", "60", "--tz", "Nowhere/X")
    assert "time zone" in one_error_line(bad_tz)
    both = cli("schedule", "add", agent_name, "x", "--every", "60", "--cron", "* * * * *")
    assert "exactly one" in one_error_line(both, 2)  # a usage error: exit 2
    nobody = cli("schedule", "add", "no-such-agent", "x", "--every", "60")
    assert "not found" in one_error_line(nobody)
    assert "no schedules" in cli("schedule", "list", agent_name).stdout


def test_a_schedule_fires_in_the_daemon(cli: Invoke, live_url: str,  # noqa: F811
                                        agent_name: str) -> None:  # noqa: F811
    _agent(live_url, agent_name)
    made = cli("schedule", "add", agent_name, "tick", "--every", "1", "--session", "t",
               "--overlap", "enqueue", "--json")
    sid = json.loads(made.stdout)["id"]

    def two_fires() -> list[dict[str, str]]:
        result = cli("schedule", "fires", sid, "--json")
        fires: list[dict[str, str]] = json.loads(result.stdout)
        return fires if len(fires) >= 2 else []

    fires = wait_until(two_fires, what="two fires")
    assert all(f["status"] == "fired" and f["run_id"] for f in fires)
    assert cli("schedule", "pause", sid).exit_code == 0
    text = cli("schedule", "fires", sid)
    assert f"run {fires[0]['run_id']}" in text.stdout
    with Client(live_url) as client:
        events = client.events(agent_name, "t")
        users = [e for e in events if e["kind"] == "message.user"]
        assert users and all(e["data"]["schedule_id"] == sid for e in users)
