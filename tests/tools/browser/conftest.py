"""Fixtures of the browser tests: the pages' server, the canary, a stand-in for the
daemon's API, and a runtime with the browser on (see ``_kit``)."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Iterator
from http.server import ThreadingHTTPServer
from pathlib import Path

import pytest
from tests.tools.browser._kit import ALLOW, CANARY, CHROMIUM, PAGES, TOOLS, DaemonStandIn, spawn

from agentd.assembly import Runtime
from agentd.config import BrowserConfig, Settings


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


@pytest.fixture
def daemon_port() -> Iterator[int]:
    DaemonStandIn.hits = []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), DaemonStandIn)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd.server_address[1]
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
async def rt(settings: Settings, tmp_path: Path, pages: int, daemon_port: int
             ) -> AsyncIterator[Runtime]:
    settings.database_url = f"sqlite:///{tmp_path / 'agentd.db'}"
    settings.port = daemon_port
    # The operator lists the pages' server, and (to no avail) the daemon's own port.
    settings.sandbox = settings.sandbox.model_copy(update={"private_endpoints": [
        f"127.0.0.1:{pages}", f"127.0.0.1:{daemon_port}", f"localhost:{daemon_port}"]})
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
