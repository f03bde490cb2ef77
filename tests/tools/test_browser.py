"""The browser tools, for real: Chromium driven through the runtime by a scripted
model, against pages a local server (a process of its own) serves.

What they prove: a page is read, its elements listed with stable references, clicked,
filled, typed into, scrolled and screenshotted into the workspace; a page that never
finishes loading fails in bounded time; pages cannot reach the daemon's API, an
unlisted local port, a cloud metadata address, a file; the session is tainted by what
a page says; no grant, no browser.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import re
import socket
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from agentd.browser import Browsers
from agentd.config import BrowserConfig, Settings
from agentd.errors import InvalidInput
from agentd.runtime import Runtime
from agentd.sandbox.egress import EgressRules

if TYPE_CHECKING:
    from playwright.async_api import Page

CHROMIUM = os.environ.get("AGENTD_TEST_CHROMIUM", "/usr/bin/chromium")


def _missing() -> str | None:
    if importlib.util.find_spec("playwright") is None:
        return "the playwright package is not installed (pip install -e '.[test]')"
    if not os.access(CHROMIUM, os.X_OK):
        return f"no Chromium at {CHROMIUM} (apt-get install chromium; scripts/test.sh does)"
    return None


if _missing() is not None:
    if os.environ.get("CI"):
        pytest.fail(f"CI must run the browser tests: {_missing()}", pytrace=False)
    pytest.skip(_missing() or "", allow_module_level=True)


# -- the pages -------------------------------------------------------------------------

_PAGES = r'''
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
        elif url.path == "/second":
            self.send("<title>Second</title><main><p>This is the second page.</p></main>")
        elif url.path == "/result":
            q = query.get("q", "").replace("<", "&lt;")
            self.send(f"<title>Results</title><main><p>You searched for: {q}</p></main>")
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
_CANARY = r'''
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


def _spawn(code: str, *args: str) -> tuple[subprocess.Popen[bytes], int]:
    proc = subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.PIPE)
    assert proc.stdout is not None
    return proc, int(proc.stdout.readline())


@pytest.fixture(scope="module")
def pages() -> Iterator[int]:
    """The pages' server, in a process of its own (a port of the daemon's process
    is the daemon's own, which no setting opens)."""
    proc, port = _spawn(_PAGES)
    yield port
    proc.kill()
    proc.wait()


@pytest.fixture(scope="module")
def canary(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path]]:
    hits = tmp_path_factory.mktemp("canary") / "hits"
    hits.touch()
    proc, port = _spawn(_CANARY, str(hits))
    yield port, hits
    proc.kill()
    proc.wait()


class _Daemon(BaseHTTPRequestHandler):
    """Stands for the daemon's API: a port of the daemon's own process."""

    hits: list[str] = []

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        _Daemon.hits.append(self.path)
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")


@pytest.fixture
def daemon_port() -> Iterator[int]:
    _Daemon.hits = []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Daemon)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd.server_address[1]
    httpd.shutdown()
    httpd.server_close()


_ALLOW = [{"tool": "*", "action": "allow", "tainted": True}, {"tool": "*", "action": "allow"}]
_TOOLS = ["browser_open", "browser_observe", "browser_act", "browser_screenshot"]


@pytest.fixture
async def rt(settings: Settings, tmp_path: Path, pages: int, daemon_port: int
             ) -> AsyncIterator[Runtime]:
    settings.database_url = f"sqlite:///{tmp_path / 'agentd.db'}"
    settings.port = daemon_port
    # The operator lists the pages' server, and (to no avail) the daemon's own port.
    settings.sandbox = settings.sandbox.model_copy(update={"private_endpoints": [
        f"127.0.0.1:{pages}", f"127.0.0.1:{daemon_port}", f"localhost:{daemon_port}"]})
    settings.browser = BrowserConfig(enabled=True, executable=CHROMIUM,
                                     navigation_timeout_s=5, action_timeout_s=5,
                                     call_timeout_s=30)
    runtime = await Runtime.open(settings)
    await runtime.create_agent(name="web", model="scripted", tools=_TOOLS,
                               settings={"policy": {"network": True, "rules": _ALLOW}})
    yield runtime
    await runtime.close()


