"""``secret:NAME`` in settings: the references, and what resolves them for a run.

A setting's value that is a reference to a named secret (:mod:`agentd.secrets`) is
``secret:NAME``, or a scheme word, a space and the reference (``Bearer secret:NAME``,
for an ``Authorization`` header); it is replaced by the value only where it is used:
in an MCP server's environment or headers as its connection is made, in the headers
``http_fetch`` adds for a host. The model sees the reference, never the value.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Protocol

from agentd.errors import NotFound

__all__ = ["HEADER_NAME", "HOST_PATTERN", "SecretSource", "host_headers", "parse_reference",
           "references", "resolve_mapping"]

#: An HTTP header's name (RFC 9110 token), as ``settings.http_headers`` takes one.
HEADER_NAME = r"^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,64}$"
#: A host of ``settings.http_headers``: a name, or ``*.`` and a domain.
HOST_PATTERN = re.compile(r"^(\*\.)?[a-z0-9]([a-z0-9-]{0,62}[a-z0-9])?"
                          r"(\.[a-z0-9]([a-z0-9-]{0,62}[a-z0-9])?)*\Z")

_REF = re.compile(r"^(?:(?P<scheme>[A-Za-z][A-Za-z0-9_-]{0,31}) )?secret:"
                  r"(?P<name>[A-Za-z_][A-Za-z0-9_.-]{0,63})\Z")


class SecretSource(Protocol):
    """The secrets one run's agent may use (its own, then its tenant's)."""

    async def resolve(self, name: str, *, use: str) -> str:
        """The value of secret ``name`` for ``use`` (an audit row says so);
        NotFound ``secret_not_found`` when the agent has none of that name."""
        ...


def host_headers(config: Mapping[str, Mapping[str, str]], host: str) -> dict[str, str]:
    """The headers ``config`` (``settings.http_headers``) gives requests to ``host``:
    its exact entry's, over those of the ``*.domain`` patterns it is under (a
    pattern does not match the domain itself)."""
    host = host.lower().rstrip(".")
    found: dict[str, str] = {}
    patterns = sorted((k for k in config if k.startswith("*.") and host.endswith(k[1:])),
                      key=len)
    for key in [*patterns, *([host] if host in config else [])]:
        found.update(config[key])
    return found


def parse_reference(value: object) -> tuple[str, str] | None:
    """``(prefix, name)`` of a reference (``("Bearer ", "GH")``), else None."""
    if not isinstance(value, str):
        return None
    match = _REF.match(value)
    if match is None:
        return None
    scheme = match.group("scheme")
    return (f"{scheme} " if scheme else ""), match.group("name")


def references(values: Mapping[str, str]) -> list[tuple[str, str]]:
    """``(key, secret name)`` of each value of ``values`` that is a reference."""
    found = []
    for key, value in values.items():
        parsed = parse_reference(value)
        if parsed is not None:
            found.append((key, parsed[1]))
    return found


async def resolve_mapping(values: Mapping[str, str], source: SecretSource | None, *,
                          use: str) -> dict[str, str]:
    """``values`` with each reference replaced by its secret's value (``use`` names
    where: ``mcp:github header``, the key is added). Without a ``source`` a reference
    is an error: NotFound, as for a secret that does not exist."""
    out = dict(values)
    for key, value in values.items():
        parsed = parse_reference(value)
        if parsed is None:
            continue
        if source is None:
            raise NotFound(f"secret {parsed[1]!r} cannot be used here (no secrets in "
                           "this run)", code="secret_not_found")
        out[key] = parsed[0] + await source.resolve(parsed[1], use=f"{use} {key}")
    return out
