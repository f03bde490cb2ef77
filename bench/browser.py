"""The browser tools' Chromium: what a page costs in CPU, for each Chromium build the
tools look for (:data:`agentd.config.CHROMIUM_EXECUTABLES`: the headless shell, then
the full browser).

For each build installed: one :class:`agentd.browser.Browsers` service (the tools'
own launch path, switches and proxy), then ``--pages`` tabs in turn, each in a
session of its own (a fresh page), loading a local page with a form and some text,
filling the form, reading the text, and closing. ``chromium_cpu_s`` is the CPU that
every Chromium process started during the build's turn used (user + system, read from
``/proc`` every 50 ms while the process lived: a process that lived less than that is
missed), ``per_page_ms`` that over the pages, ``wall_s`` the turn's wall time
(launch included), ``processes`` how many Chromium processes were started.

Prints one JSON line on stdout; progress goes to stderr.

    .venv/bin/python bench/browser.py [--pages 20]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import orjson

from _load import free_port, info
from agentd.browser import Browsers
from agentd.config import CHROMIUM_EXECUTABLES, BrowserConfig
from agentd.sandbox.egress import EgressRules

PAGE = b"""<!doctype html><html><head><title>bench</title>
<style>body { font: 14px sans-serif } li:nth-child(odd) { background: #eee }</style>
</head><body><h1>A page</h1><form><label>Name <input id="name"></label>
<button type="button" onclick="document.getElementById('out').textContent =
 'hello ' + document.getElementById('name').value">Go</button></form>
<p id="out"></p><ul>""" + b"".join(b"<li>item %d</li>" % i for i in range(200)) + \
    b"</ul></body></html>"
_TICK_S = 0.05


class _ChromiumCPU:
    """The CPU of every Chromium process that starts while it runs (``/proc``)."""

    def __init__(self) -> None:
        self._before = {pid for pid in os.listdir("/proc") if pid.isdigit()}
        self._cpu: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._ticks = os.sysconf("SC_CLK_TCK")

    def __enter__(self) -> _ChromiumCPU:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            for pid in os.listdir("/proc"):
                if not pid.isdigit() or pid in self._before:
                    continue
                try:
                    exe = os.readlink(f"/proc/{pid}/exe")
                    if "chrom" not in os.path.basename(exe):
                        continue
                    with open(f"/proc/{pid}/stat") as stat:
                        fields = stat.read().rsplit(")", 1)[1].split()
                except OSError:
                    continue
                self._cpu[pid] = (int(fields[11]) + int(fields[12])) / self._ticks
            self._stop.wait(_TICK_S)

    @property
    def seconds(self) -> float:
        return sum(self._cpu.values())

    @property
    def processes(self) -> int:
        return len(self._cpu)


async def _turn(executable: str, url: str, pages: int) -> dict[str, Any]:
    browsers = Browsers(BrowserConfig(enabled=True, executable=executable), isolate=False)
    rules = EgressRules.of([url.split("/")[2]])
    started = time.perf_counter()
    with _ChromiumCPU() as cpu:
        try:
            for i in range(pages):
                async with browsers.tab("bench", f"s{i}", True, rules) as tab:
                    await tab.page.goto(url)
                    await tab.page.fill("#name", f"page {i}")
                    await tab.page.click("button")
                    await tab.page.wait_for_selector(f"#out:has-text('hello page {i}')")
                    await tab.page.inner_text("body")
                await browsers.discard_tab("bench", f"s{i}")
        finally:
            await browsers.close()
    wall = time.perf_counter() - started
    return {"chromium_cpu_s": round(cpu.seconds, 2),
            "per_page_ms": round(1000 * cpu.seconds / pages),
            "wall_s": round(wall, 2), "processes": cpu.processes}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pages", type=int, default=20)
    args = parser.parse_args()
    # The page is served by another process: the browser tools refuse every port of
    # their own process (the daemon's).
    results: dict[str, Any] = {"pages": args.pages}
    with tempfile.TemporaryDirectory() as root:
        Path(root, "index.html").write_bytes(PAGE)
        port = free_port()
        server = subprocess.Popen(
            [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", "--directory",
             root, str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            url = f"http://127.0.0.1:{port}/"
            wait_for(url)
            for executable in CHROMIUM_EXECUTABLES:
                if not os.access(executable, os.X_OK):
                    info(f"{executable}: not installed, skipped")
                    continue
                info(f"{executable}: {args.pages} pages")
                results[executable] = asyncio.run(_turn(executable, url, args.pages))
                info(f"  {results[executable]}")
        finally:
            server.terminate()
            server.wait()
    print(orjson.dumps(results).decode())


def wait_for(url: str) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(url).status_code == 200:
                return
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise
        time.sleep(0.05)


if __name__ == "__main__":
    main()
