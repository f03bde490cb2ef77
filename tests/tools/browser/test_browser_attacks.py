"""Attacks on the browser tools: pages that fetch, iframe or redirect to the
daemon's API, an unlisted local service, a cloud metadata address, a file; WebRTC
UDP; another local process using the browser's proxy; no grant, or a grant of other
hosts. Each harm is checked not to have happened (the services count their hits),
and the model is told what was refused and why.
"""

from __future__ import annotations

import asyncio
import os
import socket
from pathlib import Path

import pytest
from tests.tools.browser._kit import (
    ALLOW,
    CHROMIUM,
    TOOLS,
    DaemonStandIn,
    call,
    ok,
    require_chromium,
    session_page,
)

from agentd.assembly import Runtime
from agentd.browser import Browsers
from agentd.config import CHROMIUM_EXECUTABLES, BrowserConfig
from agentd.sandbox.backends import ProcessBackend
from agentd.sandbox.egress import EgressRules

require_chromium()

# (``rt`` is the module's runtime, on the module's event loop: conftest.py.)
pytestmark = pytest.mark.asyncio(loop_scope="module")


# -- the network policy ----------------------------------------------------------------


async def test_no_grant_no_browser(rt: Runtime, pages: int) -> None:
    await rt.create_agent(name="offline", model="scripted", tools=TOOLS,
                          settings={"policy": {"rules": ALLOW}})
    for name, arguments in [("browser_open", {"url": f"http://127.0.0.1:{pages}/"}),
                            ("browser_observe", {}), ("browser_screenshot", {})]:
        finished = await call(rt, name, arguments, agent="offline")
        assert finished["is_error"] and "no network" in finished["output"], finished
        assert "tainted" not in finished
    agent = await rt.get_agent("offline")
    assert rt.browsers is not None and agent.id not in rt.browsers._browsers  # none started


async def test_a_grant_for_other_hosts_reaches_nothing(rt: Runtime, pages: int) -> None:
    await rt.create_agent(name="narrow", model="scripted", tools=TOOLS,
                          settings={"policy": {"network": ["example.org"], "rules": ALLOW}})
    finished = await call(rt, "browser_open", {"url": f"http://127.0.0.1:{pages}/"},
                           agent="narrow")
    assert finished["is_error"], finished
    assert "not granted for '127.0.0.1'" in finished["output"], finished


async def test_pages_cannot_reach_the_daemon_or_private_addresses(
        rt: Runtime, pages: int, canary: tuple[int, Path], daemon_port: int) -> None:
    canary_port, hits = canary
    url = f"http://127.0.0.1:{pages}/attack?daemon={daemon_port}&canary={canary_port}"
    opened = await ok(rt, "browser_open", {"url": url})
    async with session_page(rt) as page:
        await page.evaluate("() => window.done")
        text = await page.inner_text("#log")
    for name in ("daemon", "daemon-localhost", "canary", "metadata", "file"):
        assert f"{name} blocked" in text, text
    assert "REACHED" not in text
    assert DaemonStandIn.hits == [] and hits.read_text() == ""
    # The model is told what was refused, and why (as the page went on).
    out = opened + await ok(rt, "browser_observe", {})
    assert "[requests refused by the network policy]" in out
    assert "daemon's own port" in out and "not a public address" in out, out


@pytest.mark.parametrize("chromium", CHROMIUM_EXECUTABLES)
async def test_webrtc_sends_no_udp(pages: int, chromium: str) -> None:
    """UDP cannot go through the proxy: WebRTC gathers no UDP candidate and sends no
    STUN packet (which would reach any address, and tell the host's own). Checked
    where Chromium shares the host's network (a daemon that is not root); under root
    its network namespace has nothing but the proxy anyway. For each Chromium the
    tools look for: the headless shell reads another switch than the full browser
    (and gathered UDP candidates before it was given it)."""
    if not os.access(chromium, os.X_OK):
        if os.environ.get("CI"):
            pytest.fail(f"no {chromium} (scripts/test.sh installs both Chromium builds)")
        pytest.skip(f"no {chromium}")
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    udp.setblocking(False)
    browsers = Browsers(BrowserConfig(enabled=True, executable=chromium), isolate=False)
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
    finished = await call(rt, "browser_open", {
        "url": f"http://127.0.0.1:{pages}/to-private?canary={canary_port}"})
    assert finished["is_error"], finished
    assert f"127.0.0.1:{canary_port}/redirected" in finished["output"]
    assert "private_endpoints" in finished["output"], finished
    assert finished["tainted"]  # the server answered: what it said is in the error
    assert hits.read_text() == ""


