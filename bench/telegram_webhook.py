"""How fast the Telegram webhook acknowledges an update, and how long until replies.

Starts agentd (real uvicorn on a loopback port, SQLite in a temp home) with the
Telegram channel pointed at ``agentd.testing.StubBotAPI``, then posts ``--updates``
updates over HTTP from ``--chats`` chats, ``--concurrency`` at a time, timing each
acknowledgement (the 200), and waits until every chat got its replies (the scripted
model echoes). Prints one JSON line.

    python bench/telegram_webhook.py --updates 500 --chats 20 --concurrency 8
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

from agentd.config import Settings
from agentd.security.tokens import read_token
from agentd.testing import StubBotAPI
from agentd.testing.live import LiveServer

TOKEN = "1:bench-token"
SECRET = "bench-secret"


def main(updates: int, chats: int, concurrency: int) -> dict[str, Any]:
    os.environ["TELEGRAM_BENCH_TOKEN"] = TOKEN
    os.environ["TELEGRAM_BENCH_SECRET"] = SECRET
    with tempfile.TemporaryDirectory() as tmp, StubBotAPI(token=TOKEN) as bot:
        settings = Settings(home=Path(tmp) / "home", demo_agent=False,
                            channels={"telegram": {"api_base": bot.url}})
        with LiveServer(settings) as server:
            auth = {"Authorization": f"Bearer {read_token(settings.home)}"}
            made = httpx.post(f"{server.url}/v1/agents", headers=auth, json={
                "name": "bot", "settings": {"channels": {"telegram": {
                    "bot_token_env": "TELEGRAM_BENCH_TOKEN",
                    "secret_token_env": "TELEGRAM_BENCH_SECRET", "typing": False}}}})
            made.raise_for_status()
            url = f"{server.url}/v1/channels/telegram/bot/webhook"
            headers = {"X-Telegram-Bot-Api-Secret-Token": SECRET}

            def post(update_id: int, client: httpx.Client) -> float:
                body = {"update_id": update_id, "message": {
                    "message_id": update_id, "date": 1, "text": f"m{update_id}",
                    "chat": {"id": 1000 + update_id % chats, "type": "private"}}}
                started = time.perf_counter()
                response = client.post(url, json=body, headers=headers)
                elapsed = (time.perf_counter() - started) * 1000
                assert response.status_code == 200, response.text
                return elapsed

            clients = [httpx.Client(timeout=60) for _ in range(concurrency)]
            started = time.perf_counter()
            with ThreadPoolExecutor(concurrency) as pool:
                acks = list(pool.map(lambda i: post(i, clients[i % concurrency]),
                                     range(1, updates + 1)))
            acked_s = time.perf_counter() - started
            deadline = time.monotonic() + 600
            while len(bot.calls("sendMessage")) < updates and time.monotonic() < deadline:
                time.sleep(0.05)
            replied_s = time.perf_counter() - started
            for client in clients:
                client.close()
            acks.sort()
            return {"bench": "telegram_webhook", "updates": updates, "chats": chats,
                    "concurrency": concurrency,
                    "ack_ms_p50": round(statistics.median(acks), 2),
                    "ack_ms_p95": round(acks[int(len(acks) * 0.95) - 1], 2),
                    "ack_ms_max": round(acks[-1], 2),
                    "acked_per_s": round(updates / acked_s, 1),
                    "replies": len(bot.calls("sendMessage")),
                    "all_replied_s": round(replied_s, 2)}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--updates", type=int, default=500)
    parser.add_argument("--chats", type=int, default=20)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    print(json.dumps(main(args.updates, args.chats, args.concurrency)))
