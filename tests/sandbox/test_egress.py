"""Egress: no network grant reaches the host's own network (loopback, the daemon's port,
link-local, private ranges) unless the operator lists that host and port, from every
backend and tool that opens a connection.

A local HTTP server on 127.0.0.1, in a process of its own, stands in for a service on
the host (the daemon, a database, a metadata endpoint); a listener of the test process
itself stands in for the daemon's own port (the proxy runs in this process, as it runs
in the daemon). There is no internet here: the "public" success paths use an endpoint
the operator lists, and the public-address logic is tested with fake resolver answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from tests.conftest import free_port, wait_for_port

from agentd.config import AgentSandbox, SandboxConfig
from agentd.errors import ToolError
from agentd.runtime.sandboxes import Sandboxes
from agentd.sandbox import ShellPool
from agentd.sandbox.backends import Backend, ExecResult, Limits, ProcessBackend
from agentd.sandbox.context import Sandbox
from agentd.sandbox.egress import (
    EgressProxies,
    EgressProxy,
    EgressRules,
    check,
    parse_endpoint,
)
from agentd.tools import COMMAND_TOOLS, ToolContext

FAST = Limits(wall_s=30.0)
GRANTS: list[bool | tuple[str, ...]] = [True, ("127.0.0.1",), ("*",)]


# -- the checker, with fake resolver answers -------------------------------------------


def _resolver(*addresses: str) -> Any:
    def resolve(host: str, port: int, **_: Any) -> list[tuple[Any, ...]]:
        family = socket.AF_INET
        return [(family, socket.SOCK_STREAM, 6, "", (address, port))
                for address in addresses]
    return resolve


def test_a_public_address_passes_and_is_pinned() -> None:
    for grant in (True, ("example.com",), ("*.com",), ("*",)):
        assert check("Example.COM.", 443, grant, EgressRules(),
                     resolve=_resolver("93.184.215.14")) == "93.184.215.14"


def test_the_grant_names_the_hosts() -> None:
    for grant in (False, ("example.org",), ()):
        with pytest.raises(ToolError) as caught:
            check("example.com", 443, grant, EgressRules(),
                  resolve=_resolver("93.184.215.14"))
        assert caught.value.code == "network_denied"
        assert "settings.policy.network" in caught.value.message


@pytest.mark.parametrize("address", [
    "127.0.0.1", "127.8.9.10", "10.0.0.5", "172.16.3.4", "192.168.1.1", "100.64.0.1",
    "169.254.169.254", "0.0.0.0", "224.0.0.251", "255.255.255.255", "::1", "::",
    "fe80::1", "fc00::1", "::ffff:127.0.0.1", "::ffff:169.254.169.254",
    "2002:7f00:1::1", "2002:a9fe:a9fe::1", "64:ff9b::a9fe:a9fe", "64:ff9b::7f00:1",
    "::7f00:1", "fec0::1", "64:ff9b:1::a9fe:a9fe", "ff02::1", "198.18.0.1", "240.0.0.1"])
def test_non_public_answers_are_refused(address: str) -> None:
    """Whatever the name: a DNS answer pointing at the host's own network, mapped or
    tunnelled addresses included, is refused."""
    with pytest.raises(ToolError) as caught:
        check("innocent.example", 80, True, EgressRules(), resolve=_resolver(address))
    assert caught.value.code == "network_denied"
    assert "not a public address" in caught.value.message
    assert '"innocent.example:80"' in caught.value.message  # what the operator may list


def test_one_private_answer_among_public_ones_refuses() -> None:
    with pytest.raises(ToolError) as caught:
        check("mixed.example", 80, True, EgressRules(),
              resolve=_resolver("93.184.215.14", "169.254.169.254"))
    assert caught.value.code == "network_denied"


def test_an_endpoint_the_operator_lists_by_host_and_port() -> None:
    rules = EgressRules.of(["db.internal:5432", "[fd00::5]:80"])
    resolve = _resolver("10.0.0.5")
    assert check("db.internal", 5432, True, rules, resolve=resolve) == "10.0.0.5"
    assert check("db.internal", 5432, ("*.internal",), rules, resolve=resolve)
    assert check("fd00::5", 80, True, rules, resolve=_resolver("fd00::5")) == "fd00::5"
    for host, port, grant in (("db.internal", 5433, True),        # another port
                              ("other.internal", 5432, True),     # another name
                              ("db.internal", 5432, ("x.org",))):  # not granted
        with pytest.raises(ToolError) as caught:
            check(host, port, grant, rules, resolve=resolve)
        assert caught.value.code == "network_denied"


def test_the_daemons_port_is_refused_even_when_listed() -> None:
    rules = EgressRules.of(["127.0.0.1:8721", "localhost:8721"], daemon_ports=[8721])
    for host in ("127.0.0.1", "localhost"):
        with pytest.raises(ToolError) as caught:
            check(host, 8721, True, rules, resolve=_resolver("127.0.0.1"))
        assert "daemon's own port" in caught.value.message


def test_an_unresolvable_name_is_a_network_error() -> None:
    def fail(*_: Any, **__: Any) -> list[tuple[Any, ...]]:
        raise socket.gaierror(-2, "Name or service not known")

    with pytest.raises(ToolError) as caught:
        check("nowhere.invalid", 80, True, EgressRules(), resolve=fail)
    assert caught.value.code == "network_error"


@pytest.mark.parametrize("text", ["db", "db:", ":80", "db:0", "db:70000", "db:x",
                                  "::1:80", ""])
def test_bad_endpoints_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_endpoint(text)
    with pytest.raises(ValidationError):
        SandboxConfig(private_endpoints=[text])


def test_private_endpoints_are_the_operators_only() -> None:
    assert SandboxConfig(private_endpoints=["DB.internal:5432"]).private_endpoints
    assert parse_endpoint("DB.internal.:5432") == ("db.internal", 5432)
    with pytest.raises(ValidationError):
        AgentSandbox.model_validate({"private_endpoints": ["127.0.0.1:8721"]})


# -- real servers, proxies and sandboxes -----------------------------------------------


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """A local HTTP service on the host's loopback, in a process of its own."""
    root = tmp_path_factory.mktemp("service")
    (root / "secret.txt").write_text("host-only-data\n")
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "http.server", "--bind", "127.0.0.1",
                             str(port)], cwd=root, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    wait_for_port(port, proc, what="the local HTTP service")
    yield port
    proc.kill()
    proc.wait()


