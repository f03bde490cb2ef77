"""Egress: the one check every connection an agent opens goes through, and the proxy
that applies it to commands in a sandbox.

An agent's grant (``settings.policy.network``: True for any public host, or host
patterns) names hosts; it never reaches the host's own network by itself. Every
address a host name resolves to must be public (``is_global``, not multicast), unless
the operator lists that host *and port* by name in ``[sandbox] private_endpoints``
(the agent's grant must cover the host too). Refused whatever the lists say: the
daemon's own listening ports on any of the host's own addresses (loopback, unspecified,
the interfaces' addresses): a grant never opens the daemon's API to an agent. The
connection then goes to the address that was checked, so a DNS answer that changes in
between cannot redirect it.

Who applies it:

- ``http_fetch`` (the daemon fetches) calls :func:`check` for each request and redirect.
- commands: a sandbox never shares the host's network namespace. With a grant, the
  runtime starts an :class:`EgressProxy` for that grant (one per agent and grant: no
  two agents, and so no two tenants, share one), and
  the sandbox's ``HTTP_PROXY``/``HTTPS_PROXY``/``ALL_PROXY`` point at
  ``127.0.0.1:3128`` in its own network namespace, where the proxy listens: when the
  daemon is root it makes that namespace and serves a socket in it itself
  (:meth:`EgressProxy.inlet`); otherwise a small forwarder (:data:`FORWARDER`) in the
  sandbox relays to the proxy's unix socket (in a directory other users cannot
  list). The proxy takes ``CONNECT host:port`` (https, any TCP) and absolute-form
  plain-http requests, checks each with :func:`check`, and answers a refusal with a
  ``403`` saying why. There is no DNS in the sandbox: the proxy resolves.
- the browser (:mod:`agentd.browser`): Chromium's only way out is an
  :class:`EgressProxy` for the agent's grant listening on a loopback TCP port
  (:meth:`EgressProxy.start_tcp`), which other local processes could connect to: it
  answers only requests carrying its ``secret`` (``Proxy-Authorization: Basic``,
  any user name), ``407`` otherwise.

Every connection to a proxy is one of the daemon's descriptors: each is admitted
against the daemon's, the agent's and its tenant's caps before a byte of it is read
(:mod:`agentd.sandbox.connections`), else answered ``503`` naming the cap.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import concurrent.futures
import contextlib
import ipaddress
import logging
import os
import secrets
import shutil
import socket
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from agentd.errors import ToolError
from agentd.sandbox import _netns
from agentd.sandbox.connections import Connections, Owner
from agentd.security.addresses import NOT_PUBLIC, local_addresses, plain
from agentd.security.policy import grants_host

__all__ = ["FORWARDER", "PROXY_ENV", "EgressProxies", "EgressProxy", "EgressRules",
           "Grant", "Inlet", "check", "check_async", "forwarder", "parse_endpoint"]

log = logging.getLogger(__name__)

Grant = bool | tuple[str, ...]
Resolver = Callable[..., Sequence[tuple[Any, ...]]]

#: Where the forwarder listens inside the sandbox (its own network namespace).
PROXY_PORT = 3128
#: Where the proxy's socket appears inside a bubblewrap sandbox.
SANDBOX_SOCKET = "/run/agentd/egress.sock"
_PROXY_URL = f"http://127.0.0.1:{PROXY_PORT}"
#: What commands read to find the proxy (curl, pip, git, python's urllib, requests).
PROXY_ENV = {name: _PROXY_URL for name in (
    "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")}
_HEAD_LIMIT = 65536
_HEAD_TIMEOUT_S = 30.0
_CONNECT_TIMEOUT_S = 30.0
#: A proxy's caps when it is given no daemon-wide count (a proxy of its own, a test).
_MAX_CONNECTIONS = 256
#: Proxies kept per agent (one per grant it used lately): the least recently used one
#: beyond is closed, so that changing grants cannot pile up listening sockets.
_PROXIES_PER_AGENT = 4
_HOP_HEADERS = frozenset({b"connection", b"keep-alive", b"proxy-connection",
                          b"proxy-authorization", b"proxy-authenticate", b"te",
                          b"trailer", b"upgrade"})


def _denied(message: str) -> ToolError:
    return ToolError(message, code="network_denied")


def _normal_host(host: str) -> str:
    host = host.strip().lower().rstrip(".")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host


def parse_endpoint(text: str) -> tuple[str, int]:
    """``"host:port"`` (``"[::1]:80"`` for IPv6) as a normalised pair; ValueError when
    it is not one (the port is required: a listed host opens one port, not all)."""
    host, sep, port = text.strip().rpartition(":")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"{text!r} is not host:port (the port is required)")
    host = _normal_host(host)
    if not host or (":" in host and not text.strip().startswith("[")):
        raise ValueError(f"{text!r} is not host:port (write IPv6 as [addr]:port)")
    return host, int(port)


@dataclass(frozen=True)
class EgressRules:
    """The operator's side of the check (never an agent's).

    Attributes:
        private_endpoints: ``(host, port)`` pairs that may be non-public (from
            ``[sandbox] private_endpoints``); the host matches by name as written.
        daemon_ports: ports refused on the host's own addresses whatever else says,
            besides the ports this process listens on (found in ``/proc``).
    """

    private_endpoints: frozenset[tuple[str, int]] = frozenset()
    daemon_ports: frozenset[int] = frozenset()

    @classmethod
    def of(cls, endpoints: Iterable[str] = (), daemon_ports: Iterable[int] = ()
           ) -> EgressRules:
        return cls(frozenset(parse_endpoint(item) for item in endpoints),
                   frozenset(daemon_ports))


# -- what is this host's own ------------------------------------------------------------


def _read_listening_ports() -> frozenset[int]:
    """TCP ports in LISTEN state on sockets this process holds: the daemon's API
    whatever port it was given (``0`` included)."""
    inodes: set[str] = set()
    with contextlib.suppress(OSError):
        for fd in os.listdir("/proc/self/fd"):
            with contextlib.suppress(OSError):
                target = os.readlink(f"/proc/self/fd/{fd}")
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
    ports: set[int] = set()
    for table in ("/proc/self/net/tcp", "/proc/self/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as lines:
            next(lines, None)
            for line in lines:
                cols = line.split()
                if len(cols) > 9 and cols[3] == "0A" and cols[9] in inodes:
                    ports.add(int(cols[1].rsplit(":", 1)[1], 16))
    return frozenset(ports)


# -- the check ---------------------------------------------------------------------------


def check(host: str, port: int, grant: Grant, rules: EgressRules, *,
          resolve: Resolver | None = None) -> str:
    """The address to connect to for ``host:port`` under ``grant``, once every address
    ``host`` resolves to has passed; blocking (it resolves): see :func:`check_async`.

    Raises:
        ToolError: ``network_denied`` with the reason, ``network_error`` when the name
            does not resolve.
    """
    host = _normal_host(host)
    if not grant:
        raise _denied("this agent has no network (settings.policy.network)")
    if not host or not grants_host(grant, host):
        raise _denied(f"the network is not granted for {host!r} (settings.policy.network)")
    if not isinstance(port, int) or not 1 <= port <= 65535:
        raise _denied(f"port {port!r} is not a TCP port")
    try:
        # (socket.getaddrinfo looked up at call time, not bound at import: the test
        # suite's network guard replaces it)
        infos = (resolve or socket.getaddrinfo)(host, port, type=socket.SOCK_STREAM)
    except (OSError, ValueError) as exc:  # (ValueError: a NUL; UnicodeError: IDNA)
        raise ToolError(f"cannot resolve {host!r}: {exc}", code="network_error") from None
    addresses = sorted({str(info[4][0]).split("%")[0] for info in infos},
                       key=lambda a: (":" in a, a))
    if not addresses:
        raise ToolError(f"{host!r} has no address", code="network_error")
    listed = (host, port) in rules.private_endpoints
    # Read afresh for each check (a few small /proc files): a port the daemon opened
    # a moment ago is its own at once.
    local = local_addresses()
    daemon_ports = rules.daemon_ports | _read_listening_ports()
    for address in addresses:
        ip = plain(ipaddress.ip_address(address))
        own = ip.is_loopback or ip.is_unspecified or str(ip) in local or address in local
        if own and port in daemon_ports:
            raise _denied(f"{host}:{port} is the daemon's own port ({address}); no grant "
                          "or setting opens it to an agent")
        public = (ip.is_global and not ip.is_multicast and not own
                  and not any(ip in net for net in NOT_PUBLIC if ip.version == 6))
        if not public and not listed:
            raise _denied(
                f"{host!r} resolves to {address}, which is not a public address (or is "
                f"this host's own); only an endpoint the operator lists as "
                f"\"{host}:{port}\" in [sandbox] private_endpoints may be")
    return addresses[0]


async def check_async(host: str, port: int, grant: Grant, rules: EgressRules) -> str:
    """:func:`check` off the event loop (resolving blocks)."""
    return await asyncio.to_thread(check, host, port, grant, rules)


# -- the proxy ---------------------------------------------------------------------------


class _Refused(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


_STATUS_TEXT = {400: "Bad Request", 403: "Forbidden", 407: "Proxy Authentication Required",
                502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout"}


def _authorized(head: bytes, secret: str) -> bool:
    """Whether the request head carries ``secret`` as its proxy password."""
    for line in head[:-4].split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() != b"proxy-authorization":
            continue
        scheme, _, token = value.strip().partition(b" ")
        if scheme.lower() != b"basic":
            return False
        try:
            _, _, password = base64.b64decode(token.strip(), validate=True).partition(b":")
        except (binascii.Error, ValueError):
            return False
        return secrets.compare_digest(password, secret.encode())
    return False


@dataclass
class Inlet:
    """The proxy listening on ``127.0.0.1:3128`` of a network namespace made for one
    sandbox, which joins it (``netns``, a descriptor). :meth:`close` when the
    sandbox has ended."""

    netns: int
    server: asyncio.AbstractServer

    def close(self) -> None:
        self.server.close()
        if self.netns >= 0:
            os.close(self.netns)
            self.netns = -1


def _discard(future: concurrent.futures.Future[tuple[int, socket.socket]]) -> None:
    if not future.cancelled() and future.exception() is None:
        netns, listener = future.result()
        listener.close()
        os.close(netns)


@dataclass
class EgressProxy:
    """An HTTP proxy applying :func:`check` for one ``grant``: on a unix socket
    (``path``, for the forwarder) and on each sandbox's :meth:`inlet`.

    Attributes:
        inlets: serve sandboxes' own network namespaces directly where the daemon
            may make them (root); False: always through the forwarder.
    """

    grant: Grant
    rules: EgressRules
    path: str
    inlets: bool = True
    #: When set, a request must carry it as the password of ``Proxy-Authorization:
    #: Basic`` (any user name), else ``407``: for a proxy on a TCP port.
    secret: str | None = None
    #: Whose connections these are, and the daemon's count they are admitted to.
    owner: Owner = field(default_factory=Owner)
    connections: Connections = field(default_factory=lambda: Connections(
        total=_MAX_CONNECTIONS, per_agent=_MAX_CONNECTIONS))
    _server: asyncio.AbstractServer | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    #: New connections are closed at once, for now (:meth:`suspend`).
    _suspended: bool = False

    async def inlet(self) -> Inlet | None:
        """A new network namespace with this proxy on its ``127.0.0.1:3128``, or None
        where the daemon cannot make one (then the sandbox needs the forwarder)."""
        if not self.inlets or _NO_INLETS or not _netns.usable():
            return None
        future = _netns.make(PROXY_PORT)
        try:
            netns, listener = await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            future.add_done_callback(_discard)
            raise
        except OSError as exc:  # (root without CAP_SYS_ADMIN: a container)
            if not _NO_INLETS:
                log.warning("egress: cannot make network namespaces (%s); sandboxes "
                            "reach the proxy through the forwarder", exc)
            _NO_INLETS.append(str(exc))
            self.inlets = False
            return None
        try:
            server = await asyncio.start_server(self._serve, sock=listener,
                                                limit=_HEAD_LIMIT)
        except BaseException:
            listener.close()
            os.close(netns)
            raise
        return Inlet(netns, server)

    async def start(self) -> None:
        self._server = await asyncio.start_unix_server(self._serve, path=self.path,
                                                       limit=_HEAD_LIMIT)
        # The sandbox's uid connects; the directory (0711, a random name) is what
        # keeps other users from finding it.
        os.chmod(self.path, 0o666)

    async def socket_path(self) -> str:
        """The unix socket a sandbox's forwarder connects to, listening from now on
        (started on first use: a proxy whose sandboxes all get an :meth:`inlet` holds
        no listening descriptor)."""
        if self._server is None:
            await self.start()
        return self.path

    def suspend(self) -> None:
        """Drop every connection now and close new ones at once until :meth:`resume`:
        a browser between calls holds no descriptor of the daemon's."""
        self._suspended = True
        for task in list(self._tasks):
            task.cancel()

    def resume(self) -> None:
        self._suspended = False

    @property
    def open_connections(self) -> int:
        return len(self._tasks)

    async def start_tcp(self) -> int:
        """Listen on a free port of ``127.0.0.1`` instead of the unix socket; the port.

        Every local process can connect to it: give the proxy a ``secret``. (A port
        this process listens on is the daemon's own to :func:`check`: no request
        through any proxy reaches it.)
        """
        if not self.secret:
            raise ValueError("a TCP egress proxy needs a secret")
        self._server = await asyncio.start_server(self._serve, host="127.0.0.1", port=0,
                                                  limit=_HEAD_LIMIT)
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5)
            self._server = None
        with contextlib.suppress(OSError):
            os.unlink(self.path)

    async def _serve(self, reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        # Admitted (and counted) before a byte is read: a connection that sends
        # nothing holds a descriptor all the same.
        if self._suspended:
            # (no one waits for the answer: a page between calls; nothing to linger on)
            writer.transport.abort()
            return
        refusal = self.connections.admit(self.owner)
        if refusal is not None:
            await _turn_away(reader, writer, refusal, self.connections)
            return
        self._tasks.add(task)
        try:
            await self._one(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except Exception:  # one connection's fault never stops the proxy
            log.exception("egress proxy: a connection failed")
        finally:
            self._tasks.discard(task)
            self.connections.release(self.owner)
            writer.close()

    async def _one(self, reader: asyncio.StreamReader,
                   writer: asyncio.StreamWriter) -> None:
        try:
            try:
                async with asyncio.timeout(_HEAD_TIMEOUT_S):
                    head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.LimitOverrunError, ValueError):
                raise _Refused(400, "request head too large") from None
            except TimeoutError:
                raise _Refused(400, "no request head in time") from None
            if self.secret is not None and not _authorized(head, self.secret):
                raise _Refused(407, "proxy authentication required")
            method, host, port, forward = _parse(head)
            try:
                address = await check_async(host, port, self.grant, self.rules)
            except ToolError as exc:
                log.info("egress refused %s:%d: %s", host, port, exc.message)
                raise _Refused(403 if exc.code == "network_denied" else 502,
                               exc.message) from None
            try:
                async with asyncio.timeout(_CONNECT_TIMEOUT_S):
                    up_reader, up_writer = await asyncio.open_connection(address, port)
            except TimeoutError:
                raise _Refused(504, f"{host}:{port} did not answer") from None
            except OSError as exc:
                raise _Refused(502, f"cannot connect to {host}:{port}: "
                                    f"{exc.strerror or exc}") from None
        except _Refused as refused:
            await _answer(writer, refused)
            return
        try:
            if method == b"CONNECT":
                writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
                await writer.drain()
            else:
                up_writer.write(forward)
            await _relay(reader, writer, up_reader, up_writer)
        finally:
            up_writer.close()


def _parse(head: bytes) -> tuple[bytes, str, int, bytes]:
    """(method, host, port, request to send upstream) of a proxy request head."""
    lines = head[:-4].split(b"\r\n")
    parts = lines[0].split(b" ")
    if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
        raise _Refused(400, "not an HTTP/1.x proxy request")
    method, target, version = parts
    text = target.decode("latin-1")
    if method == b"CONNECT":
        try:
            host, port = parse_endpoint(text)
        except ValueError as exc:
            raise _Refused(400, str(exc)) from None
        return method, host, port, b""
    try:
        url = urlsplit(text)
        hostname = url.hostname
    except ValueError:
        raise _Refused(400, f"not a URL: {text[:200]!r}") from None
    if url.scheme != "http" or not hostname:
        raise _Refused(400, "a proxy request needs an absolute http:// URL (https goes "
                            "through CONNECT)")
    try:
        port = url.port or 80
    except ValueError:
        raise _Refused(400, f"bad port in {text!r}") from None
    path = (url.path or "/") + (f"?{url.query}" if url.query else "")
    headers = [line for line in lines[1:]
               if line.split(b":", 1)[0].strip().lower() not in _HOP_HEADERS]
    if not any(line.split(b":", 1)[0].strip().lower() == b"host" for line in headers):
        headers.insert(0, b"Host: " + url.netloc.rpartition("@")[2].encode("latin-1"))
    # One request per connection: the next one is checked afresh.
    forward = b"\r\n".join([b" ".join([method, path.encode("latin-1"), version]),
                            *headers, b"Connection: close", b"", b""])
    return method, hostname, port, forward


async def _answer(writer: asyncio.StreamWriter, refused: _Refused) -> None:
    body = f"agentd egress: {refused.reason}\n".encode()
    challenge = ('Proxy-Authenticate: Basic realm="agentd"\r\n'
                 if refused.status == 407 else "")
    writer.write(
        f"HTTP/1.1 {refused.status} {_STATUS_TEXT.get(refused.status, 'Error')}\r\n"
        f"Content-Type: text/plain; charset=utf-8\r\nContent-Length: {len(body)}\r\n"
        f"{challenge}X-Agentd-Egress: refused\r\nConnection: close\r\n\r\n".encode()
        + body)
    with contextlib.suppress(ConnectionError):
        await writer.drain()


_TURNING_AWAY_MAX = 64
_TURN_AWAY_S = 2.0


async def _turn_away(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     reason: str, connections: Connections) -> None:
    """A connection over a cap: ``503`` saying which, then what the client sent is
    read (for at most :data:`_TURN_AWAY_S`) before closing, else the kernel would
    reset the connection and the client would never see why. Past
    :data:`_TURNING_AWAY_MAX` such connections at once (a flood), closed at once."""
    if connections.turning_away >= _TURNING_AWAY_MAX:
        writer.transport.abort()
        return
    connections.turning_away += 1
    try:
        with contextlib.suppress(Exception):
            await _answer(writer, _Refused(503, reason))
            if writer.can_write_eof():
                writer.write_eof()
            async with asyncio.timeout(_TURN_AWAY_S):
                left = _HEAD_LIMIT
                while left > 0 and (chunk := await reader.read(min(left, 16384))):
                    left -= len(chunk)
    finally:
        connections.turning_away -= 1
        writer.close()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while chunk := await reader.read(65536):
            writer.write(chunk)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, OSError):
        pass


