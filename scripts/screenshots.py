"""Screenshots of every console page for docs/screenshots/ (shown in the README).

Starts a real daemon in a temporary home (SQLite, the scripted model), gives it a few
agents with sessions, tool calls, an approval waiting and a paused agent, then opens
each page in Debian's Chromium (headless) and saves a PNG::

    PYTHONPATH=src .venv/bin/python scripts/screenshots.py [--out docs/screenshots]

Light at 1280x800 for every page, dark for the session page, and the overview on a
phone-sized screen. Run it again after changing a page and commit the images.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

TOKEN = "screenshot-token"
CHROMIUM = os.environ.get("AGENTD_TEST_CHROMIUM", "/usr/bin/chromium")


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_run(api: httpx.Client, run_id: str, *statuses: str) -> dict[str, Any]:
    wanted = set(statuses or ("completed", "failed", "cancelled", "interrupted"))
    for _ in range(600):
        run: dict[str, Any] = api.get(f"/v1/runs/{run_id}").json()
        if run["status"] in wanted:
            return run
        time.sleep(0.05)
    raise RuntimeError(f"run {run_id} stuck at {run['status']}")


def _send(api: httpx.Client, agent: str, key: str, content: str, *, wait: bool = True
          ) -> dict[str, Any]:
    response = api.post(f"/v1/agents/{agent}/sessions/{quote(key, safe='')}/messages",
                        json={"content": content})
    response.raise_for_status()
    run: dict[str, Any] = response.json()
    run_id = run.get("run_id") or run["id"]
    return _wait_run(api, run_id) if wait else run


def seed(api: httpx.Client) -> dict[str, str]:
    """A few agents doing realistic things; the names of what to show."""
    api.post("/v1/agents", json={
        "name": "support", "model": "scripted",
        "instructions": "You answer customer questions about orders. Be brief and kind.",
        "tools": ["calculator", "read_file", "write_file"],
        "settings": {"script": [
            {"tool_calls": [{"name": "calculator", "arguments": {"expression": "3 * 49.90"}}]},
            {"text": "Three items at 49.90 come to 149.70. Your order ships tomorrow "
                     "and should arrive by Friday.", "delay_ms": 300},
            {"tool_calls": [{"name": "write_file", "arguments": {
                "path": "notes/order-1042.md", "content": "Customer asked about delivery."}}]},
            {"text": "I've noted that on the order. Anything else I can help with?"},
        ]}}).raise_for_status()
    api.post("/v1/agents", json={
        "name": "researcher", "model": "scripted",
        "instructions": "Research topics and write short reports into the workspace.",
        "tools": ["shell", "write_file", "read_file"],
        "settings": {"policy": {"rules": [{"tool": "shell", "action": "ask"}]},
                     "script": [
            {"text": "Let me look at what is in the workspace first."},
            {"tool_calls": [{"name": "shell", "arguments": {"command": "ls -la reports/"}}]},
            {"text": "The folder is empty; I'll start the report."},
        ]}}).raise_for_status()
    api.post("/v1/agents", json={
        "name": "nightly-report", "model": "scripted",
        "instructions": "Every night, summarise the day's tickets.",
        "tools": ["calculator"]}).raise_for_status()
    api.post("/v1/agents", json={
        "name": "ops-bot", "model": "scripted",
        "instructions": "Watch the deploy pipeline and report failures.",
        "tools": ["calculator"]}).raise_for_status()
    for key, text in (("customer:1042", "How much are three of the blue mugs?"),
                      ("customer:1042", "Please note that I asked about delivery."),
                      ("customer:977", "Where is my order?")):
        _send(api, "support", key, text)
    _send(api, "nightly-report", "2026-11-23", "Summarise today's tickets.")
    _send(api, "ops-bot", "pipeline", "/tool calculator {\"expression\": \"17 / 4\"}")
    api.post("/v1/agents/ops-bot/pause").raise_for_status()
    # The researcher's shell call waits for a person.
    _send(api, "researcher", "topic:solar", "Write a short report on rooftop solar.")
    run = _send(api, "researcher", "topic:solar", "Go on.", wait=False)
    _wait_run(api, run.get("run_id") or run["id"], "waiting_approval")
    return {"agent": "support", "session": "customer:1042"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="docs/screenshots")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp:
        port = _free_port()
        url = f"http://127.0.0.1:{port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTD_")}
        env.update(AGENTD_HOME=str(Path(tmp) / "home"), AGENTD_TOKEN=TOKEN,
                   AGENTD_DEMO_AGENT="false")
        log = (Path(tmp) / "agentd.log").open("wb")
        daemon = subprocess.Popen([sys.executable, "-m", "agentd", "serve", "--port",
                                   str(port)], env=env, cwd=tmp, stdout=log,
                                  stderr=subprocess.STDOUT)
        try:
            for _ in range(300):
                try:
                    if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                time.sleep(0.1)
            with httpx.Client(base_url=url, timeout=30,
                              headers={"Authorization": f"Bearer {TOKEN}"}) as api:
                shown = seed(api)
            agent = quote(shown["agent"], safe="")
            session = quote(shown["session"], safe="")
            pages = [
                ("overview", "#/", "light", (1280, 800)),
                ("agent", f"#/agents/{agent}", "light", (1280, 800)),
                ("session", f"#/agents/{agent}/sessions/{session}", "light", (1280, 800)),
                ("session-dark", f"#/agents/{agent}/sessions/{session}", "dark", (1280, 800)),
                ("approvals", "#/approvals", "light", (1280, 800)),
                ("usage", "#/usage", "light", (1280, 800)),
                ("kernel", "#/kernel", "light", (1280, 800)),
                ("overview-phone", "#/", "light", (390, 844)),
            ]
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                             args=["--no-sandbox"] if os.geteuid() == 0
                                             else [])
                for name, hash_, theme, (width, height) in pages:
                    context = browser.new_context(viewport={"width": width,
                                                            "height": height},
                                                  color_scheme=theme,
                                                  device_scale_factor=1)
                    page = context.new_page()
                    page.goto(f"{url}/ui/#/signin")
                    page.get_by_label("Token").fill(TOKEN)
                    page.get_by_role("button", name="Sign in").click()
                    page.wait_for_selector("#top:not([hidden])")
                    page.goto(f"{url}/ui/{hash_}")
                    page.wait_for_selector("main h1")
                    # Live pages keep a stream open (no "network idle"): give them a
                    # moment to draw what the API returned.
                    time.sleep(1.5)
                    page.screenshot(path=str(out / f"{name}.png"))
                    print("wrote", out / f"{name}.png")
                    context.close()
                browser.close()
        finally:
            daemon.terminate()
            daemon.wait(timeout=60)
            log.close()


if __name__ == "__main__":
    main()
