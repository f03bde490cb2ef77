"""Where a webhook may be sent: the operator's host patterns, checked when a
subscription is saved and again before every attempt.

A URL passes when its scheme is ``https`` (or ``http`` for a host matching
``[webhooks] allow_http``), it has no user info, and its host (and port) matches a
pattern of ``[webhooks] allow_hosts``. Before connecting, every address the host
resolves to is checked: this host's own addresses with the daemon's port are refused
whatever the lists say (a webhook never reaches the daemon's own API); a loopback,
private, link-local or otherwise non-public address only when a pattern names the host
exactly (no wildcard): ``*.example.com`` reaches public addresses only. The request
then goes to the address that was checked, so a DNS answer that changes in between
cannot redirect it (the same rule as :func:`agentd.sandbox.egress.check`).
"""

from __future__ import annotations

import fnmatch
import ipaddress
import socket
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

# The egress check's notion of "this host's own" and "public", shared on purpose: a
# webhook and a sandboxed command must agree on what is private.
from agentd.security.addresses import NOT_PUBLIC, local_addresses, plain

__all__ = ["HostRules", "Refused", "Target", "parse_pattern"]

Resolver = Callable[..., Sequence[tuple[Any, ...]]]
MAX_URL = 2048
_GLOB = frozenset("*?[")


class Refused(ValueError):
    """The URL or one of its host's addresses is not allowed (the message says why)."""


def parse_pattern(text: str) -> tuple[str, int | None]:
    """``"host"``, ``"host:port"``, ``"[v6]"`` or ``"[v6]:port"`` as (host glob, port);
    ValueError when it is none of these."""
    raw = text.strip().lower()
    port: str | None = None
    if raw.startswith("["):
        host, close, rest = raw[1:].partition("]")
        if not close or (rest and not rest.startswith(":")):
            raise ValueError(f"{text!r} is not a host pattern (write IPv6 as [addr])")
        port = rest[1:] if rest else None
    elif raw.count(":") == 1:
        host, _, port = raw.partition(":")
    elif ":" in raw:
        raise ValueError(f"{text!r} is not a host pattern (write IPv6 as [addr])")
    else:
        host = raw
    host = host.rstrip(".")
    if not host or any(c.isspace() or c in "/@#" for c in host):
        raise ValueError(f"{text!r} is not a host pattern")
    if port is not None and (not port.isdigit() or not 1 <= int(port) <= 65535):
        raise ValueError(f"{text!r}: the port must be 1 to 65535")
    return host, int(port) if port is not None else None


@dataclass(frozen=True, slots=True)
class Target:
    """A URL that passed the static check, taken apart."""

    url: str
    scheme: str
    host: str
    port: int
    #: The matching ``allow_hosts`` pattern names the host exactly (private addresses
    #: may then be reached).
    named: bool


@dataclass(frozen=True)
class HostRules:
    """The operator's rules (``[webhooks]``) and the daemon's own ports."""

    allow_hosts: tuple[tuple[str, int | None], ...] = ()
    allow_http: tuple[tuple[str, int | None], ...] = ()
    daemon_ports: frozenset[int] = frozenset()

    @classmethod
    def of(cls, allow_hosts: Iterable[str], allow_http: Iterable[str],
           daemon_ports: Iterable[int]) -> HostRules:
        return cls(tuple(parse_pattern(p) for p in allow_hosts),
                   tuple(parse_pattern(p) for p in allow_http), frozenset(daemon_ports))

    @property
    def enabled(self) -> bool:
        return bool(self.allow_hosts)

    @staticmethod
    def _matches(patterns: Iterable[tuple[str, int | None]], host: str, port: int
                 ) -> list[tuple[str, int | None]]:
        return [(h, p) for h, p in patterns
                if (p is None or p == port) and fnmatch.fnmatchcase(host, h)]

    def check_url(self, url: str) -> Target:
        """The URL taken apart once the scheme, form and host pattern pass (no lookup);
        :class:`Refused` saying why not."""
        if not self.allow_hosts:
            raise Refused("webhooks are off on this daemon: the operator allows no host "
                          "([webhooks] allow_hosts in agentd.toml)")
        if len(url) > MAX_URL:
            raise Refused(f"the URL is longer than {MAX_URL} characters")
        if any(ord(c) < 33 or c == "\x7f" for c in url):
            raise Refused("the URL holds spaces or control characters")
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as exc:
            raise Refused(f"not a valid URL: {exc}") from None
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https") or not parts.hostname:
            raise Refused("the URL must be https://HOST/... (or http:// for a host the "
                          "operator allows it for)")
        if parts.username is not None or parts.password is not None:
            raise Refused("the URL must not carry a user name or password (the "
                          "deliveries are signed instead)")
        if parts.fragment:
            raise Refused("the URL must not have a #fragment")
        host = parts.hostname.lower().rstrip(".")
        port = port or (443 if scheme == "https" else 80)
        matched = self._matches(self.allow_hosts, host, port)
        if not matched:
            raise Refused(f"{host}:{port} is not a host the operator allows webhooks to "
                          "([webhooks] allow_hosts)")
        if scheme == "http" and not self._matches(self.allow_http, host, port):
            raise Refused(f"plain http is not allowed for {host} (use https; the "
                          "operator may allow http for a host in [webhooks] allow_http)")
        named = any(not (_GLOB & set(h)) and h == host for h, _ in matched)
        return Target(url=url, scheme=scheme, host=host, port=port, named=named)

    def private(self, target: Target, *, resolve: Resolver | None = None) -> str | None:
        """An address of the host that is not public (or this host's own), if any:
        reachable only because the operator named the host exactly. Blocking (it
        resolves); a name that does not resolve now is taken as private (a later
        answer could be)."""
        try:
            infos = (resolve or socket.getaddrinfo)(target.host, target.port,
                                                    type=socket.SOCK_STREAM)
        except (OSError, UnicodeError):
            return target.host
        local = local_addresses()
        for info in infos:
            address = str(info[4][0]).split("%")[0]
            ip = plain(ipaddress.ip_address(address))
            own = (ip.is_loopback or ip.is_unspecified or str(ip) in local
                   or address in local)
            public = (ip.is_global and not ip.is_multicast and not own
                      and not any(ip in net for net in NOT_PUBLIC if ip.version == 6))
            if not public:
                return address
        return None

    def address(self, target: Target, *, resolve: Resolver | None = None) -> str:
        """The address to connect to, once every address of the host has passed;
        blocking (it resolves). :class:`Refused` for a refused address, OSError when
        the name does not resolve."""
        infos = (resolve or socket.getaddrinfo)(target.host, target.port,
                                                type=socket.SOCK_STREAM)
        addresses = sorted({str(info[4][0]).split("%")[0] for info in infos},
                           key=lambda a: (":" in a, a))
        if not addresses:
            raise OSError(f"{target.host!r} has no address")
        local = local_addresses()
        for address in addresses:
            ip = plain(ipaddress.ip_address(address))
            own = (ip.is_loopback or ip.is_unspecified or str(ip) in local
                   or address in local)
            if own and target.port in self.daemon_ports:
                raise Refused(f"{target.host}:{target.port} is the daemon's own port "
                              f"({address}); no setting opens it to a webhook")
            public = (ip.is_global and not ip.is_multicast and not own
                      and not any(ip in net for net in NOT_PUBLIC if ip.version == 6))
            if not public and not target.named:
                raise Refused(
                    f"{target.host!r} resolves to {address}, which is not a public "
                    "address (or is this host's own); only a host the operator names "
                    "exactly (no wildcard) in [webhooks] allow_hosts may be")
        return addresses[0]