async def _relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 up_reader: asyncio.StreamReader, up_writer: asyncio.StreamWriter) -> None:
    """Both ways until the server is done and the client is done (or either drops)."""
    down = asyncio.ensure_future(_pipe(up_reader, writer))
    up = asyncio.ensure_future(_pipe(reader, up_writer))
    try:
        await down  # the server finished its answer: the client gets nothing more
        await asyncio.wait({up}, timeout=1.0)
    finally:
        for task in (down, up):
            task.cancel()
        await asyncio.gather(down, up, return_exceptions=True)


class EgressProxies:
    """One :class:`EgressProxy` per agent and grant (the tenant is in the key too: an
    agent moved to another tenant gets a new one), made on first use; an agent's
    least recently used one beyond :data:`_PROXIES_PER_AGENT` is closed, and all of
    them when it is deleted (:meth:`close_agent`) or the daemon stops. Every proxy
    admits its connections to one count, ``connections``. Owned by the runtime
    (``Sandboxes``); ``inlets`` as for :class:`EgressProxy`."""

    def __init__(self, rules: EgressRules, *, inlets: bool = True,
                 connections: Connections | None = None) -> None:
        self.rules = rules
        self.inlets = inlets
        self.connections = connections or Connections(total=_MAX_CONNECTIONS,
                                                      per_agent=_MAX_CONNECTIONS)
        #: By owner, each owner's by grant, least recently used first.
        self._proxies: dict[Owner, dict[Grant, EgressProxy]] = {}
        self._lock = asyncio.Lock()
        self._directory: str | None = None

    async def get(self, grant: Grant, owner: Owner | None = None) -> EgressProxy:
        """The proxy of ``owner`` (an agent of a tenant) for ``grant``."""
        if grant is False or not grant:
            raise _denied("this agent has no network (settings.policy.network)")
        owner = owner or Owner()
        normal: Grant = True if grant is True else tuple(sorted({h.lower() for h in grant}))
        evicted: list[EgressProxy] = []
        async with self._lock:
            mine = self._proxies.setdefault(owner, {})
            proxy = mine.pop(normal, None)  # (put back last: the most recent)
            if proxy is None:
                if self._directory is None:
                    self._directory = await asyncio.to_thread(_private_directory)
                path = os.path.join(self._directory, secrets.token_hex(12) + ".sock")
                proxy = EgressProxy(normal, self.rules, path, inlets=self.inlets,
                                    owner=owner, connections=self.connections)
            mine[normal] = proxy
            while len(mine) > _PROXIES_PER_AGENT:
                evicted.append(mine.pop(next(iter(mine))))
        for old in evicted:  # (outside the lock: other agents' calls need not wait)
            await old.close()
        return proxy

    async def close_agent(self, agent: str) -> None:
        """Close the proxies of an agent (it was deleted): its connections end."""
        async with self._lock:
            gone = [self._proxies.pop(owner) for owner in list(self._proxies)
                    if owner.agent == agent]
        for proxies in gone:
            for proxy in proxies.values():
                await proxy.close()

    @property
    def count(self) -> int:
        return sum(len(mine) for mine in self._proxies.values())

    async def close(self) -> None:
        async with self._lock:
            proxies = [p for mine in self._proxies.values() for p in mine.values()]
            self._proxies = {}
            for proxy in proxies:
                await proxy.close()
            if self._directory is not None:
                await asyncio.to_thread(shutil.rmtree, self._directory, True)
                self._directory = None


