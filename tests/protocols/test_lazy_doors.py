"""The A2A and MCP doors import their SDKs on their first request, not with the daemon
(agentd.protocols._lazy; docs/design-notes.md), and that first request answers as any
later one does.

The import graph is checked in a fresh interpreter (this test process has imported
the SDKs already): what ``agentd serve`` imports, then the app's whole start-up (its
lifespan opens the runtime, tool registry included), native requests, then each
door's first request, reading ``sys.modules`` at each step. The first requests to a
fresh daemon process are checked over sockets, many at once per door, with the
SDKs' own clients. (The doors' other e2e modules begin on a fresh daemon too:
tests/protocols/test_mcp_e2e.py::test_agents_are_tools_and_answer and
tests/protocols/test_a2a_e2e.py::test_the_card_describes_the_agent_and_its_endpoint
are each module's first request to its door.)
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from a2a.types.a2a_pb2 import TaskState
from a2a.utils import constants
from tests.daemons import Daemon, create_agent
from tests.protocols.test_a2a_e2e import a2a, message, reply, send
from tests.protocols.test_mcp_e2e import mcp_client

from agentd.protocols import a2a as a2a_door
from agentd.protocols._lazy import Lazy

ROOT = Path(__file__).resolve().parents[2]
#: The doors' SDKs, by their top-level packages.
SDKS = ("a2a", "mcp", "mcp_types")

_SCRIPT = r"""
import asyncio, json, sys

SDKS = ("a2a", "mcp", "mcp_types")
seen = {}

def note(step):
    seen[step] = sorted(name for name in SDKS if name in sys.modules)

import agentd.server.daemon  # what `agentd serve` runs
note("import")

import httpx
from agentd.config import Settings
from agentd.server.app import create_app

TOKEN = "lazy-doors-token-0123456789"
H = {"Authorization": f"Bearer {TOKEN}"}

async def main():
    settings = Settings(home=sys.argv[1], database_url=f"sqlite:///{sys.argv[1]}/db.sqlite",
                        demo_agent=False, tokens=[TOKEN])
    app = create_app(settings)
    async with app.router.lifespan_context(app), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://test",
            headers=H, timeout=60) as api:
        assert (await api.get("/health")).status_code == 200
        got = await api.post("/v1/agents", json={"name": "echo", "tools": ["calculator"]})
        assert got.status_code == 201, got.text
        got = await api.post("/v1/agents/echo/sessions/s/messages",
                             json={"content": "hi", "wait": True})
        assert got.json()["status"] == "completed", got.text
        note("native")
        # An unknown agent is refused before the door is built.
        missing = await api.post("/a2a/ghost", json={})
        seen["a2a_missing"] = missing.status_code
        note("a2a_refused")
        card = await api.get("/a2a/echo/.well-known/agent-card.json")
        seen["card"] = [card.status_code, card.json().get("name")]
        note("a2a")
        listed = await api.post("/mcp", json={
            "jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}, headers={
            "Accept": "application/json, text/event-stream",
            "MCP-Protocol-Version": "2025-11-25"})
        seen["tools"] = [listed.status_code, '"name":"echo"' in listed.text.replace(" ", "")]
        note("mcp")

asyncio.run(main())
print(json.dumps(seen))
"""


def test_the_door_sdks_are_imported_by_their_doors_first_requests_only(
        tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTD_")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), str(ROOT),
                                         env.get("PYTHONPATH", "")])
    done = subprocess.run([sys.executable, "-c", _SCRIPT, str(tmp_path)], env=env,
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["import"] == [], f"`agentd serve`'s imports load {seen['import']}"
    assert seen["native"] == [], f"start-up or the native API loads {seen['native']}"
    assert seen["a2a_missing"] == 404
    assert seen["a2a_refused"] == [], "a refused A2A request built the door"
    assert seen["card"] == [200, "echo"]
    assert seen["a2a"] == ["a2a"], "the A2A door's first request loads only its SDK"
    assert seen["tools"] == [200, True]
    assert seen["mcp"] == list(SDKS)


async def test_lazy_loads_off_the_loop_and_builds_once() -> None:
    loop_thread = threading.get_ident()
    loaders: list[int] = []
    built: list[object] = []
    release = threading.Event()

    def load() -> str:
        loaders.append(threading.get_ident())
        # Set by the loop below: on the loop's own thread this would never return.
        assert release.wait(60), "the load ran on the event loop (it was blocked)"
        return "module"

    def build(module: str) -> object:
        built.append(object())
        return built[-1]

    lazy: Lazy[str, object] = Lazy(load, build)
    assert lazy.built is None
    asks = [asyncio.create_task(lazy.get()) for _ in range(5)]
    for _ in range(6000):
        if loaders:
            break
        await asyncio.sleep(0.01)
    release.set()
    got = await asyncio.gather(*asks)
    assert loop_thread not in loaders
    assert len(built) == 1 and all(value is built[0] for value in got)
    assert lazy.built is built[0] and await lazy.get() is built[0]


async def test_a_failed_load_is_tried_again_by_the_next_ask() -> None:
    outcomes: list[Any] = [ImportError("not installed"), "module"]

    def load() -> str:
        outcome = outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return str(outcome)

    lazy: Lazy[str, str] = Lazy(load, lambda module: f"built from {module}")
    with pytest.raises(ImportError):
        await lazy.get()
    assert lazy.built is None
    assert await lazy.get() == "built from module"


def test_the_card_path_written_out_is_the_sdks() -> None:
    assert a2a_door.CARD_PATH == constants.AGENT_CARD_WELL_KNOWN_PATH


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    process = Daemon(tmp_path / "home", tmp_path / "agentd.log",
                     env={"AGENTD_DEMO_AGENT": "false"}, args=()).start()
    with process.client() as api:
        create_agent(api, "echo", tools=["calculator"])
    try:
        yield process
    finally:
        process.cleanup()


@pytest.mark.e2e
async def test_first_requests_at_once_to_each_door_of_a_fresh_daemon_answer(
        daemon: Daemon) -> None:
    # Both doors unbuilt: several first requests to each arrive together, so each
    # door is built while others wait for it, and every one answers.
    async def by_a2a(i: int) -> str:
        async with a2a(daemon, "echo") as client:  # fetches the card first
            [answer] = await send(client, message(f"a2a {i}", context_id=f"a2a/{i}"))
            assert answer.task.status.state == TaskState.TASK_STATE_COMPLETED
            return reply(answer.task)

    async def by_mcp(i: int) -> str:
        async with mcp_client(daemon) as client:
            result = await client.call_tool("echo", {"message": f"mcp {i}",
                                                     "session": f"mcp/{i}"})
            assert not result.is_error, result
            text: Any = result.content[0]
            return str(text.text)

    answers = await asyncio.wait_for(asyncio.gather(
        *(by_a2a(i) for i in range(4)), *(by_mcp(i) for i in range(4))), timeout=120)
    assert answers == [f"echo: a2a {i}" for i in range(4)] + [
        f"echo: mcp {i}" for i in range(4)]
    assert "Traceback" not in daemon.log()
