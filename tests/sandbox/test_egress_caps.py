"""Egress connections one tenant cannot take from another (issue 27, chain 6): every
connection through an egress proxy is admitted against the daemon's, the agent's and
its tenant's caps (503 naming the cap), no two agents share a proxy, the daemon raises
its descriptor limit and keeps its cap well under it, and the API keeps answering
while an agent holds every connection it may. Real proxies, real sockets, a real
upstream in a process of its own, real sandboxes end to end."""

from __future__ import annotations

import asyncio
import resource
import shlex
import sqlite3
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from tests.conftest import eventually, free_port, wait_for_port, wait_until

from agentd.client import Client
from agentd.config import SandboxConfig, Settings
from agentd.errors import InvalidInput
from agentd.runtime.sandboxes import Sandboxes
from agentd.sandbox.caps import TenantCaps
from agentd.sandbox.connections import Owner
from agentd.sandbox.egress import EgressProxy
from agentd.testing.live import LiveServer


@pytest.fixture(scope="module")
def upstream() -> Iterator[int]:
    """A TCP service that keeps every connection open (http.server: a tunnel to it
    waits for a request), in a process of its own (a port of the test's own process
    is the daemon's, which no setting opens)."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "http.server", "--bind", "127.0.0.1",
                             str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    wait_for_port(port, proc, what="the upstream")
    yield port
    proc.kill()
    proc.wait()


class Held:
    """Connections a test opened through proxies, closed after it."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.writers: list[asyncio.StreamWriter] = []

    async def open(self, proxy: EgressProxy) -> str:
        """One CONNECT to the upstream through ``proxy``: ``"200"``, or the refusal's
        status and body."""
        reader, writer = await asyncio.open_unix_connection(await proxy.socket_path())
        self.writers.append(writer)
        target = f"127.0.0.1:{self.port}"
        writer.write(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
        await writer.drain()
        head = (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 20)).decode()
        status = head.split()[1]
        if status == "200":
            return status
        body = await asyncio.wait_for(reader.read(), 20)
        return f"{status} {body.decode().strip()}"

    async def close(self) -> None:
        for writer in self.writers:
            writer.close()
        self.writers = []


@pytest.fixture
async def held(upstream: int) -> AsyncIterator[Held]:
    made = Held(upstream)
    yield made
    await made.close()


def sandboxes(upstream: int, **config: object) -> Sandboxes:
    return Sandboxes(SandboxConfig(private_endpoints=[f"127.0.0.1:{upstream}"],
                                   **config))  # type: ignore[arg-type]


async def settled(sandboxes: Sandboxes, held_now: int) -> None:
    """Once the daemon's count is ``held_now`` (a closed connection is released when
    the proxy sees the close)."""
    await eventually(lambda: sandboxes.connections.held == held_now,
                     what=lambda: f"{sandboxes.connections.held} held, not {held_now}")


async def test_an_agent_past_its_cap_gets_503s_while_another_tenants_agent_connects(
        upstream: int, held: Held) -> None:
    """On main one proxy per grant, shared by every tenant, with 256 connections for
    all of them: the first agent's six all went through."""
    box = sandboxes(upstream, egress_max_per_agent=4)
    try:
        grant = ("127.0.0.1",)
        mine = await box.egress.get(grant, Owner(tenant="t1", agent="a1"))
        theirs = await box.egress.get(grant, Owner(tenant="t2", agent="a2"))
        assert mine is not theirs and mine.path != theirs.path  # not shared
        answers = [await held.open(mine) for _ in range(6)]
        assert answers[:4] == ["200"] * 4, answers
        for refused in answers[4:]:
            assert refused.startswith("503 ") and "egress_max_per_agent" in refused
            assert "this agent holds its cap of 4" in refused
        assert await held.open(theirs) == "200"  # another tenant's agent is not held up
        assert box.connections.of_agent("a1") == 4 and box.connections.held == 5
        await held.close()  # closing frees the count
        await settled(box, 0)
        assert await held.open(mine) == "200"
    finally:
        await box.close()


async def test_the_daemons_cap_holds_over_every_agent_and_no_tenant_takes_it_all(
        upstream: int, held: Held) -> None:
    """A tenant with no cap of its own holds at most three quarters of the daemon's
    cap (here 6 of 8): another tenant still connects, until the daemon's cap."""
    box = sandboxes(upstream, egress_max_connections=8, egress_max_per_agent=100)
    try:
        first = await box.egress.get(True, Owner(tenant="t1", agent="a1"))
        second = await box.egress.get(True, Owner(tenant="t1", agent="a2"))
        answers = [await held.open(p) for p in (first, second) for _ in range(4)]
        assert answers.count("200") == 6, answers
        assert all("three quarters" in a and a.startswith("503") for a in answers[6:])
        other = await box.egress.get(True, Owner(tenant="t2", agent="b1"))
        answers = [await held.open(other) for _ in range(3)]
        assert answers[:2] == ["200", "200"], answers
        assert "egress_max_connections" in answers[2] and answers[2].startswith("503")
        assert box.connections.held == 8
    finally:
        await box.close()


