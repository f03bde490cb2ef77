"""Who a request is: roles, what each may do, and the principal a token stands for.

Four roles, each able to do everything the ones before it can:

==========  ===========================================================================
viewer      read what its scope holds (agents, sessions, events, runs, memory, usage);
            nothing that writes, sends a message or decides
member      use and configure the agents of its scope: messages, agents' settings but
            the operator-only ones (:mod:`agentd.trust`), memory, schedules, webhooks,
            approvals; tokens no stronger and no wider than its own
operator    also the operator-only settings (model URLs and key variables, sandbox
            backends and limits above the defaults, private network grants, MCP
            commands and URLs, channel variables), daemon-wide skills and the
            daemon's metrics (``/metrics``; with a scope of every agent only)
admin       also tenants and their quotas, the audit log, tokens of any role, reloading
            the daemon's configuration (these four with a scope of every agent only: a
            scoped admin has none of them)
==========  ===========================================================================

A principal is a role plus a scope (:class:`~agentd.security.access.Access`: which
agents, by name and tenant patterns). Named tokens (``/v1/tokens``) carry both; the
configuration file's tokens are admins unless ``admin_tokens`` or their ``[access]``
entry says otherwise (docs/operations.md). Named tokens look like
``agd_<id>_<secret>``: the id (10 characters) finds the stored row and is what lists
show; only a SHA-256 of the whole token is stored (the secret is 256 random bits, so
a plain hash is as good as a slow one and costs nothing per request).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from typing import Literal

from agentd.security.access import EVERYTHING, Access

__all__ = ["DAEMON_WIDE", "RIGHTS", "ROLES", "TOKEN_PREFIX", "Principal", "Right", "Role",
           "hash_token", "new_token", "rank", "token_id", "verify_hash"]

Role = Literal["viewer", "member", "operator", "admin"]
#: The roles, weakest first.
ROLES: tuple[Role, ...] = ("viewer", "member", "operator", "admin")

Right = Literal["read", "use", "configure_host", "metrics", "manage_tenants",
                "read_audit", "any_token", "reload_config"]
#: The weakest role holding each right.
RIGHTS: dict[Right, Role] = {
    "read": "viewer",
    "use": "member",
    "configure_host": "operator",
    "metrics": "operator",
    "manage_tenants": "admin",
    "read_audit": "admin",
    "any_token": "admin",
    "reload_config": "admin",
}

#: Rights over every tenant at once: a scoped token never holds them, whatever its
#: role (an admin bound to a tenant would otherwise read every tenant's audit rows,
#: change their quotas and make itself an unscoped admin token; the metrics count
#: every tenant's runs, tokens and costs).
DAEMON_WIDE: frozenset[Right] = frozenset({"manage_tenants", "read_audit", "any_token",
                                           "metrics", "reload_config"})

TOKEN_PREFIX = "agd_"
_ID_CHARS = "abcdefghijkmnpqrstuvwxyz23456789"  # no 0/o, 1/l: read aloud, typed
_TOKEN = re.compile(r"^agd_([a-z2-9]{10})_([A-Za-z0-9_-]{43})\Z")


def rank(role: Role) -> int:
    """``role``'s place among :data:`ROLES` (viewer 0 ... admin 3)."""
    return ROLES.index(role)


@dataclass(frozen=True, slots=True)
class Principal:
    """Who makes a request: the token's name, its role and its scope.

    ``tenant``: the one tenant a named token is bound to (its new agents go there);
    ``source``: ``config`` (agentd.toml, the environment, the home's token), ``api``
    (``POST /v1/tokens``), ``oauth`` (an access token of ``[mcp.oauth]``'s issuer, at
    the MCP door) or ``none`` (no token, ``auth = "none"``)."""

    name: str | None
    role: Role
    access: Access = EVERYTHING
    tenant: str | None = None
    source: Literal["config", "api", "oauth", "none"] = "config"

    def may(self, right: Right) -> bool:
        """Whether the role holds ``right``; a right over the whole daemon
        (:data:`DAEMON_WIDE`) only with a scope of every agent."""
        if right in DAEMON_WIDE and not self.access.everything:
            return False
        return rank(self.role) >= rank(RIGHTS[right])

    @property
    def label(self) -> str:
        """How logs and the audit log name it."""
        return self.name or "(no token)"


def new_token() -> tuple[str, str]:
    """A fresh named token and its id: ``("agd_<id>_<secret>", "<id>")``."""
    ident = "".join(secrets.choice(_ID_CHARS) for _ in range(10))
    return f"{TOKEN_PREFIX}{ident}_{secrets.token_urlsafe(32)}", ident


def token_id(token: bytes | str) -> str | None:
    """The id of a well-formed named token, else None."""
    text = token.decode("ascii", "replace") if isinstance(token, bytes) else token
    match = _TOKEN.match(text)
    return match.group(1) if match else None


def hash_token(token: bytes | str) -> str:
    """What is stored of a token (hex SHA-256)."""
    raw = token.encode() if isinstance(token, str) else token
    return hashlib.sha256(raw).hexdigest()


def verify_hash(token: bytes | str, stored: str) -> bool:
    """Whether ``token`` hashes to ``stored`` (compared in constant time)."""
    return hmac.compare_digest(hash_token(token), stored)
