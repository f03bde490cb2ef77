"""Which agents a daemon token may use: opt-in scopes per token name.

A token is named by where it comes from (``bootstrap``, ``token``, ``token-N``: see
:mod:`agentd.security.tokens`). The operator's ``[access.<token name>]`` tables give
a token a scope::

    [access.token-2]
    tenants = ["acme"]              # agents whose settings.tenant matches
    [access.token-3]
    agents = ["support-*"]          # agents whose name matches
    tenants = ["acme", "acme-*"]    # ... and (both given) whose tenant matches too
    namespaces = ["acme:*"]         # shared memory namespaces its agents may join

Patterns are :func:`fnmatch.fnmatchcase` patterns (``*``, ``?``, ``[seq]``), matched
case-sensitively against the whole name. A list left out does not restrict; an
empty list matches nothing. A token without an entry keeps every agent.

Everything a request may see or do about an agent is decided by one value,
:class:`Access`, that the server derives from the request's token
(``agentd.doors.access``): an agent outside it is answered exactly as one that does
not exist. What a scope does not stop is in docs/security.md.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# (defined with the records, so that the store can tell an agent change's tenant)
from agentd.tenancy import tenant_of

if TYPE_CHECKING:
    from agentd.store.records import AgentRecord

__all__ = ["EVERYTHING", "Access", "Scopes", "TokenScope", "check_pattern", "scope_access",
           "tenant_of"]

_MAX_PATTERN = 256
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def check_pattern(pattern: str) -> str:
    """``pattern`` if it is a usable fnmatch pattern; ValueError saying why not."""
    if not pattern:
        raise ValueError("a pattern is empty")
    if len(pattern) > _MAX_PATTERN:
        raise ValueError(f"pattern {pattern[:40]!r}... is over {_MAX_PATTERN} characters")
    if _CONTROL.search(pattern):
        raise ValueError(f"pattern {pattern!r} holds a control character")
    # fnmatch reads an unclosed '[' as a literal bracket: almost surely a typo here.
    i, n = 0, len(pattern)
    while i < n:
        if pattern[i] == "[":
            j = i + 1
            if j < n and pattern[j] == "!":
                j += 1
            if j < n and pattern[j] == "]":
                j += 1  # a ']' first in a set is one of its characters
            j = pattern.find("]", j)
            if j < 0:
                raise ValueError(f"pattern {pattern!r} has a '[' that is never closed")
            i = j
        i += 1
    return pattern


class TokenScope(BaseModel):
    """One token's scope (``[access.<token name>]`` in agentd.toml)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: Agent names it may use (fnmatch patterns); left out: any name.
    agents: list[str] | None = Field(default=None, max_length=1000)
    #: Tenants (an agent's ``settings.tenant``) whose agents it may use; left out: any.
    tenants: list[str] | None = Field(default=None, max_length=1000)
    #: Shared memory namespaces its agents may be given (``settings.memory.namespaces``):
    #: namespaces are daemon-wide, so a scoped token may add none but these.
    namespaces: list[str] = Field(default_factory=list, max_length=1000)
    #: Its role (``viewer``, ``member``, ``operator``, ``admin``: docs/security.md,
    #: "Roles"). Left out: ``admin`` for a token without a scope that ``admin_tokens``
    #: allows, else ``member``.
    role: Literal["viewer", "member", "operator", "admin"] | None = None

    @field_validator("agents", "tenants", "namespaces")
    @classmethod
    def _patterns(cls, value: list[str] | None) -> list[str] | None:
        for pattern in value or ():
            check_pattern(pattern)
        return value

    @model_validator(mode="after")
    def _something(self) -> TokenScope:
        if self.agents is None and self.tenants is None and self.role is None:
            raise ValueError("an entry names `agents` or `tenants` (or both), or a "
                             "`role`; a token that may use every agent as an admin "
                             "needs no entry")
        return self

    @property
    def scoped(self) -> bool:
        return self.agents is not None or self.tenants is not None


def _compile(patterns: Iterable[str] | None) -> re.Pattern[str] | None:
    if patterns is None:
        return None
    return re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in patterns) or r"(?!)")