@pytest.fixture
def own_port() -> Iterator[int]:
    """A port this process listens on: the daemon's own, as the proxy sees it."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield sock.getsockname()[1]


class Proxies:
    """The proxies a test made (closed after it), all serving sandboxes one way:
    ``inlets`` (the daemon's own network namespace per sandbox, under root) or the
    forwarder in the sandbox."""

    def __init__(self, inlets: bool) -> None:
        self.inlets = inlets
        self.made: list[EgressProxies] = []

    async def get(self, grant: bool | tuple[str, ...], listed: Sequence[str] = ()
                  ) -> EgressProxy:
        egress = EgressProxies(EgressRules.of(listed), inlets=self.inlets)
        self.made.append(egress)
        proxy = await egress.get(grant)
        await proxy.socket_path()  # (the tests below connect to it themselves)
        return proxy


@pytest.fixture(params=[True, False], ids=["inlet", "forwarder"])
async def proxies(request: pytest.FixtureRequest) -> AsyncIterator[Proxies]:
    made = Proxies(request.param)
    yield made
    for egress in made.made:
        await egress.close()


async def _ask(path: str, head: str) -> str:
    reader, writer = await asyncio.open_unix_connection(path)
    writer.write(head.encode())
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), 20)
    writer.close()
    return data.decode(errors="replace")


async def test_the_proxy_checks_each_request(proxies: Proxies, service: int,
                                             own_port: int) -> None:
    open_path = (await proxies.get(True, [f"127.0.0.1:{service}",
                                          f"127.0.0.1:{own_port}"])).path
    got = await _ask(open_path, f"GET http://127.0.0.1:{service}/secret.txt HTTP/1.1\r\n"
                                f"Host: 127.0.0.1:{service}\r\n\r\n")
    assert got.startswith("HTTP/1.0 200") and "host-only-data" in got
    tunnel = await _ask(open_path, f"CONNECT 127.0.0.1:{service} HTTP/1.1\r\n\r\n"
                                   "GET /secret.txt HTTP/1.0\r\n\r\n")
    assert tunnel.startswith("HTTP/1.1 200 Connection established")
    assert "host-only-data" in tunnel
    own = await _ask(open_path, f"CONNECT 127.0.0.1:{own_port} HTTP/1.1\r\n\r\n")
    assert own.startswith("HTTP/1.1 403") and "daemon's own port" in own
    closed = (await proxies.get(True)).path
    for head in (f"CONNECT 127.0.0.1:{service} HTTP/1.1\r\n\r\n",
                 f"GET http://localhost:{service}/secret.txt HTTP/1.1\r\n\r\n",
                 "CONNECT 169.254.169.254:80 HTTP/1.1\r\n\r\n",
                 "CONNECT [::1]:22 HTTP/1.1\r\n\r\n"):
        refused = await _ask(closed, head)
        assert refused.startswith("HTTP/1.1 403 Forbidden"), (head, refused)
        assert "X-Agentd-Egress: refused" in refused and "private_endpoints" in refused
    for head in ("nonsense\r\n\r\n", "GET /relative HTTP/1.1\r\n\r\n",
                 "CONNECT nohost HTTP/1.1\r\n\r\n", "GET ftp://x/ HTTP/1.1\r\n\r\n",
                 "GET http://[zz/ HTTP/1.1\r\n\r\n", "GET http://a:x/ HTTP/1.1\r\n\r\n"):
        assert (await _ask(closed, head)).startswith("HTTP/1.1 400"), head
    nul = await _ask(closed, "CONNECT a\x00b:80 HTTP/1.1\r\n\r\n")
    assert nul.startswith("HTTP/1.1 502") and "cannot resolve" in nul


def _isolating_or_confined(backend: Backend) -> None:
    if backend.name == "process" and ProcessBackend.network_confinement() is not None:
        pytest.skip("the process backend has no network namespace here")


CURL = "curl -sS -m 20 -o - -w ' status=%{http_code}'"
RAW = ("import socket, sys\n"
       "try:\n"
       "    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)\n"
       "    print('connected')\n"
       "except OSError as exc:\n"
       "    print('refused', exc)\n")


async def _sh(backend: Backend, ws: Path, script: str, network: EgressProxy | None
              ) -> ExecResult:
    return await backend.run(["sh", "-c", script], workspace=ws, network=network,
                             limits=FAST)


@pytest.mark.parametrize("grant", GRANTS, ids=["true", "loopback", "star"])
async def test_a_granted_sandbox_never_reaches_the_hosts_loopback(
        backend: Backend, ws: Path, proxies: Proxies, service: int,
        grant: bool | tuple[str, ...]) -> None:
    """``network: true``, ``["127.0.0.1"]``, ``["*"]``: the sandbox sees only its own
    ``lo``, a raw socket to the host's service fails, the proxy refuses it."""
    path = await proxies.get(grant)
    if backend.name == "gvisor":
        with pytest.raises(ToolError) as caught:
            await _sh(backend, ws, "true", path)
        assert caught.value.code == "network_denied"
        return
    _isolating_or_confined(backend)
    devices = await _sh(backend, ws, "tail -n +3 /proc/net/dev | cut -d: -f1", path)
    assert devices.stdout.split() == ["lo"], devices
    raw = await backend.run(["python3", "-c", RAW, "127.0.0.1", str(service)],
                            workspace=ws, network=path, limits=FAST)
    assert raw.stdout.startswith("refused"), raw
    proxied = await _sh(backend, ws, f"{CURL} http://127.0.0.1:{service}/secret.txt; "
                                     f"{CURL} https://127.0.0.1:{service}/", path)
    assert "host-only-data" not in proxied.stdout
    assert "agentd egress" in proxied.stdout and "status=403" in proxied.stdout, proxied


async def test_every_local_target_is_refused_through_the_proxy(
        backend: Backend, ws: Path, proxies: Proxies, service: int,
        own_port: int) -> None:
    """Link-local metadata, private ranges, IPv6 loopback, 0.0.0.0, names resolving
    to loopback (``localhost``, a name of the host's /etc/hosts), and the daemon's own
    port even when the operator lists it."""
    _isolating_or_confined(backend)
    if backend.name == "gvisor":
        pytest.skip("gVisor refuses every grant (test above)")
    path = await proxies.get(True, [f"127.0.0.1:{own_port}"])
    names = [line.split()[1] for line in Path("/etc/hosts").read_text().splitlines()
             if line.startswith("127.") and len(line.split()) > 1]
    targets = ["http://169.254.169.254/latest/meta-data/", "http://10.1.2.3/",
               "http://[::1]:22/", f"http://0.0.0.0:{service}/",
               f"http://localhost:{service}/", *(f"http://{name}:{service}/"
                                                 for name in names[:3]),
               f"http://127.0.0.1:{own_port}/"]
    script = "; ".join(f"{CURL} {url}; echo" for url in targets)
    result = await _sh(backend, ws, script, path)
    assert result.stdout.count("status=") == len(targets), result
    assert result.stdout.count("status=403") == len(targets), result
    assert result.stdout.count("not a public address") == len(targets) - 1
    assert "daemon's own port" in result.stdout


async def test_only_the_operators_endpoint_is_reachable(
        backend: Backend, ws: Path, proxies: Proxies, service: int) -> None:
    """Listed as "127.0.0.1:PORT": reachable through the proxy with a grant that covers
    127.0.0.1, by curl (http and a CONNECT tunnel) and python's urllib; still not by
    a raw socket (nothing leaves the sandbox but through the proxy); not with a grant
    that does not cover the host."""
    _isolating_or_confined(backend)
    if backend.name == "gvisor":
        pytest.skip("gVisor refuses every grant (test above)")
    listed = [f"127.0.0.1:{service}"]
    for grant in GRANTS:
        path = await proxies.get(grant, listed)
        result = await _sh(
            backend, ws,
            f"{CURL} http://127.0.0.1:{service}/secret.txt; echo; "
            f"{CURL} -p http://127.0.0.1:{service}/secret.txt; echo; "
            "python3 -c 'import urllib.request,sys; print(urllib.request.urlopen("
            f"\"http://127.0.0.1:{service}/secret.txt\", timeout=20).read().decode())'",
            path)
        assert result.stdout.count("host-only-data") == 3, (grant, result)
    other = await proxies.get(("example.com",), listed)
    refused = await _sh(backend, ws, f"{CURL} http://127.0.0.1:{service}/secret.txt",
                        other)
    assert "status=403" in refused.stdout and "settings.policy.network" in refused.stdout


async def test_the_persistent_shell_goes_through_the_proxy(
        backend: Backend, ws: Path, proxies: Proxies, service: int) -> None:
    _isolating_or_confined(backend)
    if backend.name == "gvisor":
        pytest.skip("gVisor refuses every grant (test above)")
    path = await proxies.get(True, [f"127.0.0.1:{service}"])
    shell = await backend.shell(workspace=ws, network=path, limits=FAST)
    try:
        listed = await shell.run(f"{CURL} http://127.0.0.1:{service}/secret.txt")
        assert "host-only-data" in listed.stdout, listed
        closed = await shell.run(f"{CURL} http://localhost:{service}/secret.txt")
        assert "status=403" in closed.stdout, closed
        raw = await shell.run(f"python3 -c {shlex.quote(RAW)} 127.0.0.1 {service}")
        assert raw.stdout.startswith("refused"), raw
        devices = await shell.run("tail -n +3 /proc/net/dev | cut -d: -f1")
        assert devices.stdout.split() == ["lo"]
    finally:
        await shell.close()


# -- the tools and the runtime ---------------------------------------------------------


async def test_the_shell_tool_gets_the_proxy_for_any_grant(
        ws: Path, service: int, proxies: Proxies) -> None:
    """Through the run's Sandbox: host patterns give commands the network too (the
    proxy enforces them), one-off and persistent; no grant, no network."""
    from agentd.sandbox import choose

    backend = choose()
    _isolating_or_confined(backend)
    if backend.name == "gvisor":
        pytest.skip("gVisor refuses every grant")
    egress = EgressProxies(EgressRules.of([f"127.0.0.1:{service}"]),
                           inlets=proxies.inlets)
    proxies.made.append(egress)
    pool = ShellPool()
    try:
        for grant, persistent in ((("127.0.0.1",), False), (True, True), (False, False)):
            sandbox = Sandbox(backend=backend, limits=FAST, network=grant, egress=egress,
                              rules=egress.rules, shells=pool, shell_key="s")
            ctx = ToolContext(agent="a", session="s", run_id="r", call_id="c",
                              effect_id="e", workspace=ws, sandbox=sandbox)
            out = str(await COMMAND_TOOLS["shell"].call(
                {"command": f"{CURL} http://127.0.0.1:{service}/secret.txt",
                 "persistent": persistent}, ctx, 60.0))
            if grant:
                assert "host-only-data" in out, (grant, out)
                assert ctx.untrusted
            else:
                assert "host-only-data" not in out and "status=000" in out, out
    finally:
        await pool.close_all()


async def test_the_runtime_owns_and_closes_its_proxies(tmp_path: Path) -> None:
    sandboxes = Sandboxes(SandboxConfig(private_endpoints=["127.0.0.1:9"]),
                          daemon_ports=(8721,))
    assert sandboxes.rules.daemon_ports == frozenset({8721})
    first = await sandboxes.egress.get(True)
    assert await sandboxes.egress.get(True) is first  # one per distinct grant
    other = await sandboxes.egress.get(("b.org", "A.org"))
    assert await sandboxes.egress.get(("a.org", "b.org")) is other is not first
    assert not Path(first.path).exists()  # listening from its first use only
    assert Path(await first.socket_path()).is_socket()
    await sandboxes.close()
    assert not Path(first.path).exists() and not Path(first.path).parent.exists()


# -- where a grant cannot be given, it is refused ----------------------------------------


async def test_gvisor_refuses_a_grant_rather_than_the_hosts_network(ws: Path) -> None:
    from agentd.sandbox.backends import GVisorBackend

    with pytest.raises(ToolError) as caught:  # before runsc is even looked for
        await GVisorBackend().run(["true"], workspace=ws,
                                  network=EgressProxy(True, EgressRules(), "/x.sock"))
    assert caught.value.code == "network_denied"


async def test_a_process_backend_without_a_network_namespace_refuses_a_grant(
        ws: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ProcessBackend, "network_confinement",
                        classmethod(lambda cls: "unshare: Operation not permitted"))
    with pytest.raises(ToolError) as caught:
        await ProcessBackend().run(["true"], workspace=ws,
                                   network=EgressProxy(True, EgressRules(), "/x.sock"))
    assert caught.value.code == "network_denied"
    assert "Operation not permitted" in caught.value.message


async def test_no_grant_no_proxy(ws: Path) -> None:
    with pytest.raises(ToolError) as caught:
        await EgressProxies(EgressRules()).get(False)
    assert caught.value.code == "network_denied"
    assert await Sandbox(backend=None, limits=FAST).proxy() is None
    with pytest.raises(ToolError) as missing:  # a grant but no proxy: no network
        await Sandbox(backend=None, limits=FAST, network=True).proxy()
    assert missing.value.code == "network_denied"


async def test_a_missing_program_behind_the_forwarder(
        backend: Backend, ws: Path, proxies: Proxies) -> None:
    _isolating_or_confined(backend)
    if backend.name == "gvisor":
        pytest.skip("gVisor refuses every grant")
    path = await proxies.get(True)
    result = await backend.run(["no-such-program-here"], workspace=ws, network=path,
                               limits=FAST)
    assert result.exit_code == 127, result


async def test_an_agent_with_the_network_reaches_only_what_the_operator_lists(
        tmp_path: Path, service: int, own_port: int) -> None:
    """End to end through the runtime: an agent granted ``network: true`` (the
    attack: reach the daemon's API or a host service) tries from the shell (one-off
    and persistent) and http_fetch. Only the listed endpoint answers."""
    from agentd.assembly import Runtime
    from agentd.config import Settings

    settings = Settings(home=tmp_path / "home", demo_agent=False, shutdown_grace_s=2.0,
                        database_url=f"sqlite:///{tmp_path / 'agentd.db'}",
                        sandbox=SandboxConfig(private_endpoints=[
                            f"127.0.0.1:{service}", f"127.0.0.1:{own_port}"]))
    runtime = await Runtime.open(settings)
    try:
        listed = f"http://127.0.0.1:{service}/secret.txt"
        unlisted = [f"http://localhost:{service}/secret.txt",
                    f"http://127.0.0.1:{own_port}/", "http://169.254.169.254/"]
        calls: list[dict[str, Any]] = []
        for url in [listed, *unlisted]:
            calls.append({"name": "http_fetch", "arguments": {"url": url}})
            for persistent in (False, True):
                calls.append({"name": "shell", "arguments": {
                    "command": f"{CURL} {url}", "persistent": persistent}})
        calls.append({"name": "shell", "arguments": {
            "command": f"python3 -c {shlex.quote(RAW)} 127.0.0.1 {service}"}})
        await runtime.create_agent(
            name="a", model="scripted", tools=["shell", "http_fetch"], settings={
                # (allowed in a tainted session too: the attack gets every call)
                "policy": {"network": True,
                           "rules": [{"tool": tool, "action": "allow", "tainted": taint}
                                     for tool in ("shell", "http_fetch")
                                     for taint in (False, True)]},
                "script": [*({"tool_calls": [call]} for call in calls), {"text": "done"}]})
        sent = await runtime.send("a", "k", "go")
        await runtime.wait(sent.run.id)
        finished = [e.data for e in await runtime.read_events(sent.session.id)
                    if e.kind == "tool.finished"]
        assert len(finished) == len(calls), finished
        texts = [str(data) for data in finished]
        assert all("host-only-data" in text for text in texts[:3]), texts[:3]
        for text in texts[3:-1]:
            assert "host-only-data" not in text
            assert "'is_error': True" in text or "status=403" in text, text
            assert "private_endpoints" in text or "daemon's own port" in text, text
        assert "refused" in texts[-1] and "connected" not in texts[-1]
    finally:
        await runtime.close()


async def test_the_proxys_socket_is_not_in_any_command_line(
        ws: Path, proxies: Proxies) -> None:
    """On the process backend other users' processes read every command line: the
    socket of a grant (and so the way to its proxy) is passed to the forwarder in
    the environment."""
    backend = ProcessBackend()
    _isolating_or_confined(backend)
    if proxies.inlets:
        pytest.skip("an inlet has no socket path to show")
    proxy = await proxies.get(True)
    # (the name goes to grep through a file: on grep's own command line it would match)
    result = await _sh(backend, ws, "basename \"$AGENTD_EGRESS_SOCKET\" > name; "
                                    "cat /proc/[0-9]*/cmdline 2>/dev/null | "
                                    "tr '\\0' ' ' | grep -c -f name; "
                                    "echo env=$AGENTD_EGRESS_SOCKET", proxy)
    assert result.stdout.split()[0] == "0", result
    assert f"env={proxy.path}" in result.stdout


async def test_inlets_are_closed_with_their_sandbox(ws: Path) -> None:
    """Each granted sandbox's namespace and listener are released when it ends (one
    left per command would pile up in a long-lived daemon)."""
    from agentd.sandbox import choose

    backend = choose()
    _isolating_or_confined(backend)
    if backend.name == "gvisor":
        pytest.skip("gVisor refuses every grant")
    egress = EgressProxies(EgressRules())
    try:
        proxy = await egress.get(True)

        def held() -> list[str]:
            found = []
            for fd in Path("/proc/self/fd").iterdir():
                with contextlib.suppress(OSError):
                    found.append(os.readlink(fd))
            return sorted(found)

        await backend.run(["true"], workspace=ws, network=proxy, limits=FAST)
        before = held()
        for _ in range(5):
            await backend.run(["true"], workspace=ws, network=proxy, limits=FAST)
        shell = await backend.shell(workspace=ws, network=proxy, limits=FAST)
        await shell.run("true")
        await shell.close()
        assert held() == before
    finally:
        await egress.close()
