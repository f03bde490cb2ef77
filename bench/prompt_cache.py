"""Prompt caching over a long session: the share of input tokens the providers' caches
serve, and what it saves, as agentd's requests are judged by each provider's rules.

    .venv/bin/python bench/prompt_cache.py                      # 100 turns, both providers
    .venv/bin/python bench/prompt_cache.py --turns 30 --providers anthropic

A real daemon (``python -m agentd serve``, SQLite, fresh AGENTD_HOME) talks to
:class:`agentd.testing.StubLLMServer`, run in this process, through the official SDKs:
``openai:gpt-4.1-mini`` (Chat Completions) and ``anthropic:claude-sonnet-4-5``
(Messages). The stub keeps each provider's prompt cache as its documentation states
it (OpenAI: automatic, exact prefix, 1,024 tokens and more in 128-token steps, per
``prompt_cache_key``; Anthropic: only at ``cache_control`` breakpoints, 20-block
lookback, 1,024-token minimum for Sonnet) and reports usage as the provider does, so
the cached share below is what these requests would get, not what a stub decided to
give. One agent per provider, with instructions of about 2,700 tokens (a support
agent's handbook) and two tools (``calculator``, ``read_file``); compaction and
auto-recall off. One session of ``--turns`` turns over the native API (``wait:
true``); every fifth turn the model first calls ``calculator`` and answers after its
result (two model calls), the others are answered at once (the stub's echo).

Per turn the run's ``usage`` (input, cached, cache-write tokens, ``cost_usd``) is read
from the wait answer. Prints one JSON line, per provider: the cached share of input
tokens over all turns and over the turns after the first 3, the lowest per-turn share
after them, the cache-write tokens, the cost as recorded (cached tokens at the cached
price, writes at the write price) against the same tokens priced with no cache at
all (catalog list prices), the saving, and what agentd sent for caching (requests with
a ``prompt_cache_key``, breakpoints per request). ``recorded_matches_stub`` checks the
daemon's usage against the stub's own count of the same calls. Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import platform
import secrets
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import orjson

from _load import LocalDaemon, info
from agentd.llm.catalog import Catalog
from agentd.llm.messages import Usage
from agentd.testing import StubLLMServer

TOKEN = "cache-bench-" + secrets.token_hex(8)
MODELS = {"openai": "openai:gpt-4.1-mini", "anthropic": "anthropic:claude-sonnet-4-5"}
TOOLS = ["calculator", "read_file"]

_SECTIONS = {
    "Role": "You are the support agent of Northwind Outfitters, an online shop for hiking "
            "and camping gear. You answer customers' questions about orders, deliveries, "
            "returns, repairs, sizes and products, in the customer's language, briefly and "
            "exactly. You never invent an order number, a date, a price or a policy.",
    "Orders": "An order number has the form NW- followed by eight digits. Orders placed "
              "before 14:00 on a working day leave the warehouse the same day; later ones "
              "the next working day. A customer may change the address or cancel an order "
              "until it leaves the warehouse; after that, only a return is possible.",
    "Deliveries": "Standard delivery takes two to four working days in the country and "
                  "five to nine abroad; express takes one working day in the country. "
                  "Parcels above 30 kg travel by freight and are booked by phone. A parcel "
                  "that has not moved for five working days is reported to the carrier.",
    "Returns": "Unused items may be returned within 60 days, in their packaging, with the "
               "return form. The refund is made to the original payment method within ten "
               "working days of the parcel's arrival. Worn shoes, opened gas canisters and "
               "cut rope cannot be returned. The return label is free within the country.",
    "Repairs": "Tents, backpacks and jackets are repaired in our workshop for five years "
               "after purchase: seams, zips and buckles free of charge, fabric at cost. A "
               "repair takes about three weeks; the customer is told the price before any "
               "paid work begins and may refuse it.",
    "Sizes": "Shoes run half a size small; advise the next half size up for hiking boots "
             "worn with thick socks. Jackets follow European sizes; the size chart gives "
             "chest and sleeve lengths in centimetres. Sleeping bags are sized by the "
             "sleeper's height plus 20 cm.",
    "Tone": "Be friendly and plain. Use the customer's name when they give it. Do not "
            "apologise more than once in an answer. Do not use marketing language. When "
            "you do not know, say so and say who does.",
    "Tools": "Use the calculator for every sum of prices, weights or dates, never mental "
             "arithmetic. Use read_file to look up a policy in the handbook folder when "
             "the customer asks about a case these instructions do not cover.",
    "Escalation": "Hand the conversation to a person when the customer asks for one, when "
                  "an order is above 2,000 euros, when a product may have hurt someone, or "
                  "when the customer has written about the same problem three times.",
}


def instructions() -> str:
    """About 2,700 tokens of a support agent's instructions: each section with worked
    examples, as such prompts grow in practice."""
    parts = []
    for title, text in _SECTIONS.items():
        examples = "\n".join(
            f"- Example {n}: a customer asks about {title.lower()} (case {n}); answer from "
            f"the rules above, quote the rule you used, and offer the next step." for n in
            range(1, 8))
        parts.append(f"## {title}\n\n{text}\n\n{examples}")
    return "# Northwind Outfitters support\n\n" + "\n\n".join(parts)


def question(i: int) -> str:
    return (f"Question {i}: my order NW-{20240000 + i} has not arrived yet and I would "
            f"like to know where it is and whether I can still change the address.")


def send(api: httpx.Client, agent: str, i: int, stub: StubLLMServer) -> dict[str, Any]:
    content = question(i)
    if i % 5 == 4:  # a turn with a tool call: the model calls calculator, then answers
        stub.enqueue(tool_calls=[{"name": "calculator", "arguments": {"expr": f"{i}*19.9"}}])
        stub.enqueue(text=f"stub: {content}")
    reply = api.post(f"/v1/agents/{agent}/sessions/user:1/messages",
                     json={"content": content, "wait": True}, timeout=120)
    reply.raise_for_status()
    run: dict[str, Any] = reply.json()
    run = run.get("run") or run
    if run.get("status") != "completed" or run.get("output") != f"stub: {content}":
        raise RuntimeError(f"turn {i}: unexpected run {str(run)[:400]}")
    return run


def share(cached: int, total: int) -> float:
    return round(cached / total, 4) if total else 0.0


def session(api: httpx.Client, stub: StubLLMServer, provider: str, turns: int
            ) -> dict[str, Any]:
    agent = f"c-{provider}"
    stub.clear()
    usages: list[Usage] = []
    recorded_cost = 0.0
    for i in range(turns):
        run = send(api, agent, i, stub)
        usages.append(Usage.of(run["usage"]))
        recorded_cost += float(run["usage"].get("cost_usd") or 0.0)
        if i in (0, 2) or (i + 1) % 25 == 0:
            u = usages[-1]
            info(f"{provider} turn {i + 1}: {u.input_tokens} in, {u.cached_tokens} cached,"
                 f" {u.cache_write_tokens} written")
    catalog = Catalog.load()
    model = catalog.get(MODELS[provider])
    assert model is not None
    total = sum(usages, Usage())
    later = sum(usages[3:], Usage())
    uncached = sum(model.cost(Usage(input_tokens=u.input_tokens, output_tokens=u.output_tokens))
                   for u in usages)
    stats = stub.cache_stats
    results = stub.cache_results
    return {
        "model": MODELS[provider],
        "turns": turns,
        "model_calls": len(results),
        "input_tokens": total.input_tokens,
        "cached_tokens": total.cached_tokens,
        "cache_write_tokens": total.cache_write_tokens,
        "cached_share": share(total.cached_tokens, total.input_tokens),
        "cached_share_after_3": share(later.cached_tokens, later.input_tokens),
        "min_turn_share_after_3": min((share(u.cached_tokens, u.input_tokens)
                                       for u in usages[3:]), default=0.0),
        "first_turn_input_tokens": usages[0].input_tokens if usages else 0,
        "last_turn_input_tokens": usages[-1].input_tokens if usages else 0,
        "cost_usd": round(recorded_cost, 6),
        "cost_usd_without_cache": round(uncached, 6),
        "saved_usd": round(uncached - recorded_cost, 6),
        "saved_share": share(round((uncached - recorded_cost) * 1e6), round(uncached * 1e6)),
        "sent": {
            "prompt_cache_key": sum(1 for r in results if r.prompt_cache_key is not None),
            "breakpoints_per_request": round(
                sum(r.breakpoints for r in results) / len(results), 2) if results else 0,
        },
        "recorded_matches_stub": (stats.input_tokens, stats.cached_tokens,
                                  stats.cache_write_tokens) == (
            total.input_tokens, total.cached_tokens, total.cache_write_tokens),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--turns", type=int, default=100, help="turns of the session")
    parser.add_argument("--providers", default="openai,anthropic")
    args = parser.parse_args()
    providers = args.providers.split(",")
    figures: dict[str, Any] = {}
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="agentd-cache-") as tmp, StubLLMServer() as stub:
        env = {"OPENAI_API_KEY": "sk-stub", "ANTHROPIC_API_KEY": "stub-key"}
        with LocalDaemon(Path(tmp), TOKEN, env) as daemon, httpx.Client(
                base_url=daemon.base, headers={"Authorization": f"Bearer {TOKEN}"},
                timeout=60) as api:
            prompt = instructions()
            for provider in providers:
                base = stub.base_url if provider == "openai" else stub.root_url
                created = api.post("/v1/agents", json={
                    "name": f"c-{provider}", "model": MODELS[provider],
                    "instructions": prompt, "tools": TOOLS,
                    "settings": {"base_url": base,
                                 "memory": {"compaction": {"auto": False},
                                            "auto_recall": False}}})
                if created.status_code != 201:
                    raise RuntimeError(f"creating the agent: {created.text[:300]}")
                figures[provider] = session(api, stub, provider, args.turns)
    result: dict[str, Any] = {
        "bench": "prompt_cache", "turns": args.turns,
        "instructions_chars": len(instructions()), "tools": TOOLS,
        "providers": figures,
        "wall_s": round(time.monotonic() - t0, 1),
        "machine": {"python": platform.python_version()},
    }
    print(orjson.dumps(result).decode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