async def test_the_daemons_port_even_when_listed(rt: Runtime, daemon_port: int) -> None:
    for host in ("127.0.0.1", "localhost"):
        finished = await call(rt, "browser_open", {"url": f"http://{host}:{daemon_port}/"})
        assert finished["is_error"] and "daemon's own port" in finished["output"], finished
        assert "tainted" not in finished  # refused before anything was sent
    assert DaemonStandIn.hits == []


async def test_a_page_cannot_navigate_to_a_file(rt: Runtime, pages: int) -> None:
    out = await ok(rt, "browser_open", {"url": f"http://127.0.0.1:{pages}/to-file"})
    assert "root:" not in out
    observed = await ok(rt, "browser_observe", {})
    assert f"url: http://127.0.0.1:{pages}/to-file" in observed, observed


async def test_on_the_hosts_network_the_proxy_wants_its_secret(pages: int) -> None:
    """Where Chromium shares the host's network (a daemon that is not root), its proxy
    listens on a loopback port: another local process that finds it gets a 407, not
    the agent's grant (during a call; between calls nothing); Chromium, which has the
    secret, gets through."""
    browsers = Browsers(BrowserConfig(enabled=True, executable=CHROMIUM), isolate=False)

    async def ask(port: int, auth: str) -> str:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(f"GET http://127.0.0.1:{pages}/second HTTP/1.1\r\nHost: x\r\n"
                     f"{auth}\r\n".encode())
        answer = (await reader.read()).decode()
        writer.close()
        assert "second page" not in answer
        return answer

    try:
        rules = EgressRules.of([f"127.0.0.1:{pages}"])
        async with browsers.tab("a", "s", True, rules) as tab:
            await tab.page.goto(f"http://127.0.0.1:{pages}/second")
            assert "This is the second page." in await tab.page.inner_text("body")
            [entry] = browsers._browsers.values()
            assert entry.inlet is None and entry.proxy._server is not None
            port = entry.proxy._server.sockets[0].getsockname()[1]
            for auth in ("", "Proxy-Authorization: Basic YWdlbnRkOndyb25n\r\n"):  # wrong
                answer = await ask(port, auth)
                assert answer.startswith("HTTP/1.1 407"), answer
        with pytest.raises(ConnectionError):  # between calls: dropped at once
            await ask(port, "")
    finally:
        await browsers.close()
    assert browsers.running == 0


@pytest.mark.skipif(os.geteuid() != 0, reason="only a root daemon confines Chromium")
async def test_under_root_chromium_runs_confined(rt: Runtime, pages: int) -> None:
    """As the agent's own uid, in a network namespace of its own (only the proxy),
    and where the host can be made read-only, a mount namespace of its own in which it
    is (the browser's uid may be given to another agent later: nothing of it may
    outlive the browser), with a /tmp of its own."""
    await ok(rt, "browser_open", {"url": f"http://127.0.0.1:{pages}/second"})
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
                if ProcessBackend.host_sealed() is None:
                    mounts = Path(f"/proc/{pid}/mountinfo").read_text().splitlines()
                    root = next(m.split() for m in mounts if m.split()[4] == "/")
                    assert root[5].split(",")[0] == "ro", (pid, root)
                    tmp = [m.split() for m in mounts if m.split()[4] == "/tmp"]
                    assert tmp and tmp[-1][-3:-1] == ["tmpfs", "tmpfs"], (pid, tmp)
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


async def test_a_page_holds_no_connection_of_the_daemons_after_the_call(
        rt: Runtime, pages: int) -> None:
    """A page that keeps requests open (issue 27, chain 6): during a call they are
    capped with the agent's other connections; once the call ends the browser's proxy
    drops them and refuses new ones until the next call. On main the proxy kept
    them (about 30 per browser, up to its 256) for as long as the page lived."""
    out = await ok(rt, "browser_open", {"url": f"http://127.0.0.1:{pages}/hold?n=40"})
    assert "holding" in out
    assert rt.browsers is not None
    entry = rt.browsers._browsers[(await rt.get_agent("web")).id]
    assert len(entry.proxy._tasks) == 0
    assert rt.sandboxes.connections.held == 0
    # The next call gets the network again.
    out = await ok(rt, "browser_open", {"url": f"http://127.0.0.1:{pages}/second"})
    assert "This is the second page." in out
