"""Which ``http_fetch`` calls taint the session, through real runs: one refused before
any request left (no grant, a refused address) brought nothing from outside in and
does not; one that got an answer does, even when what followed was refused."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from agentd.assembly import Runtime
from agentd.config import Settings

_SERVER = """
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        if self.path == "/away":
            self.send_response(302)
            self.send_header("Location", "http://127.0.0.1:9/elsewhere")
            body = b""
        else:
            self.send_response(200)
            body = b"a page from outside"
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(httpd.server_address[1], flush=True)
httpd.serve_forever()
"""

_ALLOW = [{"tool": "*", "action": "allow", "tainted": True}, {"tool": "*", "action": "allow"}]


@pytest.fixture(scope="module")
def port() -> Iterator[int]:
    """A web server in a process of its own (a port of this process would count as
    the daemon's own, which no setting opens)."""
    proc = subprocess.Popen([sys.executable, "-c", _SERVER], stdout=subprocess.PIPE)
    assert proc.stdout is not None
    try:
        yield int(proc.stdout.readline())
    finally:
        proc.kill()
        proc.wait()


@pytest.fixture
async def rt(settings: Settings, store_url: str, port: int) -> AsyncIterator[Runtime]:
    settings.database_url = store_url
    settings.sandbox = settings.sandbox.model_copy(
        update={"private_endpoints": [f"127.0.0.1:{port}"]})
    runtime = await Runtime.open(settings)
    yield runtime
    await runtime.close()


async def _fetch(rt: Runtime, agent: str, key: str, url: str) -> list[dict[str, Any]]:
    """One run of ``agent`` in session ``key`` that fetches ``url`` then answers; the
    session's events' data (with kind)."""
    current = await rt.get_agent(agent)
    settings = dict(current.settings)
    settings["script"] = [{"tool_calls": [{"name": "http_fetch", "arguments": {"url": url}}]},
                          {"text": "done"}]
    await rt.update_agent(agent, {"settings": settings})
    sent = await rt.send(agent, key, "go")
    assert (await rt.wait(sent.run.id)).status == "completed"
    return [{"kind": e.kind, **e.data} for e in await rt.read_events(sent.session.id)]


def _finished(events: list[dict[str, Any]]) -> dict[str, Any]:
    [finished] = [e for e in events if e["kind"] == "tool.finished"]
    return finished


async def test_a_refused_fetch_leaves_the_session_untainted(rt: Runtime, port: int) -> None:
    await rt.create_agent(name="web", model="scripted", tools=["http_fetch"],
                          settings={"policy": {"network": True, "rules": _ALLOW}})
    await rt.create_agent(name="offline", model="scripted", tools=["http_fetch"],
                          settings={"policy": {"rules": _ALLOW}})

    # A private address the operator did not list: refused before connecting.
    refused = _finished(await _fetch(rt, "web", "k", "http://127.0.0.1:9/"))
    assert refused["is_error"] and "tainted" not in refused, refused
    # No network granted at all.
    offline = _finished(await _fetch(rt, "offline", "k", f"http://127.0.0.1:{port}/"))
    assert offline["is_error"] and "tainted" not in offline, offline
    assert "no network" in offline["output"]

    # The same session then fetches for real: now it is tainted.
    events = await _fetch(rt, "web", "k", f"http://127.0.0.1:{port}/")
    fetched = [e for e in events if e["kind"] == "tool.finished"][-1]
    assert not fetched["is_error"] and "a page from outside" in fetched["output"]
    assert fetched["tainted"] == "its output comes from outside"
    # Only the successful call carries the taint.
    assert [bool(e.get("tainted")) for e in events if e["kind"] == "tool.finished"] == [
        False, True]


async def test_a_fetch_refused_after_an_answer_still_taints(rt: Runtime, port: int) -> None:
    """The server answered (a redirect to a refused address): what it said is in the
    error, so the session is tainted."""
    await rt.create_agent(name="web", model="scripted", tools=["http_fetch"],
                          settings={"policy": {"network": True, "rules": _ALLOW}})
    finished = _finished(await _fetch(rt, "web", "r", f"http://127.0.0.1:{port}/away"))
    assert finished["is_error"] and '"127.0.0.1:9"' in finished["output"], finished
    assert finished["tainted"] == "its output comes from outside"
