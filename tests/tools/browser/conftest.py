"""Fixtures of the browser tests: the pages' server, the canary, a stand-in for the
daemon's API, and a runtime with the browser on (see ``_kit``).

The runtime (``rt``) is one per module, on the module's event loop: a runtime and a
Chromium per test cost the suite about a second of CPU each (70 tests). Each test
starts with no page open in any session (its pages are closed after it); a test
that needs a runtime of other settings opens its own."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Iterator
from http.server import ThreadingHTTPServer
from pathlib import Path

import pytest
import pytest_asyncio
from tests.conftest import settings_in
from tests.tools.browser._kit import ALLOW, CANARY, CHROMIUM, PAGES, TOOLS, DaemonStandIn, spawn

from agentd.assembly import Runtime
from agentd.config import BrowserConfig


@pytest.fixture(scope="module")
def pages() -> Iterator[int]:
    """The pages' server, in a process of its own (a port of the daemon's process
    is the daemon's own, which no setting opens)."""
    proc, port = spawn(PAGES)
    yield port
    proc.kill()
    proc.wait()


@pytest.fixture(scope="module")
def canary(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path]]:
    hits = tmp_path_factory.mktemp("canary") / "hits"
    hits.touch()
    proc, port = spawn(CANARY, str(hits))
    yield port, hits
    proc.kill()
    proc.wait()


@pytest.fixture(scope="module")
def daemon_stand_in() -> Iterator[int]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), DaemonStandIn)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd.server_address[1]
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def daemon_port(daemon_stand_in: int) -> int:
    """The stand-in's port, its hits counted from this test on."""
    DaemonStandIn.hits = []
    return daemon_stand_in


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def module_runtime(tmp_path_factory: pytest.TempPathFactory, pages: int,
                         daemon_stand_in: int) -> AsyncIterator[Runtime]:
    home = tmp_path_factory.mktemp("browser-runtime")
    settings = settings_in(home)
    settings.database_url = f"sqlite:///{home / 'agentd.db'}"
    settings.port = daemon_stand_in
    # The operator lists the pages' server, and (to no avail) the daemon's own port.
    settings.sandbox = settings.sandbox.model_copy(update={"private_endpoints": [
        f"127.0.0.1:{pages}", f"127.0.0.1:{daemon_stand_in}",
        f"localhost:{daemon_stand_in}"]})
    # 20 s: a page of the local server loaded in 5.2 s once with the suite's four
    # workers and Chromium on two cores, and took more than 10 s once with five
    # (test_a_page_holds_no_connection_...); only the page that never loads waits it.
    settings.browser = BrowserConfig(enabled=True, executable=CHROMIUM,
                                     navigation_timeout_s=20, action_timeout_s=5,
                                     call_timeout_s=30)
    runtime = await Runtime.open(settings)
    await runtime.create_agent(name="web", model="scripted", tools=TOOLS,
                               settings={"policy": {"network": True, "rules": ALLOW}})
    yield runtime
    await runtime.close()


@pytest_asyncio.fixture(loop_scope="module")
async def rt(module_runtime: Runtime) -> AsyncIterator[Runtime]:
    """The module's runtime, whose only browser is its agent ``web``'s, with no page
    open in any session."""
    yield module_runtime
    browsers = module_runtime.browsers
    assert browsers is not None
    web = (await module_runtime.get_agent("web")).id
    for agent_id, entry in list(browsers._browsers.items()):
        if agent_id != web:  # (an agent a test made: its browser goes with the test)
            await browsers.close_agent(agent_id)
            continue
        for session in list(entry.tabs):
            await browsers.discard_tab(agent_id, session)
