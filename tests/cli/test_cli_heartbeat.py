"""`agentd heartbeat show|set` and the client's heartbeat methods against a live daemon."""

from __future__ import annotations

import json

import pytest
from tests.cli.conftest import Invoke, one_error_line

from agentd.client import APIError, Client


def test_set_and_show_the_heartbeat(cli: Invoke, agent_name: str) -> None:
    assert cli("create", agent_name).exit_code == 0
    shown = cli("heartbeat", "show", agent_name)
    assert shown.exit_code == 0, shown.output
    assert f"heartbeat of {agent_name}: off, every 1800 s" in shown.stdout

    made = cli("heartbeat", "set", agent_name, "--enable", "--every", "30m",
               "--active", "22:00-06:00", "--tz", "Europe/Berlin", "--file", "notes/HB.md",
               "--ok-token", "ALL_GOOD")
    assert made.exit_code == 0, made.output
    assert "on, every 1800 s" in made.stdout
    assert "active: 22:00-06:00 Europe/Berlin" in made.stdout
    assert "file 'notes/HB.md'; ok token: ALL_GOOD" in made.stdout
    assert "next beat:" in made.stdout

    # Only what is given changes; the time zone stays when the window moves.
    moved = json.loads(cli("heartbeat", "set", agent_name, "--active", "08:00-12:00",
                           "--json").stdout)
    assert moved["settings"]["active_hours"] == {"start": "08:00", "end": "12:00",
                                                 "timezone": "Europe/Berlin"}
    assert moved["settings"]["ok_token"] == "ALL_GOOD"
    always = json.loads(cli("heartbeat", "set", agent_name, "--active", "always",
                            "--document", "Look around.", "--json").stdout)
    assert always["settings"]["active_hours"] is None
    assert always["settings"]["document"] == "Look around."
    off = json.loads(cli("heartbeat", "set", agent_name, "--disable", "--json").stdout)
    assert off["settings"]["enabled"] is False and off["state"]["next_beat_at"] is None


# Exit 2 for a usage error the CLI sees itself, as click's own; 1 for what the daemon
# refuses.
@pytest.mark.parametrize(("args", "message", "code"), [
    (("--every", "5s"), "every_s: Input should be greater than or equal to 60", 1),
    (("--every", "soon"), "not a duration", 2),
    (("--active", "9-5"), "not a window", 2),
    (("--tz", "Mars/Base"), "unknown time zone", 1),
    (("--file", "../../etc/passwd"), "relative to the workspace", 1),
    (("--file", "a", "--document", "b"), "not both", 2),
    ((), "nothing to change", 2),
])
def test_bad_input_is_one_clear_line(cli: Invoke, agent_name: str,
                                     args: tuple[str, ...], message: str, code: int) -> None:
    assert cli("create", agent_name).exit_code == 0
    line = one_error_line(cli("heartbeat", "set", agent_name, *args), code)
    assert message in line, line
    assert json.loads(cli("heartbeat", "show", agent_name, "--json").stdout)[
        "settings"]["enabled"] is False


def test_unknown_agent(cli: Invoke) -> None:
    assert "agent_not_found" in one_error_line(cli("heartbeat", "show", "nobody-here"))


def test_client_methods(cli: Invoke, live_url: str, agent_name: str) -> None:
    # (cli: the daemon's home in the environment, so the client finds its token)
    with Client(live_url) as client:
        client.create_agent(agent_name)
        view = client.set_heartbeat(agent_name, enabled=True, every_s=3600,
                                    document="Check the inbox.")
        assert view["settings"]["every_s"] == 3600 and view["valid"] is True
        assert client.get_heartbeat(agent_name)["settings"]["document"] == "Check the inbox."
        with pytest.raises(APIError) as caught:
            client.set_heartbeat(agent_name, every_s=1)
        assert caught.value.status == 422 and caught.value.code == "invalid_input"
        with pytest.raises(TypeError, match="unknown heartbeat setting"):
            client.set_heartbeat(agent_name, every=3)
