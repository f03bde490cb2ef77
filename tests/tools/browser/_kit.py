"""What the browser tests share: the pages' server and a canary service (each a
process of its own), a stand-in for the daemon's API, and helpers that drive the
tools through the runtime with a scripted model."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING, Any

import pytest

from agentd.assembly import Runtime
from agentd.config import default_chromium

if TYPE_CHECKING:
    from playwright.async_api import Page

#: The Chromium the tests drive: the product's default (the headless shell where it is
#: installed), or AGENTD_TEST_CHROMIUM.
CHROMIUM = os.environ.get("AGENTD_TEST_CHROMIUM") or default_chromium()


def missing() -> str | None:
    """Why the browser tests cannot run here (None: they can)."""
    if importlib.util.find_spec("playwright") is None:
        return "the playwright package is not installed (pip install -e '.[test]')"
    if not os.access(CHROMIUM, os.X_OK):
        return (f"no Chromium at {CHROMIUM} (apt-get install chromium-headless-shell; "
                "scripts/test.sh does)")
    return None


def require_chromium() -> None:
    """Skip the calling test module where Chromium or Playwright is missing (fail
    under CI, which must run them)."""
    why = missing()
    if why is not None:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the browser tests: {why}", pytrace=False)
        pytest.skip(why, allow_module_level=True)


PAGES = r'''
import sys, time, urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HOME = """<!doctype html><html><head><title>Home page</title></head><body>
<nav><a href="/second">Second page</a></nav>
<main><h1>Welcome home</h1><p>The quick brown fox.</p>
<button id="b" onclick="document.getElementById('out').textContent='Clicked: yes'"
 >Change me</button>
<p id="out">Clicked: no</p>
<form action="/result" method="get"><label for="q">Query</label>
<input id="q" name="q" placeholder="search words"><button type="submit">Search</button></form>
<input id="k" placeholder="press here" onkeydown="if (event.key === 'Enter')
 document.getElementById('pressed').textContent='Pressed: Enter'">
<p id="pressed">Pressed: nothing</p>
<select id="size" aria-label="Size"><option value="s">Small</option>
<option value="l">Large</option></select>
<label><input type="checkbox" id="agree"> Agree</label>
<div style="height: 3000px">tall</div>
<button id="far" onclick="this.textContent='far clicked'">Far away</button>
<a href="/second" target="_blank">New tab</a>
</main></body></html>"""

class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def send(self, body, status=200, kind="text/html; charset=utf-8", **headers):
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        url = urllib.parse.urlsplit(self.path)
        query = dict(urllib.parse.parse_qsl(url.query))
        if url.path == "/":
            self.send(HOME)
        elif url.path == "/hang":
            self.send("<title>Hang</title><main><button onclick='while (true) {}'>Hang"
                      "</button></main>")
        elif url.path == "/big":
            self.send("<title>Big</title><main>" + "word " * 20000 + "</main>")
        elif url.path == "/second":
            self.send("<title>Second</title><main><p>This is the second page.</p></main>")
        elif url.path == "/result":
            q = query.get("q", "").replace("<", "&lt;")
            self.send(f"<title>Results</title><main><p>You searched for: {q}</p></main>")
        elif url.path == "/hold":
            # A page that opens many requests that never finish, and keeps them.
            self.send("<title>Hold</title><main><p>holding</p></main><script>"
                      f"for (let i = 0; i < {int(query.get('n', '40'))}; i++) "
                      "fetch('/never?i=' + i).catch(() => {});</script>")
        elif url.path == "/never":
            # Headers and the start of a page, then nothing: it never finishes.
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            self.wfile.write(b"<html><body><p>loading")
            self.wfile.flush()
            time.sleep(600)
        elif url.path == "/attack":
            self.send(ATTACK.replace("DAEMON", query["daemon"]).replace("CANARY", query["canary"]))
        elif url.path == "/to-private":
            self.send("", status=302, Location=f"http://127.0.0.1:{query['canary']}/redirected")
        elif url.path == "/webrtc":
            self.send(WEBRTC.replace("UDPPORT", query["port"]))
        elif url.path == "/to-file":
            self.send("<title>File</title><script>location.href='file:///etc/passwd'</script>"
                      "<main>going to a file</main>")
        else:
            self.send("not found", status=404, kind="text/plain")

ATTACK = """<!doctype html><title>Attack</title><main><p id="log">attack page</p></main>
<iframe src="http://127.0.0.1:CANARY/iframe"></iframe>
<iframe src="http://127.0.0.1:DAEMON/v1/agents"></iframe>
<img src="http://127.0.0.1:CANARY/img">
<script>
const log = (s) => { document.getElementById('log').textContent += ' | ' + s; };
const tries = [
  ['daemon', 'http://127.0.0.1:DAEMON/v1/agents'],
  ['daemon-localhost', 'http://localhost:DAEMON/v1/agents'],
  ['canary', 'http://127.0.0.1:CANARY/fetch'],
  ['metadata', 'http://169.254.169.254/latest/meta-data/'],
  ['file', 'file:///etc/passwd'],
];
window.done = Promise.all(tries.map(([name, url]) =>
  fetch(url, {mode: 'no-cors'}).then(() => log(name + ' REACHED'), () => log(name + ' blocked'))));