@dataclass(frozen=True, slots=True)
class Access:
    """What one request may use: every agent, or those its token's scope matches.

    ``token`` is the token's name (None: a request without one, ``auth = "none"``)."""

    token: str | None = None
    agents: re.Pattern[str] | None = None
    tenants: re.Pattern[str] | None = None
    namespaces: re.Pattern[str] | None = None
    scoped: bool = False
    describe: str = "every agent"
    #: The patterns ``agents`` and ``tenants`` were compiled from (None: no restriction).
    agent_patterns: tuple[str, ...] | None = None
    tenant_patterns: tuple[str, ...] | None = None

    @property
    def everything(self) -> bool:
        """Whether the token may use every agent (the default)."""
        return not self.scoped

    @property
    def needs_tenant(self) -> bool:
        """Whether deciding needs the agent's tenant (its stored settings)."""
        return self.tenants is not None

    def allows_name(self, name: str) -> bool:
        """False when ``name`` is outside the scope whatever its tenant."""
        return self.agents is None or self.agents.fullmatch(name) is not None

    def allows(self, name: str, tenant: str | None) -> bool:
        """Whether an agent called ``name`` in ``tenant`` is in the scope."""
        if not self.scoped:
            return True
        if not self.allows_name(name):
            return False
        return self.tenants is None or (tenant is not None
                                        and self.tenants.fullmatch(tenant) is not None)

    def allows_agent(self, agent: AgentRecord) -> bool:
        return self.allows(agent.name, tenant_of(agent.settings))

    def allows_settings(self, name: str, settings: Mapping[str, Any]) -> bool:
        """Whether an agent ``name`` with these (new) settings would be in the scope."""
        return self.allows(name, tenant_of(settings))

    def new_namespaces(self, before: Mapping[str, Any] | None, after: Mapping[str, Any]
                       ) -> list[str]:
        """The shared memory namespaces ``after`` (an agent's settings) adds to
        ``before`` that this token may not give an agent."""
        if not self.scoped:
            return []
        had = set(_namespaces(before or {}))
        return [n for n in _namespaces(after) if n not in had and (
            self.namespaces is None or self.namespaces.fullmatch(n) is None)]


def _namespaces(settings: Mapping[str, Any]) -> list[str]:
    memory = settings.get("memory")
    names = memory.get("namespaces") if isinstance(memory, Mapping) else None
    return [n for n in names if isinstance(n, str)] if isinstance(names, list) else []


EVERYTHING = Access()


def scope_access(token: str, *, agents: Iterable[str] | None = None,
                 tenants: Iterable[str] | None = None,
                 namespaces: Iterable[str] = ()) -> Access:
    """The access of a token whose scope is these patterns (None: not restricted);
    :data:`EVERYTHING` (with the token's name) when neither restricts."""
    agents = None if agents is None else list(agents)
    tenants = None if tenants is None else list(tenants)
    if agents is None and tenants is None:
        return Access(token=token)
    parts = [f"agents {', '.join(agents) or '(none)'}" if agents is not None else "",
             f"tenants {', '.join(tenants) or '(none)'}" if tenants is not None else ""]
    return Access(token=token, agents=_compile(agents), tenants=_compile(tenants),
                  namespaces=_compile(list(namespaces)), scoped=True,
                  describe=" and ".join(p for p in parts if p),
                  agent_patterns=None if agents is None else tuple(agents),
                  tenant_patterns=None if tenants is None else tuple(tenants))


class Scopes:
    """The daemon's token scopes: an :class:`Access` per token name."""

    def __init__(self, config: Mapping[str, TokenScope]) -> None:
        self._by_token: dict[str, Access] = {}
        for token, scope in config.items():
            if not scope.scoped:
                continue  # (an entry that only gives a role)
            self._by_token[token] = scope_access(token, agents=scope.agents,
                                                 tenants=scope.tenants,
                                                 namespaces=scope.namespaces)

    def __bool__(self) -> bool:
        return bool(self._by_token)

    def of(self, token: str | None) -> Access:
        """The access of a request made with the token named ``token``."""
        if token is None or not self._by_token:
            return EVERYTHING
        return self._by_token.get(token, EVERYTHING)

    def scoped(self, token: str | None) -> bool:
        return token is not None and token in self._by_token