async def test_a_tenant_holds_at_most_its_cap_of_connections(upstream: int,
                                                             held: Held) -> None:
    box = sandboxes(upstream, egress_max_per_agent=100)
    caps = {"t1": TenantCaps(egress_connections=3)}
    box.caps_of = lambda tenant: caps.get(tenant, TenantCaps())
    try:
        a1 = await box.egress.get(True, Owner(tenant="t1", agent="a1"))
        a2 = await box.egress.get(True, Owner(tenant="t1", agent="a2"))
        answers = [await held.open(a1), await held.open(a1), await held.open(a2),
                   await held.open(a2)]
        assert answers[:3] == ["200"] * 3, answers
        assert answers[3].startswith("503 ") and "tenant 't1'" in answers[3]
        assert "quota of 3 egress connections" in answers[3]
        b1 = await box.egress.get(True, Owner(tenant="t2", agent="b1"))
        assert await held.open(b1) == "200"
    finally:
        await box.close()


async def test_a_deleted_agents_proxies_close_and_grants_cannot_pile_them_up(
        upstream: int, held: Held, tmp_path: Path) -> None:
    box = sandboxes(upstream)
    try:
        owner = Owner(tenant="t1", agent="a1")
        proxies = [await box.egress.get((f"h{i}.example",), owner) for i in range(10)]
        assert box.egress.count == 4  # the agent's four most recent grants
        live = await box.egress.get(("127.0.0.1",), owner)
        assert await held.open(live) == "200"
        await box.forget(tmp_path / "ws", "a1")
        await settled(box, 0)
        assert box.egress.count == 0
        assert all(not Path(p.path).exists() for p in [*proxies, live])
    finally:
        await box.close()


async def test_the_descriptor_limit_is_raised_and_the_cap_kept_well_under_it(
        upstream: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard < 64:
        pytest.skip(f"hard limit {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(soft, hard // 2), hard))
    try:
        box = sandboxes(upstream)
        await box.start()
        assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == hard == box.fd_limit
        assert box.connections.total == max(hard // 8, 16)
        health = box.health()
        assert (health["fd_limit"], health["egress_max_connections"]) == (
            hard, box.connections.total)
        await box.close()
        too_many = sandboxes(upstream, egress_max_connections=hard // 4 + 1)
        with pytest.raises(InvalidInput) as refused:
            await too_many.start()
        assert "sandbox.egress_max_connections" in refused.value.message
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


# -- end to end: a real daemon, real sandboxes --------------------------------------------

HOLD = r"""
import os, socket, sys, time
proxy = os.environ["HTTP_PROXY"].rsplit(":", 1)
target, n = sys.argv[1], int(sys.argv[2])
held, answers = [], []
for _ in range(n):
    s = socket.create_connection((proxy[0].split("//")[1], int(proxy[1])), timeout=20)
    s.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
    head = s.recv(4096).decode()
    answers.append(head.split()[1] + (" " + head.split("\r\n\r\n", 1)[1].strip()
                                      if " 200 " not in head else ""))
    held.append(s)
open("held", "w").write("\n".join(answers))
deadline = time.time() + 120
while sys.argv[3:] == ["wait"] and not os.path.exists("release") and (
        time.time() < deadline):
    time.sleep(0.05)
print("\n".join(answers))
"""


def agent_id(tmp_path: Path, name: str) -> str:
    with sqlite3.connect(tmp_path / "agentd.db") as db:
        found: str = db.execute("SELECT id FROM agents WHERE name = ?", (name,)).fetchone()[0]
    return found


def test_the_api_answers_while_an_agent_holds_every_connection_it_may(
        tmp_path: Path, upstream: int) -> None:
    token = "caps-test-token-0123456789abcdef"
    target = f"127.0.0.1:{upstream}"
    settings = Settings(home=tmp_path / "home", demo_agent=False, tokens=[token],
                        database_url=f"sqlite:///{tmp_path / 'agentd.db'}",
                        sandbox=SandboxConfig(private_endpoints=[target],
                                              egress_max_per_agent=4))
    shell = {"policy": {"network": ["127.0.0.1"],
                        "rules": [{"tool": "shell", "action": "allow"}]}}
    with LiveServer(settings) as live, Client(live.url, token=token, timeout=120) as client:
        for name, tenant, count in (("hog", "t1", "6 wait"), ("other", "t2", "1")):
            command = f"python3 -c {shlex.quote(HOLD)} {target} {count}"
            client.create_agent(name, model="scripted", tools=["shell"], settings={
                **shell, "tenant": tenant,
                "script": [{"tool_calls": [{"name": "shell", "arguments": {
                    "command": command}}]}, {"text": "done"}]})
        hog = settings.workspaces_dir / agent_id(tmp_path, "hog")
        done: dict[str, object] = {}
        thread = threading.Thread(target=lambda: done.update(
            reply=client.send("hog", "k", "go")))
        thread.start()
        # The hog holds its four, was refused two, and waits.
        wait_until(lambda: (hog / "held").exists() or not thread.is_alive(),
                   what="the hog holding its connections")
        assert (hog / "held").exists(), done
        # The daemon answers, and another tenant's agent gets its connection.
        health = httpx.get(f"{live.url}/health", timeout=10)
        assert health.status_code == 200
        assert health.json()["egress_connections"] >= 4
        other = settings.workspaces_dir / agent_id(tmp_path, "other")
        reply = client.send("other", "k", "go")
        assert (other / "held").exists(), reply
        assert (other / "held").read_text() == "200"
        (hog / "release").touch()
        thread.join(timeout=120)
    answers = (hog / "held").read_text().splitlines()
    assert answers[:4] == ["200"] * 4, answers
    assert all(a.startswith("503 ") and "egress_max_per_agent" in a for a in answers[4:])
