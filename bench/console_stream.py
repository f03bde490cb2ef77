"""The web console's session page: how long a streamed token takes from the model to
the page, and how fast a 10,000-event session opens.

1. Token latency. A real daemon (``python -m agentd serve``, SQLite) answers with the
   ``openai-compatible`` provider pointed at :class:`agentd.testing.StubLLMServer`,
   which streams a reply of N numbered words (``t0001 t0002 ...``) one frame every
   ``--interval-ms`` over the real OpenAI wire format and records the wall-clock time
   each frame was handed to its server (``stub.emitted``). Headless Chromium (Debian's)
   has the session page open; a MutationObserver on the chat notes the wall-clock time
   (``performance.timeOrigin + performance.now()``) at which each word first appears in
   the streaming bubble's text. A token's latency is appearance minus emission: the
   provider's SDK, the daemon's bus, its SSE stream, the browser's fetch stream, the
   page's parsing and the DOM update. ``--runs`` replies, p50 / p95 / max over all
   tokens. Both clocks are this machine's wall clock.
2. A long session: one run of the scripted model calling the calculator ``--calls``
   times a step for ``--steps`` steps (about 10,000 events, written by the daemon
   itself). A fresh browser context (token set before the page loads) opens the
   session page ``--loads`` times; ``first_rows_ms`` is navigation start to the first
   timeline rows in the DOM, ``tail_ms`` to the session's last event shown, medians;
   with the DOM's element count once loaded (the page keeps it bounded). The same for a
   session of a few events (``short_first_rows_ms``) says what loading the page costs
   whatever the session's length.

Prints one JSON line on stdout; progress goes to stderr.

    .venv/bin/python bench/console_stream.py [--tokens 200] [--runs 3] [--interval-ms 40]
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import orjson

from _load import LocalDaemon, info, percentile
from agentd.testing import StubLLMServer

TOKEN = "console-bench-token-0123456789"
CHROMIUM = os.environ.get("AGENTD_BENCH_CHROMIUM", "/usr/bin/chromium")
WORD = re.compile(rb'"content":"(t\d{4}) ?"')
#: The token in the tab's session storage before the page loads: the page opens signed
#: in (sign-in itself is not what is measured).
SIGNED_IN = f"sessionStorage.setItem('agentd.token', {orjson.dumps(TOKEN).decode()});"

#: Installed before the page's own scripts: records when each word first shows in the
#: streaming bubble, and when the timeline's first rows and a given seq appear.
OBSERVER = """
(() => {
  window.__seen = {};
  window.__rows = null;
  window.__tail = null;
  const now = () => performance.timeOrigin + performance.now();
  const look = () => {
    // The streaming bubble, and the newest reply: a last token that arrives with the
    // committed message (same read) shows first in the reply itself.
    const texts = [document.querySelector('#pane-chat .streaming .msg-text'),
                   [...document.querySelectorAll('#pane-chat .msg-assistant .msg-text')].pop()];
    for (const t of texts) {
      if (!t) continue;
      for (const w of t.textContent.match(/t\\d{4}/g) || []) {
        if (!(w in window.__seen)) window.__seen[w] = now();
      }
    }
    if (window.__rows === null && document.querySelector('#pane-timeline .step')) {
      window.__rows = performance.now();
    }
    if (window.__tail === null && window.__want &&
        document.querySelector(`#pane-timeline .step[data-seq="${window.__want}"]`)) {
      window.__tail = performance.now();
    }
  };
  new MutationObserver(look).observe(document,
    {subtree: true, childList: true, characterData: true});
})();
"""


def _session_url(base: str, agent: str, key: str) -> str:
    return f"{base}/ui/#/agents/{quote(agent, safe='')}/sessions/{quote(key, safe='')}"


def token_latency(api: httpx.Client, daemon: LocalDaemon, stub: StubLLMServer, browser: Any,
                  *, tokens: int, runs: int, interval_s: float) -> dict[str, Any]:
    created = api.post("/v1/agents", json={"name": "streamer", "model": "openai-compatible:stub",
                                           "settings": {"base_url": stub.base_url}})
    assert created.status_code == 201, created.text
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    context.add_init_script(SIGNED_IN)
    context.add_init_script(OBSERVER)
    page = context.new_page()
    page.goto(_session_url(daemon.base, "streamer", "bench"))
    page.wait_for_selector("#composer", timeout=60_000)
    latencies: list[float] = []
    missing = 0
    for run in range(runs):
        stub.clear()
        words = [f"t{run * tokens + i + 1:04d}" for i in range(tokens)]
        stub.enqueue(" ".join(words), interval_s=interval_s)
        page.evaluate("window.__seen = {}")
        sent = api.post("/v1/agents/streamer/sessions/bench/messages",
                        json={"content": f"run {run}", "wait": True}, timeout=600)
        assert sent.json()["status"] == "completed", sent.text
        page.wait_for_function(
            f"() => [...document.querySelectorAll('#pane-chat .msg-assistant:not(.streaming)')]"
            f".some((m) => m.textContent.includes('{words[-1]}'))", timeout=60_000)
        seen: dict[str, float] = page.evaluate("window.__seen")
        emitted = {m.group(1).decode(): at for at, frame in stub.emitted
                   if (m := WORD.search(frame))}
        for word in words:
            if word in seen and word in emitted:
                latencies.append((seen[word] / 1000.0 - emitted[word]) * 1000.0)
            else:
                missing += 1
        info(f"run {run + 1}/{runs}: {len(set(words) & set(seen))} of {tokens} tokens seen")
    context.close()
    latencies.sort()
    return {
        "tokens": len(latencies),
        "tokens_not_seen": missing,
        "interval_ms": interval_s * 1000,
        "token_to_dom_ms_p50": _r(percentile(latencies, 50)),
        "token_to_dom_ms_p95": _r(percentile(latencies, 95)),
        "token_to_dom_ms_max": _r(latencies[-1] if latencies else None),
        "token_to_dom_ms_min": _r(latencies[0] if latencies else None),
    }


def long_session(api: httpx.Client, daemon: LocalDaemon, browser: Any, *, steps: int, calls: int,
                 loads: int) -> dict[str, Any]:
    turn = {"tool_calls": [{"name": "calculator", "arguments": {"expression": f"{i}+1"}}
                           for i in range(calls)]}
    created = api.post("/v1/agents", json={
        "name": "big", "model": "scripted", "tools": ["calculator"],
        "settings": {"script": [turn] * steps + [{"text": "done"}], "max_steps": steps + 1}})
    assert created.status_code == 201, created.text
    t0 = time.monotonic()
    run = api.post("/v1/agents/big/sessions/long/messages", json={"content": "go"}, timeout=900)
    assert run.json()["status"] == "completed", run.text
    last = api.get("/v1/agents/big/sessions/long").json()["last_seq"]
    info(f"long session: {last} events in {time.monotonic() - t0:.1f}s")
    # The same page for a session of a few events: what loading the page costs anyway.
    api.post("/v1/agents", json={"name": "short", "model": "scripted"})
    api.post("/v1/agents/short/sessions/s/messages", json={"content": "hi"})
    short_last = api.get("/v1/agents/short/sessions/s").json()["last_seq"]
    measured: dict[str, list[float]] = {"rows": [], "tails": [], "short": []}
    elements = 0
    for _ in range(loads):
        for agent, key, want, into in (("big", "long", last, "rows"),
                                       ("short", "s", short_last, "short")):
            context = browser.new_context(viewport={"width": 1280, "height": 800})
            context.add_init_script(f"{SIGNED_IN} window.__want = {want};")
            context.add_init_script(OBSERVER)
            page = context.new_page()
            page.goto(_session_url(daemon.base, agent, key))
            page.wait_for_function("() => window.__rows !== null && window.__tail !== null",
                                   timeout=120_000)
            measured[into].append(page.evaluate("window.__rows"))
            if agent == "big":
                measured["tails"].append(page.evaluate("window.__tail"))
                elements = max(elements,
                               page.evaluate("document.querySelectorAll('*').length"))
            context.close()
    return {
        "long_session_events": last,
        "long_first_rows_ms_median": _r(statistics.median(measured["rows"])),
        "long_tail_shown_ms_median": _r(statistics.median(measured["tails"])),
        "long_first_rows_ms_all": [_r(v) for v in measured["rows"]],
        "short_first_rows_ms_median": _r(statistics.median(measured["short"])),
        "long_dom_elements": elements,
    }


def _r(value: float | None, digits: int = 1) -> float | None:
    return None if value is None else round(value, digits)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=200, help="words per streamed reply")
    parser.add_argument("--runs", type=int, default=3, help="streamed replies")
    parser.add_argument("--interval-ms", type=float, default=40.0,
                        help="time between the model's frames")
    parser.add_argument("--steps", type=int, default=50, help="long session: model steps")
    parser.add_argument("--calls", type=int, default=100, help="long session: calls a step")
    parser.add_argument("--loads", type=int, default=5, help="long session: page loads")
    args = parser.parse_args()

    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="agentd-console-bench-") as tmp, \
            StubLLMServer() as stub, LocalDaemon(Path(tmp), TOKEN) as daemon, \
            httpx.Client(base_url=daemon.base, timeout=120,
                         headers={"Authorization": f"Bearer {TOKEN}"}) as api, \
            sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                     args=["--no-sandbox"] if os.geteuid() == 0 else [])
        try:
            result: dict[str, Any] = {"bench": "console_stream"}
            result.update(token_latency(api, daemon, stub, browser, tokens=args.tokens,
                                        runs=args.runs, interval_s=args.interval_ms / 1000))
            result.update(long_session(api, daemon, browser, steps=args.steps,
                                       calls=args.calls, loads=args.loads))
            result["cpus"] = os.cpu_count()
        finally:
            browser.close()
    print(orjson.dumps(result).decode(), flush=True)


if __name__ == "__main__":
    main()
