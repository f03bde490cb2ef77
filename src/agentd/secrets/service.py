"""Named secrets: set, listed (names only), deleted, resolved where they are used.

A secret belongs to a tenant, and optionally to one agent of it. An agent uses its
own secret of a name before its tenant's. Values are sealed at rest
(:mod:`agentd.secrets._cipher`), never returned by the API, and resolved only at
the point of use (:meth:`Secrets.resolve`), each use an audit row. Who may set,
see and delete which is the door's to decide (``agentd.server.routes.secrets``):
this service trusts the tenant and agent it is given.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentd.errors import AgentdError, InvalidInput, NotFound
from agentd.secrets._cipher import Cipher, SecretKeyError, load_key
from agentd.security.redaction import SecretRedactor, encoded_forms
from agentd.settings import AgentSettings
from agentd.store.audit import AuditEntry
from agentd.store.records import iso
from agentd.store.secrets import SecretRow, SecretStore
from agentd.tools.secret_refs import references

__all__ = ["MAX_VALUE", "MIN_VALUE", "NAME_PATTERN", "REF_PREFIX", "RESERVED_PREFIX",
           "RunSecrets", "SecretInfo", "Secrets", "check_name", "reference", "reserved",
           "setting_references"]

#: A secret's name: a letter or ``_`` first, then letters, digits, ``_``, ``.``, ``-``.
NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$"
_NAME = re.compile(NAME_PATTERN.replace("$", r"\Z"))
#: A value's bounds: shorter than MIN_VALUE would be redacted out of ordinary text
#: (every ``[secret:...]`` in the log would hide a common word).
MIN_VALUE = 8
MAX_VALUE = 65536
#: How settings name a secret: ``secret:NAME``.
REF_PREFIX = "secret:"
#: Names the daemon keeps its own secrets under (MCP servers' OAuth tokens:
#: :mod:`agentd.secrets.oauth`): not set, deleted, listed nor named by settings here.
RESERVED_PREFIX = "_mcp_oauth."

log = logging.getLogger(__name__)


def reserved(name: str) -> bool:
    """Whether ``name`` is one the daemon keeps for itself (:data:`RESERVED_PREFIX`)."""
    return name.startswith(RESERVED_PREFIX)


def check_name(name: str, field: str = "body.name") -> str:
    """``name`` if it is a valid secret name; InvalidInput (422) saying why not."""
    if not _NAME.match(name):
        raise InvalidInput(f"secret name {name[:80]!r} is not valid: a letter or '_' "
                           "first, then letters, digits, '_', '.', '-' (64 at most)",
                           field=field)
    if reserved(name):
        raise InvalidInput(f"secret names starting with {RESERVED_PREFIX!r} are the "
                           "daemon's own (MCP servers' OAuth tokens: agentd mcp login, "
                           "agentd mcp logout)", field=field, code="secret_reserved")
    return name


def reference(value: object) -> str | None:
    """The secret name ``value`` refers to (``secret:NAME``), else None."""
    if isinstance(value, str) and value.startswith(REF_PREFIX):
        return value[len(REF_PREFIX):]
    return None


@dataclass(frozen=True, kw_only=True, slots=True)
class SecretInfo:
    """What may be shown of a secret: never its value."""

    name: str
    tenant: str
    agent: str | None
    created_at: float
    updated_at: float

    def to_api(self) -> dict[str, Any]:
        return {"name": self.name, "tenant": self.tenant, "agent": self.agent,
                "created_at": iso(self.created_at), "updated_at": iso(self.updated_at)}


def _info(row: SecretRow) -> SecretInfo:
    return SecretInfo(name=row.name, tenant=row.tenant, agent=row.agent or None,
                      created_at=row.created_at, updated_at=row.updated_at)


def _not_found(name: str, tenant: str, agent: str | None) -> NotFound:
    where = f"agent {agent!r}" if agent else f"tenant {tenant!r}"
    return NotFound(f"secret {name!r} not found for {where}", code="secret_not_found",
                    details={"name": name})


#: Seconds an agent's secret values are kept for its runs' redaction (one store read
#: per agent and period instead of one per run: a read a turn cost an echo turn about
#: a tenth of its CPU). This daemon's own changes take effect at once; another node's
#: within this time (a value a run resolves is always read afresh, and redacted).
VALUES_TTL_S = 5.0


class Secrets:
    """The daemon's named secrets (one per runtime)."""

    def __init__(self, store: SecretStore, *, key_file: Path,
                 environ: Mapping[str, str], tenant_exists: Callable[[str], bool],
                 clock: Callable[[], float] = time.time,
                 on_values: Callable[[set[str]], object] | None = None) -> None:
        """``on_values``: told every value (and its encoded forms) this daemon opens,
        before any use of it (the daemon's log redactor learns them)."""
        self.store = store
        self.on_values = on_values
        self.key_file = key_file
        self.environ = environ
        self.tenant_exists = tenant_exists
        self.clock = clock
        self._cipher: Cipher | None = None
        #: (tenant, agent) -> when read, and the values by name (see VALUES_TTL_S).
        self._values: dict[tuple[str, str], tuple[float, dict[str, str]]] = {}
        #: What a value of the daemon's own secrets holds that a run must never write
        #: (given the name and the value as stored: the parts, by a name each); set by
        #: :mod:`agentd.secrets.oauth`.
        self.expand: Callable[[str, str], dict[str, str]] = lambda name, value: {}

    async def cipher(self) -> Cipher:
        """The key, read (or made) at first use."""
        if self._cipher is None:
            try:
                key = await asyncio.to_thread(load_key, self.key_file, self.environ)
            except (SecretKeyError, OSError) as exc:
                raise AgentdError(f"the secrets key cannot be used: {exc}",
                                  code="secrets_key_error") from None
            self._cipher = Cipher(key)
        return self._cipher

    def _audit(self, *, actor: str | None, role: str | None, action: str, resource: str,
               details: dict[str, Any] | None = None) -> AuditEntry:
        return AuditEntry(actor=actor, role=role, action=action, resource=resource,
                          outcome="allowed", details=details or {}, at=self.clock())

    async def set(self, *, name: str, value: str, tenant: str, agent: str | None,
                  actor: str | None, role: str | None) -> tuple[SecretInfo, bool]:
        """Set secret ``name`` of ``tenant`` (of its agent ``agent``); the secret and
        whether it is new. Only the name and scope go to the audit log."""
        check_name(name)
        if not MIN_VALUE <= len(value) <= MAX_VALUE:
            raise InvalidInput(f"a secret's value is {MIN_VALUE} to {MAX_VALUE} characters "
                               f"long (this one: {len(value)})", field="body.value")
        if "\x00" in value:
            raise InvalidInput("a secret's value holds no NUL character",
                               field="body.value")
        if not self.tenant_exists(tenant):
            raise InvalidInput(f"tenant {tenant!r} does not exist", field="body.tenant")
        cipher = await self.cipher()
        scope = agent or ""
        sealed = cipher.seal(value, tenant=tenant, agent=scope, name=name)
        row, fresh = await self.store.put(
            tenant=tenant, agent=scope, name=name, value=sealed, key_id=cipher.key_id,
            now=self.clock(), audit=self._audit(
                actor=actor, role=role, action="secret.set",
                resource=_resource(name, tenant, agent)))
        self._values.clear()
        return _info(row), fresh

    async def listing(self, *, tenants: list[str] | None = None) -> list[SecretInfo]:
        return [_info(r) for r in await self.store.listing(tenants=tenants)
                if not reserved(r.name)]

    async def delete(self, *, name: str, tenant: str, agent: str | None,
                     actor: str | None, role: str | None) -> None:
        """Delete one secret; ``secret_not_found`` (404) when there is none."""
        check_name(name, field="path.name")
        gone = await self.store.delete(
            tenant=tenant, agent=agent or "", name=name, audit=self._audit(
                actor=actor, role=role, action="secret.delete",
                resource=_resource(name, tenant, agent)))
        self._values.clear()
        if not gone:
            raise _not_found(name, tenant, agent)

    async def _rows(self, tenant: str, agent: str) -> dict[str, SecretRow]:
        """The rows an agent may use by name (its own over its tenant's)."""
        found: dict[str, SecretRow] = {}
        for row in await self.store.usable(tenant=tenant, agent=agent):
            found.setdefault(row.name, row)
        return found

    async def exists(self, name: str, *, tenant: str, agent: str) -> bool:
        """Whether agent ``agent`` of ``tenant`` has a secret ``name`` to use."""
        return name in await self._rows(tenant, agent)

    async def check_settings(self, name: str, settings: AgentSettings) -> None:
        """Refuse (422, naming the field) settings of agent ``name`` that name a secret
        it has none of: neither its own nor its tenant's (another tenant's secret is
        not found either). An agent's own secret needs the agent first: create it,
        set the secret, then name it."""
        refs = setting_references(settings)
        if not refs:
            return
        usable = await self._rows(settings.tenant, name)
        for where, secret in refs:
            if reserved(secret):
                raise InvalidInput(f"secret {secret!r} is the daemon's own (an MCP "
                                   "server's OAuth tokens): settings may not name it",
                                   field=where, code="secret_reserved")
            if secret not in usable:
                raise InvalidInput(
                    f"secret {secret!r} not found for agent {name!r} (tenant "
                    f"{settings.tenant!r}): set it first (POST /v1/secrets, agentd secret "
                    "set)", field=where)

    async def resolve(self, name: str, *, tenant: str, agent: str, use: str,
                      actor: str | None = None) -> str:
        """The value of secret ``name`` for agent ``agent`` of ``tenant``, for ``use``
        (``mcp:github header Authorization``...): an audit row says so.
        ``secret_not_found`` (404) when the agent has none of that name (the daemon's
        own, :func:`reserved`, are none of its)."""
        row = None if reserved(name) else (await self._rows(tenant, agent)).get(name)
        if row is None:
            raise _not_found(name, tenant, agent)
        cipher = await self.cipher()
        try:
            value = cipher.open(row.value, key_id=row.key_id, tenant=row.tenant,
                                agent=row.agent, name=row.name)
        except SecretKeyError as exc:
            raise AgentdError(str(exc), code="secrets_key_error") from None
        self.learn([value])
        kept = self._values.get((tenant, agent))
        if kept is not None:
            kept[1][name] = value
        await self.store.audit(self._audit(
            actor=actor, role=None, action="secret.use",
            resource=_resource(name, row.tenant, row.agent or None),
            details={"agent": agent, "use": use}))
        return value

    async def values(self, *, tenant: str, agent: str) -> dict[str, str]:
        """Every value agent ``agent`` of ``tenant`` could use, by name (for the
        redaction of what its runs write); a value that does not open is left out.
        Kept :data:`VALUES_TTL_S` seconds."""
        now = self.clock()
        kept = self._values.get((tenant, agent))
        if kept is not None and 0 <= now - kept[0] < VALUES_TTL_S:
            return dict(kept[1])
        found = await self._read_values(tenant, agent)
        if len(self._values) >= 4096:  # (agents come and go: keep it bounded)
            self._values.clear()
        self._values[(tenant, agent)] = (now, found)
        return dict(found)

    async def _read_values(self, tenant: str, agent: str) -> dict[str, str]:
        rows = await self._rows(tenant, agent)
        if not rows:
            return {}
        try:
            cipher = await self.cipher()
        except AgentdError as exc:
            # (Nothing can be opened, so nothing can be used, nor leak through a use.)
            log.warning("secrets of agent %s not loaded for redaction: %s", agent, exc)
            return {}
        found: dict[str, str] = {}
        for name, row in rows.items():
            try:
                value = cipher.open(row.value, key_id=row.key_id, tenant=row.tenant,
                                    agent=row.agent, name=row.name)
            except SecretKeyError:
                continue
            if reserved(name):
                found.update(self.expand(name, value))
            else:
                found[name] = value
        self.learn(found.values())
        return found

    async def open_row(self, *, tenant: str, agent: str, name: str) -> str | None:
        """The value of one stored secret of exactly this scope (``agent`` '' for the
        tenant's), unaudited (the caller audits its own uses), or None; what it holds
        is learnt by the daemon's log redactor."""
        row = await self.store.get(tenant=tenant, agent=agent, name=name)
        if row is None:
            return None
        cipher = await self.cipher()
        try:
            value = cipher.open(row.value, key_id=row.key_id, tenant=row.tenant,
                                agent=row.agent, name=row.name)
        except SecretKeyError as exc:
            raise AgentdError(str(exc), code="secrets_key_error") from None
        self.learn(self.expand(name, value).values() if reserved(name) else [value])
        return value

    def forget_values(self) -> None:
        """Read the values again at the next run (one changed here)."""
        self._values.clear()

    def learn(self, values: Iterable[str]) -> None:
        """Tell the daemon's log redactor of these values (and their encoded forms)."""
        if self.on_values is not None:
            forms: set[str] = set()
            for value in values:
                forms |= encoded_forms(value)
            if forms:
                self.on_values(forms)


