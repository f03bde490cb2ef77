"""The console's overview with many agents: page load, first paint, first rows, search.

1. A SQLite home with N agents (default 10,000), created before the daemon starts:
   through the runtime (``Runtime.create_agent``: the checks ``POST /v1/agents`` makes,
   a sandbox uid each; the default) or straight through the store (``--via store``,
   faster to set up). Every 50th agent is paused; tenants alternate.
2. The real daemon (``python -m agentd serve``) on a free port. Server latency over one
   keep-alive connection: ``GET /v1/overview`` (the summary the page polls),
   ``GET /v1/agents?limit=100`` at pages spread over the names (the list the page
   shows), a search (``q=``), and, for contrast, the unpaged ``GET /v1/agents`` (every
   agent with its settings: what a page without paging would load).
3. Debian's Chromium, headless, through Playwright: L loads (default 7) of the overview,
   each in a fresh browser context (empty cache, the token put into sessionStorage
   before the page's scripts run, as a signed-in tab has it). From the page's own clocks
   (``performance``; 0 is the navigation's start): the load event, first paint and
   first contentful paint (Chromium's paint entries), and, from a MutationObserver
   installed before the page's scripts, when the summary's figures and the agent list's
   first rows are in the DOM. Then in the loaded page: a search typed into the box
   until its one result is the only row (the box waits 200 ms after the last keystroke
   before asking: included), and "Next" until the second page's first row is shown.

Prints one JSON line on stdout (medians, and p90 of the loads); progress goes to stderr.

    .venv/bin/python bench/console_overview.py [--agents 10000] [--loads 7] [--via store]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import orjson

from _load import ServerProcess, free_port, info, percentile
from agentd.assembly import Runtime
from agentd.config import Settings
from agentd.store import open_store

TOKEN = "console-bench-token-0123456789"
CHROMIUM = os.environ.get("AGENTD_BENCH_CHROMIUM", "/usr/bin/chromium")

# Before the page's scripts: the token (a signed-in tab's sessionStorage) and an observer
# noting when the summary and the first agent rows appear (performance.now(): ms since
# the navigation started).
INIT = """
sessionStorage.setItem('agentd.token', %s);
window.__marks = {};
new MutationObserver(() => {
  const m = window.__marks;
  const now = performance.now();
  if (m.rows === undefined && document.querySelector('table.agents tbody tr')) m.rows = now;
  if (m.summary === undefined && document.querySelector('[data-card="agents"] .value')) {
    m.summary = now;
  }
}).observe(document, {childList: true, subtree: true});
"""

# A condition spelled out in the function Playwright calls (no eval in the page).
WAIT = """() => new Promise((resolve) => {
  const started = performance.now();
  const tick = () => {
    if (%s) resolve(true);
    else if (performance.now() - started > 60000) resolve(false);
    else setTimeout(tick, 10);
  };
  tick();
})"""

READ = """() => {
  const nav = performance.getEntriesByType('navigation')[0];
  const paint = Object.fromEntries(
    performance.getEntriesByType('paint').map((e) => [e.name, e.startTime]));
  const m = window.__marks;
  return {load: nav.loadEventEnd, dcl: nav.domContentLoadedEventEnd, fp: paint['first-paint'],
          fcp: paint['first-contentful-paint'], rows: m.rows, summary: m.summary};
}"""

# In the page: time from an action to a condition on the DOM, in ms.
TIMED = """async ([action, selector, attr, value]) => {
  const t0 = performance.now();
  if (action === 'search') {
    const box = document.querySelector('#agent-search');
    box.value = value; box.dispatchEvent(new Event('input', {bubbles: true}));
  } else {
    document.querySelector(action).click();
  }
  return await new Promise((resolve) => {
    const done = () => {
      const rows = document.querySelectorAll('table.agents tbody tr');
      if (rows.length && rows[0].getAttribute(attr) === value
          && (action !== 'search' || rows.length === 1)) {
        resolve(performance.now() - t0);
        return true;
      }
      return false;
    };
    if (done()) return;
    const obs = new MutationObserver(() => { if (done()) obs.disconnect(); });
    obs.observe(document.querySelector(selector), {childList: true, subtree: true});
  });
}"""


def until(page: Any, condition: str) -> None:
    """Wait for a condition in the page. (Playwright's wait_for_function evaluates its
    text in the page, which the console's policy refuses: no eval.)"""
    if not page.evaluate(WAIT % condition):
        raise TimeoutError(f"the page never had {condition}")


CLEAR = """() => {
  const box = document.querySelector('#agent-search');
  box.value = '';
  box.dispatchEvent(new Event('input', {bubbles: true}));
}"""


def name(i: int) -> str:
    return f"agent-{i:05d}"


async def seed(home: Path, n: int, via: str) -> None:
    settings = Settings(home=home, demo_agent=False)
    if via == "runtime":
        runtime = await Runtime.open(settings)
        try:
            for start in range(0, n, 250):
                await asyncio.gather(*(runtime.create_agent(
                    name=name(i), model="scripted", instructions=f"You are agent {i}.",
                    tools=["calculator"] if i % 3 else [],
                    settings={"tenant": "acme" if i % 2 else "globex"})
                    for i in range(start, min(n, start + 250))))
                if start and start % 2000 == 0:
                    info(f"created {start} agents")
        finally:
            await runtime.close()
    store = await open_store(settings.database_url)
    try:
        if via == "store":
            for start in range(0, n, 1000):
                await asyncio.gather(*(store.create_agent(
                    name=name(i), model="scripted", instructions=f"You are agent {i}.",
                    tools=["calculator"] if i % 3 else [],
                    settings={"tenant": "acme" if i % 2 else "globex"})
                    for i in range(start, min(n, start + 1000))))
        await asyncio.gather(*(store.update_agent(name(i), {"state": "paused"})
                               for i in range(0, n, 50)))
    finally:
        await store.close()


def timed_get(client: httpx.Client, url: str, params: dict[str, Any] | None = None
              ) -> tuple[float, int]:
    t0 = time.perf_counter()
    response = client.get(url, params=params)
    ms = (time.perf_counter() - t0) * 1000
    response.raise_for_status()
    return ms, len(response.content)


def stats(values: list[float]) -> dict[str, float | None]:
    ordered = sorted(values)
    return {"p50": round(statistics.median(ordered), 1) if ordered else None,
            "p90": round(percentile(ordered, 90) or 0.0, 1) if ordered else None,
            "p99": round(percentile(ordered, 99) or 0.0, 1) if ordered else None}


def server_figures(url: str, n: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"},
                      timeout=120) as client:
        for _ in range(5):  # warm: the first read of each kind fills the page cache
            timed_get(client, "/v1/overview")
            timed_get(client, "/v1/agents", {"limit": 100})
        overview = [timed_get(client, "/v1/overview")[0] for _ in range(50)]
        pages, page_bytes = [], 0
        for k in range(50):
            after = name((k * n) // 50) if k else None
            ms, size = timed_get(client, "/v1/agents",
                                 {"limit": 100, **({"after": after} if after else {})})
            pages.append(ms)
            page_bytes = max(page_bytes, size)
        searches = [timed_get(client, "/v1/agents", {"q": f"{(k * 97) % n:05d}", "limit": 100})[0]
                    for k in range(50)]
        unpaged = [timed_get(client, "/v1/agents") for _ in range(3)]
    out["overview_api_ms"] = stats(overview)
    out["agents_page_api_ms"] = stats(pages)
    out["agents_page_bytes"] = page_bytes
    out["agents_search_api_ms"] = stats(searches)
    out["agents_unpaged_api_ms"] = stats([ms for ms, _ in unpaged])
    out["agents_unpaged_bytes"] = unpaged[0][1]
    return out


def browser_figures(url: str, n: int, loads: int) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    marks: dict[str, list[float]] = {k: [] for k in ("load", "dcl", "fp", "fcp", "rows", "summary")}
    search: list[float] = []
    next_page: list[float] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                     args=["--no-sandbox"] if os.geteuid() == 0 else [])
        try:
            for k in range(loads):
                context = browser.new_context(viewport={"width": 1280, "height": 800})
                context.add_init_script(INIT % orjson.dumps(TOKEN).decode())
                page = context.new_page()
                page.goto(f"{url}/ui/#/", wait_until="load")
                page.wait_for_selector("table.agents tbody tr", timeout=60_000)
                until(page, "window.__marks.rows !== undefined && "
                            "window.__marks.summary !== undefined")
                got = page.evaluate(READ)
                for key in marks:
                    if got.get(key) is not None:
                        marks[key].append(float(got[key]))
                target = name((k * 1237 + 77) % n)
                search.append(page.evaluate(TIMED, ["search", "#agent-list", "data-agent", target]))
                page.evaluate(CLEAR)
                until(page, "document.querySelectorAll('table.agents tbody tr').length === 100")
                next_page.append(page.evaluate(TIMED, ["#agents-next", "#agent-list",
                                                       "data-agent", name(100)]))
                context.close()
                info(f"load {k + 1}/{loads}: rows at {got.get('rows'):.0f} ms, "
                     f"search {search[-1]:.0f} ms")
        finally:
            browser.close()
    names = {"load": "page_load_ms", "dcl": "dom_content_loaded_ms", "fp": "first_paint_ms",
             "fcp": "first_contentful_paint_ms", "rows": "first_rows_ms",
             "summary": "summary_shown_ms"}
    out: dict[str, Any] = {names[k]: stats(v) for k, v in marks.items()}
    out["search_to_result_ms"] = stats(search)
    out["search_debounce_ms"] = 200
    out["next_page_ms"] = stats(next_page)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--agents", type=int, default=10_000)
    parser.add_argument("--loads", type=int, default=7)
    parser.add_argument("--via", choices=("runtime", "store"), default="runtime")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="agentd-console-bench-") as tmp:
        home = Path(tmp) / "home"
        home.mkdir()
        info(f"creating {args.agents} agents through the {args.via}")
        t0 = time.perf_counter()
        # Playwright's sync API (later) wants this thread's loop free: seed on another.
        with ThreadPoolExecutor(1) as pool:
            pool.submit(asyncio.run, seed(home, args.agents, args.via)).result()
        created_s = time.perf_counter() - t0
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTD_")}
        env.update(AGENTD_HOME=str(home), AGENTD_TOKEN=TOKEN, PYTHONUNBUFFERED="1")
        server = ServerProcess("agentd", [sys.executable, "-m", "agentd", "serve", "--port",
                                          str(port)], Path(tmp) / "agentd.log", env)
        server.start()
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 120
            while True:
                try:
                    if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if server.exited() or time.monotonic() > deadline:
                    raise SystemExit(f"agentd did not start:\n{server.log_tail()}")
                time.sleep(0.1)
            figures: dict[str, Any] = {"bench": "console_overview", "agents": args.agents,
                                       "via": args.via, "loads": args.loads,
                                       "setup_s": round(created_s, 1)}
            info("server latency")
            figures.update(server_figures(url, args.agents))
            info("the page in Chromium")
            figures.update(browser_figures(url, args.agents, args.loads))
        finally:
            server.stop()
    print(orjson.dumps(figures).decode())


if __name__ == "__main__":
    main()