const ws = new WebSocket('ws://127.0.0.1:CANARY/ws');
ws.onerror = () => log('ws blocked');
</script>"""

WEBRTC = """<!doctype html><title>RTC</title><main><p id="log">rtc</p></main><script>
window.done = (async () => {
  const pc = new RTCPeerConnection({iceServers: [{urls: 'stun:127.0.0.1:UDPPORT'}]});
  const found = [];
  pc.onicecandidate = (e) => { if (e.candidate) found.push(e.candidate.candidate); };
  pc.createDataChannel('x');
  await pc.setLocalDescription(await pc.createOffer());
  await new Promise((resolve) => {
    if (pc.iceGatheringState === 'complete') resolve();
    pc.onicegatheringstatechange = () => {
      if (pc.iceGatheringState === 'complete') resolve();
    };
  });
  return found;
})();
</script>"""

httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(httpd.server_address[1], flush=True)
httpd.serve_forever()
'''

#: A local service no grant lists: every request it gets is written to a file.
CANARY = r'''
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        with open(sys.argv[1], "a") as f:
            f.write(self.path + "\n")
        self.send_response(200)
        self.send_header("Content-Length", "6")
        self.end_headers()
        self.wfile.write(b"secret")

httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(httpd.server_address[1], flush=True)
httpd.serve_forever()
'''


def spawn(code: str, *args: str) -> tuple[subprocess.Popen[bytes], int]:
    proc = subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.PIPE)
    assert proc.stdout is not None
    return proc, int(proc.stdout.readline())



class DaemonStandIn(BaseHTTPRequestHandler):
    """Stands for the daemon's API: a port of the daemon's own process."""

    hits: list[str] = []

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        DaemonStandIn.hits.append(self.path)
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")


ALLOW = [{"tool": "*", "action": "allow", "tainted": True}, {"tool": "*", "action": "allow"}]
TOOLS = ["browser_open", "browser_observe", "browser_act", "browser_screenshot"]


async def call(rt: Runtime, name: str, arguments: dict[str, Any], *, agent: str = "web",
                key: str = "s") -> dict[str, Any]:
    """One run of ``agent`` in session ``key`` whose model calls ``name``: the
    ``tool.finished`` event's data."""
    current = await rt.get_agent(agent)
    settings = dict(current.settings)
    settings["script"] = [{"tool_calls": [{"name": name, "arguments": arguments}]},
                          {"text": "done"}]
    await rt.update_agent(agent, {"settings": settings})
    sent = await rt.send(agent, key, "go")
    assert (await rt.wait(sent.run.id)).status == "completed"
    events = await rt.read_events(sent.session.id, after=0)
    finished = [e.data for e in events if e.kind == "tool.finished"
                and e.run_id == sent.run.id]
    assert len(finished) == 1, events
    return dict(finished[0])


@asynccontextmanager
async def session_page(rt: Runtime, agent: str = "web", key: str = "s") -> AsyncIterator[Page]:
    """The session's page itself (to look at what the tools did), as the tools get it."""
    record = await rt.get_agent(agent)
    assert rt.browsers is not None
    async with rt.browsers.tab(record.id, key, True, rt.sandboxes.rules, create=False,
                               user=await rt.sandboxes.user(record.id),
                               tenant=record.settings.get("tenant", "default")) as tab:
        yield tab.page


def ref(observed: str, name: str) -> str:
    """The reference of the element called ``name`` in browser_observe's output."""
    for line in observed.splitlines():
        if f"'{name}'" in line:
            return line.split()[0]
    raise AssertionError(f"no element {name!r} in:\n{observed}")


async def ok(rt: Runtime, name: str, arguments: dict[str, Any], **kw: Any) -> str:
    finished = await call(rt, name, arguments, **kw)
    assert not finished["is_error"], finished
    return str(finished["output"])

