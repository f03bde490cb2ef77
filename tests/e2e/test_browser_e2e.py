"""The browser tools in the real daemon process, over its real socket: its own API
port is out of a page's reach even when the operator lists it; a SIGKILL in the
middle of a browser call leaves no Chromium behind, and the run, resumed, re-runs
the call (browser_open is idempotent) and completes."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import TERMINAL, wait_until
from tests.daemons import (
    Daemon,
    create_agent,
    kinds_of,
    read_events,
    send,
    wait_for_run,
)
from tests.tools.browser._kit import CHROMIUM, PAGES, require_chromium, spawn

pytestmark = pytest.mark.e2e

require_chromium()

_ALLOW = [{"tool": "*", "action": "allow", "tainted": True}, {"tool": "*", "action": "allow"}]
_TOOLS = ["browser_open", "browser_observe", "browser_act", "browser_screenshot"]


@pytest.fixture(scope="module")
def pages() -> Iterator[int]:
    proc, port = spawn(PAGES)
    yield port
    proc.kill()
    proc.wait()


def _daemon(home: Path, log: Path, pages: int, port: int | None = None) -> Daemon:
    daemon = Daemon(home, log, env={}, args=())
    if port is not None:
        daemon.port, daemon.url = port, f"http://127.0.0.1:{port}"
    daemon.env.update(
        AGENTD_DEMO_AGENT="false",
        AGENTD_BROWSER=json.dumps({"enabled": True, "executable": CHROMIUM,
                                   "navigation_timeout_s": 5}),
        # The operator lists the daemon's own port too: it stays refused.
        AGENTD_SANDBOX=json.dumps({"private_endpoints": [
            f"127.0.0.1:{pages}", f"127.0.0.1:{daemon.port}", f"localhost:{daemon.port}"]}))
    return daemon


def _descendants(pid: int) -> dict[int, str]:
    """The processes below ``pid`` (by pid: their command name)."""
    parents: dict[int, int] = {}
    names: dict[int, str] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        name = stat[stat.index("(") + 1:stat.rindex(")")]
        parents[int(entry)] = int(stat[stat.rindex(")") + 2:].split()[1])
        names[int(entry)] = name
    found: dict[int, str] = {}
    frontier = [pid]
    while frontier:
        current = frontier.pop()
        for child, parent in parents.items():
            if parent == current and child not in found:
                found[child] = names[child]
                frontier.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _script(client: Any, agent: str, calls: list[dict[str, Any]]) -> None:
    turns: list[dict[str, Any]] = [{"tool_calls": [call]} for call in calls]
    response = client.patch(f"/v1/agents/{agent}", json={"settings": {
        "policy": {"network": True, "rules": _ALLOW},
        "script": [*turns, {"text": "done"}]}})
    assert response.status_code == 200, response.text


def test_the_daemons_api_is_out_of_reach(tmp_path: Path, pages: int) -> None:
    daemon = _daemon(tmp_path / "home", tmp_path / "agentd.log", pages).start()
    try:
        with daemon.client() as client:
            create_agent(client, "web", tools=_TOOLS,
                         settings={"policy": {"network": True, "rules": _ALLOW}})
            _script(client, "web", [
                {"name": "browser_open", "arguments": {"url": f"{daemon.url}/health"}},
                {"name": "browser_open",
                 "arguments": {"url": f"http://localhost:{daemon.port}/v1/agents"}},
                {"name": "browser_open", "arguments": {"url": f"http://127.0.0.1:{pages}/"}},
            ])
            run = send(client, "web", "s", "go").json()
            assert wait_for_run(client, run["id"], TERMINAL)["status"] == "completed"
            finished = [e["data"] for e in read_events(client, "web", "s")
                        if e["kind"] == "tool.finished"]
            assert [f["is_error"] for f in finished] == [True, True, False], finished
            for refused in finished[:2]:
                assert "daemon's own port" in refused["output"], refused
            assert "Welcome home" in finished[2]["output"]
    finally:
        daemon.cleanup()


def test_sigkill_mid_call_leaves_no_chromium_and_the_run_completes(
        tmp_path: Path, pages: int) -> None:
    home = tmp_path / "home"
    daemon = _daemon(home, tmp_path / "agentd-0.log", pages).start()
    try:
        with daemon.client() as client:
            create_agent(client, "web", tools=_TOOLS,
                         settings={"policy": {"network": True, "rules": _ALLOW}})
            # A page that never finishes: the call is certainly under way at the kill.
            _script(client, "web", [{"name": "browser_open", "arguments": {
                "url": f"http://127.0.0.1:{pages}/never"}}])
            run = send(client, "web", "s", "go", wait=False).json()
            wait_until(lambda: "tool.started" in kinds_of(read_events(client, "web", "s")),
                       what="the browser call to start")
            wait_until(lambda: any("chrom" in name for name in
                                   _descendants(daemon.pid).values()),
                       what="Chromium to start")
            chromium = [pid for pid, name in _descendants(daemon.pid).items()
                        if "chrom" in name]
        daemon.signal_and_wait(signal.SIGKILL)
        # Playwright's driver sees its pipe close and takes its browser with it.
        wait_until(lambda: not [pid for pid in chromium if _alive(pid)],
                   what=lambda: f"Chromium {chromium} to exit after the daemon's SIGKILL")
    finally:
        daemon.cleanup()

    again = _daemon(home, tmp_path / "agentd-1.log", pages).start()
    try:
        with again.client() as client:
            done = wait_for_run(client, run["id"], TERMINAL)
            assert done["status"] == "completed", (done, again.log())
            events = read_events(client, "web", "s")
            assert "run.resumed" in kinds_of(events)
            [finished] = [e["data"] for e in events if e["kind"] == "tool.finished"]
            # Re-run after the crash (idempotent), it fails as it should, in time.
            assert finished["is_error"] and "did not load within 5s" in finished["output"]
    finally:
        again.cleanup()