#: Why the daemon cannot make network namespaces (once a proxy found out), else empty.
_NO_INLETS: list[str] = []


def _private_directory() -> str:
    # Under root the sandbox uid must reach it: /run is open to all (a TMPDIR may
    # not be), and is emptied at boot.
    root = "/run" if os.geteuid() == 0 and os.access("/run", os.W_OK) else None
    path = tempfile.mkdtemp(prefix="agentd-egress-", dir=root)
    os.chmod(path, 0o711)  # others may reach a socket by its name, not list them
    return path


#: Run as ``python3 -I -S -c FORWARDER COMMAND...`` inside the sandbox, with the proxy's
#: socket in ``AGENTD_EGRESS_SOCKET`` (the environment, unlike the argv, is not
#: readable by other users' processes, which matters on the process backend): listen
#: on 127.0.0.1:3128, then fork; the parent becomes COMMAND (so it starts only once
#: the port listens), the child relays each connection to the proxy's unix socket and
#: ends when its parent does. Only built-in modules (``_socket``, ``_thread``,
#: ``posix``): importing ``socket`` or ``threading`` would double its start-up.
FORWARDER = r"""
import _socket as S, _thread as T, posix as P, sys
path = P.environ[b"AGENTD_EGRESS_SOCKET"]
srv = S.socket(S.AF_INET, S.SOCK_STREAM)
srv.setsockopt(S.SOL_SOCKET, S.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", __PORT__))
srv.listen(64)
parent = P.getpid()
if P.fork():
    srv.close()
    cmd = sys.argv[1]
    dirs = [""] if "/" in cmd else P.environ.get(b"PATH", b"/usr/bin:/bin").decode().split(":")
    for d in dirs:
        try:
            P.execv(d + "/" + cmd if d else cmd, sys.argv[1:])
        except OSError:
            pass
    P.write(2, (cmd + ": command not found\n").encode())
    P._exit(127)
null = P.open("/dev/null", P.O_RDWR)
for fd in (0, 1, 2):
    P.dup2(null, fd)
T.stack_size(262144)
def pipe(a, b, done):
    try:
        while True:
            data = a.recv(65536)
            if not data:
                break
            b.sendall(data)
        b.shutdown(1)
    except OSError:
        pass
    if done is not None:
        done.release()
def serve(c):
    u = S.socket(S.AF_UNIX, S.SOCK_STREAM)
    try:
        u.connect(path)
        done = T.allocate_lock()
        done.acquire()
        T.start_new_thread(pipe, (u, c, done))
        pipe(c, u, None)
        done.acquire()
    except OSError:
        pass
    u.close()
    c.close()
srv.settimeout(1.0)
while P.getppid() == parent:
    try:
        fd, _ = srv._accept()
    except TimeoutError:
        continue
    except OSError:
        break
    T.start_new_thread(serve, (S.socket(fileno=fd),))
""".replace("__PORT__", str(PROXY_PORT))


def forwarder(python: str, socket_path: str, command: Sequence[str]
              ) -> tuple[list[str], dict[str, str]]:
    """The argv and the environment variables that start ``command`` behind the
    forwarder (see :data:`FORWARDER`) with the proxy's socket at ``socket_path``."""
    return ([python, "-I", "-S", "-c", FORWARDER, *command],
            {**PROXY_ENV, "AGENTD_EGRESS_SOCKET": socket_path})