async def _call(rt: Runtime, name: str, arguments: dict[str, Any], *, agent: str = "web",
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
async def _page(rt: Runtime, agent: str = "web", key: str = "s") -> AsyncIterator[Page]:
    """The session's page itself (to look at what the tools did), as the tools get it."""
    record = await rt.get_agent(agent)
    assert rt.browsers is not None
    async with rt.browsers.tab(record.id, key, True, rt.sandboxes.rules, create=False,
                               user=await rt.sandboxes.user(record.id)) as tab:
        yield tab.page


def _ref(observed: str, name: str) -> str:
    """The reference of the element called ``name`` in browser_observe's output."""
    for line in observed.splitlines():
        if f"'{name}'" in line:
            return line.split()[0]
    raise AssertionError(f"no element {name!r} in:\n{observed}")


async def _ok(rt: Runtime, name: str, arguments: dict[str, Any], **kw: Any) -> str:
    finished = await _call(rt, name, arguments, **kw)
    assert not finished["is_error"], finished
    return str(finished["output"])


# -- reading and acting ----------------------------------------------------------------


async def test_open_returns_the_readable_text_and_taints(rt: Runtime, pages: int) -> None:
    finished = await _call(rt, "browser_open", {"url": f"http://127.0.0.1:{pages}/"})
    assert not finished["is_error"], finished
    out = finished["output"]
    assert "title: Home page" in out and f"url: http://127.0.0.1:{pages}/" in out
    assert "Welcome home" in out and "The quick brown fox." in out
    assert "Second page" not in out  # the <main>, not the nav
    assert finished["tainted"] == "its output comes from outside"


async def test_observe_lists_elements_with_stable_refs(rt: Runtime, pages: int) -> None:
    await _ok(rt, "browser_open", {"url": f"http://127.0.0.1:{pages}/"})
    first = await _ok(rt, "browser_observe", {})
    assert "button 'Change me'" in first and "input[text] 'Query'" in first
    assert "a 'Second page' href='/second'" in first
    assert "placeholder='press here'" in first
    refs = re.findall(r"^(e\d+) ", first, re.MULTILINE)
    assert refs == [f"e{i}" for i in range(9)]  # 2 links, 3 buttons, 4 fields
    again = await _ok(rt, "browser_observe", {})
    assert again == first  # the same references while the page does not navigate


async def test_click_changes_the_page(rt: Runtime, pages: int) -> None:
    await _ok(rt, "browser_open", {"url": f"http://127.0.0.1:{pages}/"})
    button = _ref(await _ok(rt, "browser_observe", {}), "Change me")
    out = await _ok(rt, "browser_act", {"action": "click", "ref": button})
    assert out.startswith(f"click {button}: done") and "Clicked: yes" in out


async def test_fill_and_submit_a_form(rt: Runtime, pages: int) -> None:
    await _ok(rt, "browser_open", {"url": f"http://127.0.0.1:{pages}/"})
    observed = await _ok(rt, "browser_observe", {})
    await _ok(rt, "browser_act", {"action": "fill", "ref": _ref(observed, "Query"),
                                  "value": "red fox"})
    assert "value='red fox'" in await _ok(rt, "browser_observe", {})
    out = await _ok(rt, "browser_act", {"action": "click", "ref": _ref(observed, "Search")})
    assert "title: Results" in out and "You searched for: red fox" in out


async def test_type_and_press_enter(rt: Runtime, pages: int) -> None:
    await _ok(rt, "browser_open", {"url": f"http://127.0.0.1:{pages}/"})
    observed = await _ok(rt, "browser_observe", {})
    field = next(line for line in observed.splitlines() if "press here" in line).split()[0]
    await _ok(rt, "browser_act", {"action": "type", "ref": field, "value": "abc"})
    out = await _ok(rt, "browser_act", {"action": "press", "ref": field, "value": "Enter"})
    assert "Pressed: Enter" in out
    # The form's field, Enter: the form is submitted.
    await _ok(rt, "browser_act", {"action": "type", "ref": _ref(observed, "Query"),
                                  "value": "typed"})
    out = await _ok(rt, "browser_act", {"action": "press", "ref": _ref(observed, "Query"),
                                        "value": "Enter"})
    assert "You searched for: typed" in out


async def test_select_and_check(rt: Runtime, pages: int) -> None:
    await _ok(rt, "browser_open", {"url": f"http://127.0.0.1:{pages}/"})
    observed = await _ok(rt, "browser_observe", {})
    assert "select 'Size' value='s'" in observed and "'Agree' unchecked" in observed
    await _ok(rt, "browser_act", {"action": "select", "ref": _ref(observed, "Size"),
                                  "value": "Large"})
    await _ok(rt, "browser_act", {"action": "check", "ref": _ref(observed, "Agree")})
    after = await _ok(rt, "browser_observe", {})
    assert "select 'Size' value='l'" in after and "'Agree' checked" in after


async def test_scroll(rt: Runtime, pages: int) -> None:
    await _ok(rt, "browser_open", {"url": f"http://127.0.0.1:{pages}/"})
    far = _ref(await _ok(rt, "browser_observe", {}), "Far away")
    # A screenshot of the top does not hold the far button; scrolling moves the page.
    position = "() => window.scrollY"
    await _ok(rt, "browser_act", {"action": "scroll", "value": "down"})
    async with _page(rt) as page:
        assert await page.evaluate(position) > 0
    await _ok(rt, "browser_act", {"action": "scroll", "ref": far})
    async with _page(rt) as page:
        assert await page.evaluate(position) > 2000
    out = await _ok(rt, "browser_act", {"action": "click", "ref": far})
    assert "far clicked" in out


async def test_screenshot_into_the_workspace(rt: Runtime, pages: int) -> None:
    await _ok(rt, "browser_open", {"url": f"http://127.0.0.1:{pages}/"})
    out = await _ok(rt, "browser_screenshot", {"path": "shots/home.png"})
    assert "to shots/home.png" in out
    agent = await rt.get_agent("web")
    shot = rt.settings.workspaces_dir / agent.id / "shots" / "home.png"
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


async def test_screenshot_paths_stay_in_the_workspace(rt: Runtime, pages: int,
                                                      tmp_path: Path) -> None:
    await _ok(rt, "browser_open", {"url": f"http://127.0.0.1:{pages}/"})
    agent = await rt.get_agent("web")
    workspace = rt.settings.workspaces_dir / agent.id
    outside = tmp_path / "outside"
    outside.mkdir()
    (workspace / "link").symlink_to(outside)
    for path in ("../escape.png", "/tmp/escape.png", "link/escape.png"):
        finished = await _call(rt, "browser_screenshot", {"path": path})
        assert finished["is_error"], (path, finished)
        assert "workspace" in finished["output"] or "link" in finished["output"], finished
    assert not list(outside.iterdir())
    assert not (workspace.parent / "escape.png").exists()


async def test_a_new_tab_becomes_the_page(rt: Runtime, pages: int) -> None:
    await _ok(rt, "browser_open", {"url": f"http://127.0.0.1:{pages}/"})
    link = _ref(await _ok(rt, "browser_observe", {}), "New tab")
    await _ok(rt, "browser_act", {"action": "click", "ref": link})
    observed = await _ok(rt, "browser_observe", {})
    assert f"url: http://127.0.0.1:{pages}/second" in observed


async def test_sessions_have_pages_of_their_own(rt: Runtime, pages: int) -> None:
    await _ok(rt, "browser_open", {"url": f"http://127.0.0.1:{pages}/second"}, key="one")
    finished = await _call(rt, "browser_observe", {}, key="two")
    assert finished["is_error"] and "browser_open first" in finished["output"]
    assert "tainted" not in finished  # nothing came in
    assert "/second" in await _ok(rt, "browser_observe", {}, key="one")


# -- bad input -------------------------------------------------------------------------


async def test_a_page_that_never_finishes_loading(rt: Runtime, pages: int) -> None:
    finished = await _call(rt, "browser_open", {"url": f"http://127.0.0.1:{pages}/never"})
    assert finished["is_error"]
    assert "did not load within 5s" in finished["output"], finished
    assert "navigation_timeout_s" in finished["output"]
    # The daemon goes on, and so does the browser.
    out = await _ok(rt, "browser_open", {"url": f"http://127.0.0.1:{pages}/second"})
    assert "This is the second page." in out


async def test_a_page_that_hangs_its_renderer(settings: Settings, tmp_path: Path,
                                              pages: int) -> None:
    """A page whose script never yields: the call ends at call_timeout_s saying so,
    the page is closed, and the session can open another."""
    settings.database_url = f"sqlite:///{tmp_path / 'agentd.db'}"
    settings.sandbox = settings.sandbox.model_copy(
        update={"private_endpoints": [f"127.0.0.1:{pages}"]})
    settings.browser = BrowserConfig(enabled=True, executable=CHROMIUM, call_timeout_s=6,
                                     action_timeout_s=3, navigation_timeout_s=3)
    rt = await Runtime.open(settings)
    try:
        await rt.create_agent(name="web", model="scripted", tools=_TOOLS,
                              settings={"policy": {"network": True, "rules": _ALLOW}})
        await _ok(rt, "browser_open", {"url": f"http://127.0.0.1:{pages}/hang"})
        button = _ref(await _ok(rt, "browser_observe", {}), "Hang")
        # The click's handler never returns: the click times out (action_timeout_s),
        # or reading the page after it does (call_timeout_s).
        stuck = await _call(rt, "browser_act", {"action": "click", "ref": button})
        assert stuck["is_error"], stuck
        if "call_timeout_s" not in stuck["output"]:
            assert "timed out" in stuck["output"], stuck
            stuck = await _call(rt, "browser_observe", {})
        assert stuck["output"] == ("the browser did not finish within 6s ([browser] "
                                   "call_timeout_s); the page was closed")
        gone = await _call(rt, "browser_observe", {})
        assert gone["is_error"] and "browser_open first" in gone["output"], gone
        out = await _ok(rt, "browser_open", {"url": f"http://127.0.0.1:{pages}/second"})
        assert "This is the second page." in out
    finally:
        await rt.close()


@pytest.mark.parametrize(("arguments", "expected"), [
    ({"action": "click"}, "click needs a ref"),
    ({"action": "click", "ref": "#b"}, "ref must look like e12"),
    ({"action": "fill", "ref": "e1"}, "fill needs a value"),
    ({"action": "press", "value": "Enter; rm -rf"}, "not a key"),
    ({"action": "scroll", "value": "sideways"}, '"down" or "up"'),
    ({"action": "jump", "ref": "e1"}, "action"),
])
async def test_bad_actions_are_refused(rt: Runtime, pages: int, arguments: dict[str, Any],
                                       expected: str) -> None:
    finished = await _call(rt, "browser_act", arguments)
    assert finished["is_error"] and expected in finished["output"], finished


async def test_an_unknown_ref(rt: Runtime, pages: int) -> None:
    await _ok(rt, "browser_open", {"url": f"http://127.0.0.1:{pages}/"})
    finished = await _call(rt, "browser_act", {"action": "click", "ref": "e999"})
    assert finished["is_error"] and "no element e999" in finished["output"]


@pytest.mark.parametrize("url", ["file:///etc/passwd", "chrome://settings",
                                 "view-source:http://127.0.0.1/", "data:text/html,hi",
                                 "javascript:alert(1)", "not a url",
                                 "http://[::1"])
async def test_only_http_urls_are_opened(rt: Runtime, url: str) -> None:
    finished = await _call(rt, "browser_open", {"url": url})
    assert finished["is_error"], finished
    assert ("only http:// and https://" in finished["output"]
            or "not a URL" in finished["output"]), finished
    assert "tainted" not in finished


async def test_a_huge_url_is_refused(rt: Runtime) -> None:
    finished = await _call(rt, "browser_open", {"url": "http://a.example/" + "x" * 9000})
    assert finished["is_error"] and "longer than 8192" in finished["output"]
    assert rt.browsers is not None and rt.browsers.running == 0


# -- the network policy ----------------------------------------------------------------


async def test_no_grant_no_browser(rt: Runtime, pages: int) -> None:
    await rt.create_agent(name="offline", model="scripted", tools=_TOOLS,
                          settings={"policy": {"rules": _ALLOW}})
    for name, arguments in [("browser_open", {"url": f"http://127.0.0.1:{pages}/"}),
                            ("browser_observe", {}), ("browser_screenshot", {})]:
        finished = await _call(rt, name, arguments, agent="offline")
        assert finished["is_error"] and "no network" in finished["output"], finished
        assert "tainted" not in finished
    assert rt.browsers is not None and rt.browsers.running == 0  # nothing started


async def test_a_grant_for_other_hosts_reaches_nothing(rt: Runtime, pages: int) -> None:
    await rt.create_agent(name="narrow", model="scripted", tools=_TOOLS,
                          settings={"policy": {"network": ["example.org"], "rules": _ALLOW}})
    finished = await _call(rt, "browser_open", {"url": f"http://127.0.0.1:{pages}/"},
                           agent="narrow")
    assert finished["is_error"], finished
    assert "not granted for '127.0.0.1'" in finished["output"], finished


async def test_pages_cannot_reach_the_daemon_or_private_addresses(
        rt: Runtime, pages: int, canary: tuple[int, Path], daemon_port: int) -> None:
    canary_port, hits = canary
    url = f"http://127.0.0.1:{pages}/attack?daemon={daemon_port}&canary={canary_port}"
    opened = await _ok(rt, "browser_open", {"url": url})
    async with _page(rt) as page:
        await page.evaluate("() => window.done")
        text = await page.inner_text("#log")
    for name in ("daemon", "daemon-localhost", "canary", "metadata", "file"):
        assert f"{name} blocked" in text, text
    assert "REACHED" not in text
    assert _Daemon.hits == [] and hits.read_text() == ""
    # The model is told what was refused, and why (as the page went on).
    out = opened + await _ok(rt, "browser_observe", {})
    assert "[requests refused by the network policy]" in out
    assert "daemon's own port" in out and "not a public address" in out, out


async def test_webrtc_sends_no_udp(pages: int) -> None:
    """UDP cannot go through the proxy: WebRTC gathers no UDP candidate and sends no
    STUN packet (which would reach any address, and tell the host's own). Checked
    where Chromium shares the host's network (a daemon that is not root); under root
    its network namespace has nothing but the proxy anyway."""
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    udp.setblocking(False)
    browsers = Browsers(BrowserConfig(enabled=True, executable=CHROMIUM), isolate=False)
    try:
        port = udp.getsockname()[1]
        rules = EgressRules.of([f"127.0.0.1:{pages}"])
        async with browsers.tab("a", "s", True, rules) as tab:
            await tab.page.goto(f"http://127.0.0.1:{pages}/webrtc?port={port}")
            candidates = await tab.page.evaluate("() => window.done")
        assert not [c for c in candidates if " udp " in c.lower()], candidates
        with pytest.raises(BlockingIOError):
            udp.recvfrom(2048)  # gathering is over: a STUN request would be here
    finally:
        udp.close()
        await browsers.close()


async def test_a_redirect_to_a_private_address_is_refused(
        rt: Runtime, pages: int, canary: tuple[int, Path]) -> None:
    canary_port, hits = canary
    finished = await _call(rt, "browser_open", {
        "url": f"http://127.0.0.1:{pages}/to-private?canary={canary_port}"})
    assert finished["is_error"], finished
    assert f"127.0.0.1:{canary_port}/redirected" in finished["output"]
    assert "private_endpoints" in finished["output"], finished
    assert finished["tainted"]  # the server answered: what it said is in the error
    assert hits.read_text() == ""


async def test_the_daemons_port_even_when_listed(rt: Runtime, daemon_port: int) -> None:
    for host in ("127.0.0.1", "localhost"):
        finished = await _call(rt, "browser_open", {"url": f"http://{host}:{daemon_port}/"})
        assert finished["is_error"] and "daemon's own port" in finished["output"], finished
        assert "tainted" not in finished  # refused before anything was sent
    assert _Daemon.hits == []


async def test_a_page_cannot_navigate_to_a_file(rt: Runtime, pages: int) -> None:
    out = await _ok(rt, "browser_open", {"url": f"http://127.0.0.1:{pages}/to-file"})
    assert "root:" not in out
    observed = await _ok(rt, "browser_observe", {})
    assert f"url: http://127.0.0.1:{pages}/to-file" in observed, observed


async def test_on_the_hosts_network_the_proxy_wants_its_secret(pages: int) -> None:
    """Where Chromium shares the host's network (a daemon that is not root), its proxy
    listens on a loopback port: another local process that finds it gets a 407, not
    the agent's grant; Chromium, which has the secret, gets through."""
    browsers = Browsers(BrowserConfig(enabled=True, executable=CHROMIUM), isolate=False)
    try:
        rules = EgressRules.of([f"127.0.0.1:{pages}"])
        async with browsers.tab("a", "s", True, rules) as tab:
            await tab.page.goto(f"http://127.0.0.1:{pages}/second")
            assert "This is the second page." in await tab.page.inner_text("body")
        [entry] = browsers._browsers.values()
        assert entry.inlet is None and entry.proxy._server is not None
        port = entry.proxy._server.sockets[0].getsockname()[1]
        for auth in ("", "Proxy-Authorization: Basic YWdlbnRkOndyb25n\r\n"):  # wrong
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(f"GET http://127.0.0.1:{pages}/second HTTP/1.1\r\nHost: x\r\n"
                         f"{auth}\r\n".encode())
            answer = (await reader.read()).decode()
            writer.close()
            assert answer.startswith("HTTP/1.1 407"), answer
            assert "second page" not in answer
    finally:
        await browsers.close()
    assert browsers.running == 0


@pytest.mark.skipif(os.geteuid() != 0, reason="only a root daemon confines Chromium")
async def test_under_root_chromium_runs_confined(rt: Runtime, pages: int) -> None:
    """As the agent's own uid, in a network namespace of its own (only the proxy)."""
    await _ok(rt, "browser_open", {"url": f"http://127.0.0.1:{pages}/second"})
    agent = await rt.get_agent("web")
    ids = await rt.sandboxes.user(agent.id)
    assert ids is not None
    mine = os.readlink("/proc/self/ns/net")
    found = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            if "chrom" not in Path(f"/proc/{pid}/comm").read_text():
                continue
            status = Path(f"/proc/{pid}/status").read_text().splitlines()
            netns = os.readlink(f"/proc/{pid}/ns/net")
        except OSError:
            continue
        uid = next(line.split()[1:] for line in status if line.startswith("Uid:"))
        caps = next(line.split()[1] for line in status if line.startswith("CapEff:"))
        if ppid_chain_has(int(pid), os.getpid()):
            found += 1
            assert uid == [str(ids[0])] * 4, (pid, uid)
            assert netns != mine, pid
            # No capability, but in the user namespace of Chromium's own sandbox.
            if os.readlink(f"/proc/{pid}/ns/user") == os.readlink("/proc/self/ns/user"):
                assert int(caps, 16) == 0, (pid, caps)
    assert found, "no Chromium below this process"


def ppid_chain_has(pid: int, ancestor: int) -> bool:
    while pid > 1:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return False
        pid = int(stat[stat.rindex(")") + 2:].split()[1])
        if pid == ancestor:
            return True
    return False


# -- policy and lifecycle --------------------------------------------------------------


async def test_acting_in_a_tainted_session_asks_by_default(
        rt: Runtime, pages: int) -> None:
    """browser_act can send data out (a form): after a page was read, the default
    policy asks a person, as for http_fetch."""
    await rt.create_agent(name="careful", model="scripted", tools=_TOOLS,
                          settings={"policy": {"network": True}})
    await _ok(rt, "browser_open", {"url": f"http://127.0.0.1:{pages}/"}, agent="careful")
    assert (await _ok(rt, "browser_observe", {}, agent="careful")).startswith("url:")
    current = await rt.get_agent("careful")
    settings = {**current.settings, "script": [
        {"tool_calls": [{"name": "browser_act", "arguments": {"action": "click",
                                                               "ref": "e0"}}]},
        {"text": "done"}]}
    await rt.update_agent("careful", {"settings": settings})
    sent = await rt.send("careful", "s", "go")
    from tests.conftest import eventually

    async def waiting() -> bool:
        run, _, _ = await rt.get_run(sent.run.id)
        return run.status == "waiting_approval"

    await eventually(waiting, what="the click to wait for approval")
    await rt.cancel_run(sent.run.id)


async def test_browsers_close_with_sleep_and_limits(settings: Settings, tmp_path: Path,
                                                    pages: int) -> None:
    settings.database_url = f"sqlite:///{tmp_path / 'agentd.db'}"
    settings.sandbox = settings.sandbox.model_copy(
        update={"private_endpoints": [f"127.0.0.1:{pages}"]})
    settings.browser = BrowserConfig(enabled=True, executable=CHROMIUM, max_browsers=1)
    rt = await Runtime.open(settings)
    try:
        for name in ("one", "two"):
            await rt.create_agent(name=name, model="scripted", tools=_TOOLS,
                                  settings={"policy": {"network": True, "rules": _ALLOW}})
        assert rt.browsers is not None
        await _ok(rt, "browser_open", {"url": f"http://127.0.0.1:{pages}/"}, agent="one")
        await _ok(rt, "browser_open", {"url": f"http://127.0.0.1:{pages}/"}, agent="two")
        assert rt.browsers.running == 1  # one's (idle) browser made way
        finished = await _call(rt, "browser_observe", {}, agent="one")
        assert finished["is_error"] and "browser_open first" in finished["output"]
        two = await rt.get_agent("two")
        await rt.browsers.close_agent(two.id)
        assert rt.browsers.running == 0
    finally:
        await rt.close()
    assert rt.browsers.running == 0


async def test_the_tools_exist_only_when_enabled(settings: Settings, tmp_path: Path
                                                 ) -> None:
    settings.database_url = f"sqlite:///{tmp_path / 'agentd.db'}"
    rt = await Runtime.open(settings)
    try:
        assert rt.tools.get("browser_open") is None and rt.browsers is None
        with pytest.raises(InvalidInput, match="browser_open"):
            await rt.create_agent(name="w", model="scripted", tools=["browser_open"])
    finally:
        await rt.close()


async def test_enabled_without_chromium_stops_the_daemon(settings: Settings,
                                                         tmp_path: Path) -> None:
    settings.database_url = f"sqlite:///{tmp_path / 'agentd.db'}"
    settings.browser = BrowserConfig(enabled=True, executable=str(tmp_path / "nochrome"))
    with pytest.raises(InvalidInput, match=r"browser\.enabled: no Chromium at"):
        await Runtime.open(settings)


async def test_a_chromium_that_does_not_start(settings: Settings, tmp_path: Path,
                                              pages: int) -> None:
    """The call fails saying so; the daemon goes on (the next call tries again)."""
    broken = tmp_path / "chromium"
    broken.write_text("#!/bin/sh\necho 'no display, no luck' >&2\nexit 3\n")
    broken.chmod(0o755)
    settings.database_url = f"sqlite:///{tmp_path / 'agentd.db'}"
    settings.browser = BrowserConfig(enabled=True, executable=str(broken),
                                     navigation_timeout_s=10)
    rt = await Runtime.open(settings)
    try:
        await rt.create_agent(name="web", model="scripted", tools=_TOOLS,
                              settings={"policy": {"network": True, "rules": _ALLOW}})
        for _ in range(2):
            finished = await _call(rt, "browser_open",
                                   {"url": f"http://127.0.0.1:{pages}/second"})
            assert finished["is_error"], finished
            assert finished["output"].startswith("the browser did not start"), finished
            assert "tainted" not in finished  # nothing was reached
        assert rt.browsers is not None and rt.browsers.running == 0
    finally:
        await rt.close()


def test_the_tools_metadata() -> None:
    from agentd.browser import BROWSER_TOOLS

    spec = {name: (t.needs_network, t.untrusted_output, t.read_only)
            for name, t in BROWSER_TOOLS.items()}
    assert spec == {"browser_open": (True, True, False),
                    "browser_observe": (False, True, True),
                    "browser_act": (True, True, False),
                    "browser_screenshot": (False, True, False)}
    assert json.dumps(BROWSER_TOOLS["browser_act"].parameters)


def test_policy_lets_a_hostless_network_tool_run_under_any_grant() -> None:
    """browser_act names no host (it acts on the open page, each request checked):
    a grant of some hosts lets it run; no grant does not. http_fetch is unchanged."""
    from agentd.browser import BROWSER_TOOLS
    from agentd.runtime._toolsteps import facts_of
    from agentd.security.policy import Policy, PolicyConfig

    act = facts_of(BROWSER_TOOLS["browser_act"])
    opened = facts_of(BROWSER_TOOLS["browser_open"])
    some = Policy(daemon=PolicyConfig(), agent=PolicyConfig(network=("example.org",)))
    none = Policy(daemon=PolicyConfig(), agent=PolicyConfig())
    assert some.decide(act, {"action": "click", "ref": "e1"}).action == "allow"
    assert none.decide(act, {"action": "click", "ref": "e1"}).action == "deny"
    assert some.decide(opened, {"url": "http://example.org/"}).action == "allow"
    assert some.decide(opened, {"url": "http://other.org/"}).action == "deny"
    # Once the session is tainted, acting asks (it can send data out: a form).
    assert some.decide(act, {"action": "click", "ref": "e1"}, tainted=True).action == "ask"
