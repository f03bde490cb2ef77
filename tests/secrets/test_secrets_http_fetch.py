"""`settings.http_headers`: headers http_fetch adds for a host, `secret:NAME` resolved
as the request is sent: only past the network grant, never on a redirect to another
host, never replaced by the model's; in a run, the value is redacted out of what the
server echoed and the use is audited. A real local HTTP server; SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import secrets
import subprocess
import sys
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from agentd.assembly import Runtime
from agentd.config import SandboxConfig, Settings
from agentd.errors import NotFound, ToolError
from agentd.sandbox.backends import Limits
from agentd.sandbox.context import Sandbox
from agentd.sandbox.egress import EgressRules
from agentd.tools import NET_TOOLS, ToolContext

ROOT = Path(__file__).resolve().parents[2]
VALUE = "fetch-secret-" + secrets.token_hex(10)


class _Echo(BaseHTTPRequestHandler):
    """Answers with the X-Tag header it got; ``/to/URL`` redirects there."""

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        if self.path.startswith("/to/"):
            self.send_response(302)
            self.send_header("Location", self.path[4:])
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = f"tag={self.headers.get('X-Tag')}".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def serve() -> None:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    print(httpd.server_address[1], flush=True)
    httpd.serve_forever()


@pytest.fixture(scope="module")
def port() -> Iterator[int]:
    # (In a process of its own: a port this process listens on is the daemon's own.)
    proc = subprocess.Popen([sys.executable, "-c", "from tests.secrets.test_secrets_http_"
                             "fetch import serve; serve()"], stdout=subprocess.PIPE, cwd=ROOT)
    assert proc.stdout is not None
    yield int(proc.stdout.readline())
    proc.kill()
    proc.wait()


class Book:
    """A SecretSource with one secret, that notes each use."""

    def __init__(self) -> None:
        self.uses: list[str] = []

    async def resolve(self, name: str, *, use: str) -> str:
        self.uses.append(use)
        if name != "TAG":
            raise NotFound(f"secret {name!r} not found for agent 'a'",
                           code="secret_not_found")
        return VALUE


async def _fetch(port: int, network: bool | tuple[str, ...], book: Book,
                 own: dict[str, dict[str, str]], **arguments: Any) -> str:
    ctx = ToolContext(agent="a", session="s", run_id="r", call_id="c", effect_id="e",
                      sandbox=Sandbox(backend=None, limits=Limits(), network=network,
                                      rules=EgressRules.of([f"127.0.0.1:{port}",
                                                            f"localhost:{port}"])),
                      secrets=book, http_headers=own)
    return str(await NET_TOOLS["http_fetch"].call(arguments, ctx, 30.0))


MINE = {"127.0.0.1": {"X-Tag": "Bearer secret:TAG"}}


async def test_the_hosts_header_carries_the_value_the_models_does_not_replace_it(
        port: int) -> None:
    book = Book()
    out = await _fetch(port, ("127.0.0.1",), book, MINE, url=f"http://127.0.0.1:{port}/",
                       headers={"x-tag": "from the model"})
    assert f"tag=Bearer {VALUE}" in out
    assert book.uses == ["http_fetch 127.0.0.1 header X-Tag"]


async def test_no_grant_no_header_and_no_use(port: int) -> None:
    book = Book()
    with pytest.raises(ToolError) as caught:
        await _fetch(port, ("example.com",), book, MINE, url=f"http://127.0.0.1:{port}/")
    assert caught.value.code == "network_denied" and book.uses == []


async def test_a_redirect_to_another_host_goes_without_it(port: int) -> None:
    book = Book()
    out = await _fetch(port, ("127.0.0.1", "localhost"), book, MINE,
                       url=f"http://127.0.0.1:{port}/to/http://localhost:{port}/")
    assert "tag=None" in out and VALUE not in out
    # (resolved for the first host, which answered with the redirect)
    assert book.uses == ["http_fetch 127.0.0.1 header X-Tag"]


async def test_a_missing_secret_is_a_clear_tool_error(port: int) -> None:
    with pytest.raises(ToolError) as caught:
        await _fetch(port, ("127.0.0.1",), Book(), {"127.0.0.1": {"X-Tag": "secret:NOPE"}},
                     url=f"http://127.0.0.1:{port}/")
    assert caught.value.code == "secret_not_found"
    assert "secret 'NOPE' not found" in caught.value.message
    with pytest.raises(ToolError, match="no secrets in this run"):
        ctx_headers = {"127.0.0.1": {"X-Tag": "secret:TAG"}}
        ctx = ToolContext(agent="a", session="s", run_id="r", call_id="c", effect_id="e",
                          sandbox=Sandbox(backend=None, limits=Limits(),
                                          network=("127.0.0.1",),
                                          rules=EgressRules.of([f"127.0.0.1:{port}"])),
                          http_headers=ctx_headers)
        await NET_TOOLS["http_fetch"].call({"url": f"http://127.0.0.1:{port}/"}, ctx, 30.0)


@pytest.fixture
def settings(tmp_path: Path, port: int) -> Settings:
    from tests.conftest import settings_in

    base = settings_in(tmp_path)
    return base.model_copy(update={"sandbox": SandboxConfig(
        uid_base=base.sandbox.uid_base, uid_count=base.sandbox.uid_count,
        private_endpoints=[f"127.0.0.1:{port}"])})


async def test_in_a_run_the_echo_is_redacted_and_the_use_audited(runtime: Runtime,
                                                                 port: int) -> None:
    await runtime.secrets.set(name="TAG", value=VALUE, tenant="default", agent=None,
                              actor="t", role="admin")
    await runtime.create_agent(name="a", model="scripted", tools=["http_fetch"], settings={
        "policy": {"network": ["127.0.0.1"]}, "http_headers": MINE,
        "script": [{"tool_calls": [{"name": "http_fetch", "arguments": {
            "url": f"http://127.0.0.1:{port}/"}}]}, {"text": "done"}]})
    sent = await runtime.send("a", "k", "go")
    run = await asyncio.wait_for(runtime.wait(sent.run.id), 60)
    assert run.status == "completed", run
    _, session = await runtime.get_session("a", "k")
    events = await runtime.read_events(session.id)
    [finished] = [e for e in events if e.kind == "tool.finished"]
    assert "tag=Bearer [secret:TAG]" in finished.data["output"], finished.data
    assert VALUE not in repr([e.data for e in events])
    await runtime.identity.audit.flush()
    uses = await runtime.identity.audit.page(action="secret.use")
    assert [u.details["use"] for u in uses] == ["http_fetch 127.0.0.1 header X-Tag"]


async def test_a_header_naming_a_secret_the_agent_lacks_is_refused(runtime: Runtime
                                                                   ) -> None:
    from agentd.errors import InvalidInput

    with pytest.raises(InvalidInput) as caught:
        await runtime.create_agent(name="a", model="scripted", settings={
            "http_headers": {"api.example.com": {"Authorization": "Bearer secret:NONE"}}})
    assert caught.value.details["errors"][0]["field"] == \
        "body.settings.http_headers.api.example.com.Authorization"
    for bad in ({"API.example.com": {"A": "b"}}, {"x.com": {"bad name": "b"}},
                {"x.com": {"A": "line\nbreak"}}):
        with pytest.raises(InvalidInput):
            await runtime.create_agent(name="b", model="scripted",
                                       settings={"http_headers": bad})
