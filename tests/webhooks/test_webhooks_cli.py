"""`agentd webhook ...` and the Python client against a live daemon (a real app on a
socket) that allows 127.0.0.1, with a real receiver."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.cli.conftest import (  # noqa: F401 (fixtures)
    Invoke,
    agent_name,
    cli,
    live_home,
    one_error_line,
    serve,
)
from tests.conftest import wait_until
from tests.webhooks._receiver import Receiver

from agentd.client import APIError, Client
from agentd.config import WebhooksConfig


@pytest.fixture(scope="module")
def live_url(live_home: Path) -> Iterator[str]:  # noqa: F811
    config = WebhooksConfig(allow_hosts=["127.0.0.1"], allow_http=["127.0.0.1"],
                            backoff_s=0.05, backoff_max_s=0.2, poll_s=0.2)
    with serve(live_home, webhooks=config) as url:
        yield url


@pytest.fixture(autouse=True)
def wide_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "250")


def test_add_list_ping_deliveries_replay_delete(cli: Invoke, live_url: str,  # noqa: F811
                                                agent_name: str) -> None:  # noqa: F811
    receiver = Receiver()
    try:
        with Client(live_url) as client:
            client.create_agent(agent_name, model="scripted")
        made = cli("webhook", "add", agent_name, receiver.url, "-k", "run.completed",
                   "-d", "ops", "--json")
        assert made.exit_code == 0, made.output
        hook = json.loads(made.stdout)
        receiver.secret = hook["secret"]
        listed = cli("webhook", "list", agent_name)
        assert listed.exit_code == 0 and hook["id"] in listed.stdout
        assert "run.completed" in listed.stdout and "enabled" in listed.stdout
        pinged = cli("webhook", "ping", hook["id"], "--json")
        assert pinged.exit_code == 0, pinged.output
        ping_id = json.loads(pinged.stdout)["id"]
        wait_until(lambda: ping_id in receiver.ids(), what="the ping delivered")
        assert receiver.received[0].verified

        with Client(live_url) as client:
            client.send(agent_name, "k", "hello")
            wait_until(lambda: len(receiver.received) == 2, what="the run's delivery")

            def delivered() -> set[str]:
                # The receiver has the POST before the daemon records its answer.
                page = client.webhook_deliveries(hook["id"], status="delivered")
                return {d["kind"] for d in page["deliveries"]}

            assert wait_until(lambda: delivered() == {"run.completed", "webhook.ping"},
                              what=lambda: f"both deliveries recorded (have {delivered()})")
        shown = cli("webhook", "deliveries", hook["id"])
        assert shown.exit_code == 0 and "run.completed" in shown.stdout
        assert "delivered" in shown.stdout
        replayed = cli("webhook", "replay", ping_id)
        assert replayed.exit_code == 0, replayed.output
        wait_until(lambda: receiver.ids().count(ping_id) == 2, what="the replay")
        rotated = cli("webhook", "rotate", hook["id"], "--json")
        assert json.loads(rotated.stdout)["secret"] != hook["secret"]
        assert cli("webhook", "disable", hook["id"]).exit_code == 0
        with Client(live_url) as client:
            assert client.get_webhook(hook["id"])["enabled"] is False
        assert cli("webhook", "delete", hook["id"]).exit_code == 0
        assert "no webhooks" in cli("webhook", "list", agent_name).stdout
    finally:
        receiver.close()


def test_a_refused_url_is_one_clear_error_line(cli: Invoke, live_url: str,  # noqa: F811
                                               agent_name: str) -> None:  # noqa: F811
    with Client(live_url) as client:
        client.create_agent(agent_name, model="scripted")
        with pytest.raises(APIError) as caught:
            client.create_webhook(agent_name, "https://evil.example/hook")
        assert caught.value.status == 422
    result = cli("webhook", "add", agent_name, "https://evil.example/hook")
    line = one_error_line(result)
    assert "not a host the operator allows" in line
    assert "no webhooks" in cli("webhook", "list", agent_name).stdout
