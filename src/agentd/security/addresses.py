"""Which addresses are this host's own and which are public: what the egress proxy
(:mod:`agentd.sandbox.egress`) and the webhook sender (:mod:`agentd.security.hosts`)
both decide on before they connect."""

from __future__ import annotations

import contextlib
import ipaddress
from pathlib import Path

__all__ = ["NOT_PUBLIC", "local_addresses", "plain"]


def local_addresses() -> frozenset[str]:
    """The addresses of this host's interfaces (IPv4 from the FIB, IPv6 from
    ``if_inet6``): a grant does not reach the host through its public address."""
    found: set[str] = set()
    with contextlib.suppress(OSError):
        last = ""
        for line in Path("/proc/net/fib_trie").read_text().splitlines():
            text = line.strip()
            if text.startswith("|--"):
                last = text[3:].strip()
            elif text.startswith("/32 host LOCAL") and last:
                found.add(last)
    with contextlib.suppress(OSError):
        for line in Path("/proc/net/if_inet6").read_text().splitlines():
            raw = line.split()[0] if line.split() else ""
            if len(raw) == 32:
                found.add(str(ipaddress.IPv6Address(int(raw, 16))))
    return frozenset(found)


_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
#: Ranges Python calls global that are not public: IPv4-compatible (deprecated, may
#: reach IPv4 through a tunnel), site-local (deprecated), local-use NAT64.
NOT_PUBLIC = tuple(ipaddress.IPv6Network(net) for net in (
    "::/96", "fec0::/10", "64:ff9b:1::/48"))


def plain(ip: ipaddress.IPv4Address | ipaddress.IPv6Address
           ) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """The IPv4 address an IPv6 one carries (mapped, 6to4, Teredo, NAT64), else
    itself: a gateway would take it there."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return ip.ipv4_mapped
        if ip in _NAT64:
            return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if ip.sixtofour is not None:
            return ip.sixtofour
        if ip.teredo is not None:
            return ip.teredo[1]
    return ip
