"""The Telegram channel across SIGKILLs of the real daemon: an update acknowledged and
then the daemon killed before the reply was sent is answered exactly once after the
restart; a reply killed half-sent repeats at most the one part that was in flight."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.conftest import wait_until
from tests.daemons import Daemon

from agentd.testing import StubBotAPI

pytestmark = pytest.mark.e2e

TOKEN = "777:kill-test-token"
SECRET = "kill-test-secret"
WAIT_S = 60.0


@pytest.fixture
def bot() -> Iterator[StubBotAPI]:
    with StubBotAPI(token=TOKEN) as stub:
        yield stub


@pytest.fixture
def daemons(tmp_path: Path, bot: StubBotAPI) -> Iterator[list[Daemon]]:
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    (home / "agentd.toml").write_text(
        "[channels.telegram]\n"
        f'api_base = "{bot.url}"\n'
        "retry_base_s = 0.1\nretry_max_s = 0.5\ntimeout_s = 3.0\n")
    started: list[Daemon] = []
    try:
        yield started
    finally:
        for daemon in started:
            daemon.cleanup()


def start(daemons: list[Daemon], tmp_path: Path) -> Daemon:
    daemon = Daemon(tmp_path / "home", tmp_path / f"agentd-{len(daemons)}.log", args=(),
                    env={"AGENTD_DEMO_AGENT": "false", "TELEGRAM_BOT_TOKEN": TOKEN,
                         "TELEGRAM_SECRET": SECRET})
    daemons.append(daemon)
    return daemon.start()


def webhook(daemon: Daemon, update_id: int, text: str) -> httpx.Response:
    return httpx.post(f"{daemon.url}/v1/channels/telegram/bot/webhook", timeout=WAIT_S,
                      headers={"X-Telegram-Bot-Api-Secret-Token": SECRET},
                      json={"update_id": update_id, "message": {
                          "message_id": update_id, "date": 1,
                          "chat": {"id": 42, "type": "private"}, "text": text}})


def runs_of(daemon: Daemon, limit: int = 50) -> list[dict[str, Any]]:
    with daemon.client() as client:
        response = client.get("/v1/runs", params={"agent": "bot", "limit": limit})
        assert response.status_code == 200, response.text
        runs: list[dict[str, Any]] = response.json()["runs"]
        return runs


PARTS = ["part one " + "a" * 3000, "part two " + "b" * 3000, "part three " + "c" * 3000]


def test_a_reply_survives_sigkill_and_is_sent_once(
        daemons: list[Daemon], bot: StubBotAPI, tmp_path: Path) -> None:
    daemon = start(daemons, tmp_path)
    with daemon.client() as client:
        made = client.post("/v1/agents", json={"name": "bot", "settings": {
            "channels": {"telegram": {"bot_token_env": "TELEGRAM_BOT_TOKEN",
                                      "secret_token_env": "TELEGRAM_SECRET"}},
            "script": [{"text": "the slow reply", "delay_ms": 2500},
                       {"text": "\n\n".join(PARTS)}]}})
        assert made.status_code == 201, made.text

    # 1. Acknowledged, then killed before the reply could be sent (the model takes
    # 2.5 s); the next daemon answers it, once.
    acked = webhook(daemon, 1, "hello")
    assert acked.status_code == 200 and acked.json()["duplicate"] is False
    daemon.signal_and_wait(signal.SIGKILL)
    assert bot.texts(42) == []
    daemon = start(daemons, tmp_path)
    wait_until(lambda: bot.texts(42) == ["the slow reply"],
               what=lambda: f"the reply, once: {bot.texts(42)}\n{daemon.log()}")
    # Telegram retries an update it did not see answered: a replay does nothing.
    again = webhook(daemon, 1, "hello")
    assert again.status_code == 200 and again.json()["duplicate"] is True

    # 2. A reply in three parts, killed while Telegram holds the answer to the second
    # (which it did take): after the restart the second is sent again, once, and the
    # third follows; the first is not repeated.
    # Faults apply in order: the first part passes (held 0 s), the second is held.
    bot.fail("sendMessage", "slow", delay_s=0.0)
    bot.fail("sendMessage", "slow", delay_s=30.0)
    acked = webhook(daemon, 2, "long one please")
    assert acked.status_code == 200
    wait_until(lambda: len(bot.texts(42)) == 3,
               what=lambda: f"two parts taken by Telegram: {bot.texts(42)}")
    daemon.signal_and_wait(signal.SIGKILL)
    daemon = start(daemons, tmp_path)
    wait_until(lambda: len(bot.texts(42)) >= 5,
               what=lambda: f"the rest of the reply: {bot.texts(42)}\n{daemon.log()}")
    assert bot.texts(42) == ["the slow reply", PARTS[0], PARTS[1], PARTS[1], PARTS[2]]

    # One run per update, whatever the kills did.
    runs = runs_of(daemon)
    assert len(runs) == 2, runs
    assert {r["status"] for r in runs} == {"completed"}


def test_kills_while_updates_flow_lose_nothing_and_run_each_once(
        daemons: list[Daemon], bot: StubBotAPI, tmp_path: Path) -> None:
    """Three rounds: a burst of updates from three chats, then SIGKILL at a seeded
    random moment while they are handed over and answered. Afterwards every
    acknowledged update ran exactly once, and each chat got every reply in order;
    a reply is repeated at most once per kill (the one in flight)."""
    import random

    rng = random.Random(15)
    daemon = start(daemons, tmp_path)
    with daemon.client() as client:
        made = client.post("/v1/agents", json={"name": "bot", "settings": {
            "channels": {"telegram": {"bot_token_env": "TELEGRAM_BOT_TOKEN",
                                      "secret_token_env": "TELEGRAM_SECRET",
                                      "typing": False}}}})
        assert made.status_code == 201, made.text
    # Telegram answers each message 0.5 s after taking it (a chat's replies go one at a
    # time: 4 s for a round's eight, longer than posting the round takes even on a
    # loaded machine): kills land mid-flow, some while a message is taken but not yet
    # answered (then sent again, once).
    bot.fail("sendMessage", "slow", delay_s=0.5, times=10_000)
    chats = (11, 12, 13)
    expected: dict[int, list[str]] = {chat: [] for chat in chats}
    uid, kills = 0, 3
    behind: list[int] = []  # replies not yet sent when each kill landed
    for _ in range(kills):
        for _ in range(8):
            for chat in chats:
                uid += 1
                answer = httpx.post(
                    f"{daemon.url}/v1/channels/telegram/bot/webhook", timeout=WAIT_S,
                    headers={"X-Telegram-Bot-Api-Secret-Token": SECRET},
                    json={"update_id": uid, "message": {
                        "message_id": uid, "date": 1, "text": f"u{uid}",
                        "chat": {"id": chat, "type": "private"}}})
                assert answer.status_code == 200, answer.text
                expected[chat].append(f"echo: u{uid}")
        time.sleep(rng.uniform(0.0, 0.4))
        daemon.signal_and_wait(signal.SIGKILL)
        behind.append(uid - sum(len(set(bot.texts(chat))) for chat in chats))
        daemon = start(daemons, tmp_path)

    def delivered() -> bool:
        return all(_deduped(bot.texts(chat)) == expected[chat] for chat in chats)

    wait_until(delivered, what=lambda: f"every reply: {[bot.texts(c) for c in chats]}\n"
                                       f"{daemon.log()}")
    # The kills cut work under way (else this checked nothing).
    assert max(behind) > 0, behind
    for chat in chats:
        got = bot.texts(chat)
        assert len(got) - len(expected[chat]) <= kills, (chat, got)
    runs = runs_of(daemon, limit=200)
    assert len(runs) == uid, len(runs)
    assert sorted(r["input"] for r in runs) == sorted(f"u{i}" for i in range(1, uid + 1))
    assert {r["status"] for r in runs} == {"completed"}
    with daemon.client() as client:
        state = client.get("/v1/agents/bot/channels/telegram").json()
    assert state["inbox"]["done"] == uid and state["inbox"]["pending"] == 0, state


def _deduped(texts: list[str]) -> list[str]:
    """The texts with a repeat right after itself dropped (a part resent after a kill)."""
    return [t for i, t in enumerate(texts) if i == 0 or texts[i - 1] != t]