def setting_references(settings: AgentSettings) -> list[tuple[str, str]]:
    """``(field, secret name)`` of every ``secret:NAME`` an agent's settings hold."""
    found: list[tuple[str, str]] = []
    for index, server in enumerate(settings.mcp):
        for part, values in (("env", server.env), ("headers", server.headers)):
            found += [(f"body.settings.mcp.{index}.{part}.{key}", secret)
                      for key, secret in references(values)]
        client_secret = server.oauth.client_secret if server.oauth is not None else None
        if client_secret is not None:
            found.append((f"body.settings.mcp.{index}.oauth.client_secret",
                          client_secret.removeprefix(REF_PREFIX)))
    for host, headers in settings.http_headers.items():
        found += [(f"body.settings.http_headers.{host}.{key}", secret)
                  for key, secret in references(headers)]
    return found


def _resource(name: str, tenant: str, agent: str | None) -> str:
    return f"secret:{tenant}/{agent}/{name}" if agent else f"secret:{tenant}/{name}"


class RunSecrets:
    """The secrets of one run's agent, for its tools and MCP servers
    (:class:`agentd.tools.secret_refs.SecretSource`): each value resolved is also
    given to the run's redactor, so that what the run writes never holds it."""

    def __init__(self, secrets: Secrets, *, tenant: str, agent: str,
                 redactor: SecretRedactor | None = None) -> None:
        self.secrets = secrets
        self.tenant = tenant
        self.agent = agent
        self.redactor = redactor

    async def resolve(self, name: str, *, use: str) -> str:
        value = await self.secrets.resolve(name, tenant=self.tenant, agent=self.agent,
                                           use=use, actor=f"agent:{self.agent}")
        if self.redactor is not None:
            self.redactor.add({name: value})
        return value
