"""Reloading the daemon's configuration while it runs (``SIGHUP``, ``POST /v1/admin/reload``).

A reload reads the settings exactly as the daemon's start did (built-in defaults <
``$AGENTD_HOME/agentd.toml`` < ``.env`` < ``AGENTD_*``, with the command line's
options again; the environment is the process's own, as it was at start: no one can
change a running process's environment), checks them whole, and only then changes
anything:

1. read and check: the file's syntax, unknown keys, every value, the checks the start
   makes beyond the model (the log level, the OpenTelemetry variables). A problem
   refuses the reload (:class:`ConfigInvalid`, 422 ``invalid_config`` naming each
   field) and nothing changes;
2. compare with what the daemon runs, setting by setting (``providers.openai.rpm``);
   each change is live or restart-only by :data:`FIELDS`;
3. check the daemon as it would run: the live changes over the restart-only settings
   it keeps (a check that spans both, such as ``access`` needing ``auth = "token"``,
   is made on what will really run), then let every part that holds a live setting
   prepare its change (a part may still refuse: nothing has changed yet);
4. apply: the live settings are set on the one :class:`~agentd.config.Settings` every
   service reads, and each part takes its prepared change.

The restart-only changes are reported, not applied: the daemon keeps running with
what it started with until it is restarted. Reloads are serialised: a second waits
for the first and compares with what the first applied. Each is logged, and recorded
in the audit log (``config.reload``), refused ones too.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final, Literal

from pydantic import BaseModel, ValidationError

from agentd.assembly._parts import KernelSettings
from agentd.config import ConfigFileError, Settings, default_home, load_settings
from agentd.errors import AgentdError, InvalidInput
from agentd.llm.registry import endpoint_providers
from agentd.security.identity import Principal
from agentd.telemetry import logs
from agentd.telemetry.follower import resolve as resolve_traces

if TYPE_CHECKING:
    from agentd.assembly.runtime import Runtime
    from agentd.identity.audit import AuditLog

__all__ = ["FIELDS", "Apply", "ConfigInvalid", "Prepare", "ReloadOutcome", "Reloader",
           "apply_of", "changed_paths", "field_of"]

log = logging.getLogger(__name__)

#: ``live``: a reload applies a change at once (for what starts from then on: a run
#: takes the policy, limits and models as it starts); ``restart``: the daemon reads it
#: at start only, and a reload reports the change as needing a restart.
Apply = Literal["live", "restart"]

#: How a reload treats a change to each setting of :class:`~agentd.config.Settings`:
#: a top-level field, or each key of a section whose keys differ (``telemetry``).
#: ``tests/server/test_reload.py`` fails when a setting is missing here.
FIELDS: Final[Mapping[str, Apply]] = MappingProxyType({
    # Where the daemon is and what it opened: its home, store, address and node.
    "home": "restart",
    "database_url": "restart",
    "store": "restart",
    "sqlite_synchronous": "restart",
    "sqlite_writer": "restart",
    "sqlite_cache_mb": "restart",
    "pgvector": "restart",
    "secrets_key_file": "restart",
    "host": "restart",
    "port": "restart",
    "public_url": "restart",
    "node_id": "restart",
    "lease_ttl_s": "restart",
    "node_check_s": "restart",
    # The request layer built at start: whether a token is needed, the public paths,
    # the origin check, the body limit, the console's routes.
    "auth": "restart",
    "public_paths": "restart",
    "allowed_hosts": "restart",
    "allowed_origins": "restart",
    "max_body_bytes": "restart",
    "console": "restart",
    # Who may do what: the configuration's tokens, their roles and scopes.
    "token": "live",
    "tokens": "live",
    "admin_tokens": "live",
    "access": "live",
    "audit": "live",
    # What members may name: providers, endpoints, MCP servers.
    "member_providers": "live",
    "models": "live",
    "mcp_commands": "live",
    "mcp_urls": "live",
    # The MCP door as an OAuth protected resource: its routes are made at start.
    "mcp": "restart",
    # The kernel: lanes, weights, tenants, retries, breakers.
    "providers": "live",
    "priority_weights": "live",
    "tenants": "live",
    "retry_attempts": "live",
    "retry_base_s": "live",
    "retry_max_s": "live",
    "breaker_failures": "live",
    "breaker_cooldown_s": "live",
    # What each run reads as it starts.
    "policy": "live",
    "default_model": "live",
    "max_steps": "live",
    "output_max_repairs": "live",
    "max_message_bytes": "live",
    "tool_timeout_s": "live",
    "checkpoint_interval_s": "live",
    # Worker processes, housekeeping periods and the shutdown's timing, set at start.
    "tool_workers": "restart",
    "tool_workers_per_agent": "restart",
    "tool_worker_memory_mb": "restart",
    "shutdown_grace_s": "restart",
    "agent_idle_s": "restart",
    "session_ttl_s": "restart",
    # The capabilities, built with their sections at start.
    "sandbox": "restart",
    "memory": "restart",
    "adapters": "restart",
    "a2a": "restart",
    "webhooks": "restart",
    "evals": "restart",
    "hooks": "restart",
    "termo": "restart",
    "channels": "restart",
    "browser": "restart",
    "web_search": "restart",
    "attachments": "restart",
    "demo_agent": "restart",
    "tool_modules": "restart",
    # Logs: the level and the format live; the rest of [telemetry] at start.
    "log_level": "live",
    "telemetry.log_format": "live",
    "telemetry.traces_exporter": "restart",
    "telemetry.otlp_endpoint": "restart",
    "telemetry.otlp_protocol": "restart",
    "telemetry.service_name": "restart",
    "telemetry.capture_content": "restart",
    "telemetry.metrics": "restart",
    "telemetry.metrics_listen": "restart",
    "telemetry.http": "restart",
})

#: What a part that holds live settings does on a reload: given the settings the
#: daemon will run, check and work out its change (raise ValueError or
#: :class:`~agentd.errors.AgentdError` to refuse the reload: nothing has changed
#: yet), and return what applies it (it must not fail).
Prepare = Callable[[Settings], Callable[[], object]]


class ConfigInvalid(InvalidInput):
    """The configuration cannot be loaded: nothing was changed. ``details.errors``
    names each field (``providers.openai.rpm``) and its problem."""

    code = "invalid_config"

    @classmethod
    def reading(cls, exc: Exception, file: str, *, combined: bool = False
                ) -> ConfigInvalid:
        errors: list[dict[str, str]] = []
        if isinstance(exc, ValidationError):
            for error in exc.errors():
                where = ".".join(str(p) for p in error["loc"])
                message = error["msg"].removeprefix("Value error, ")
                errors.append({"field": where, "message": message} if where
                              else {"field": "", "message": message})
            problem = "; ".join(f"{e['field']}: {e['message']}" if e["field"]
                                else e["message"] for e in errors)
        elif isinstance(exc, AgentdError):
            problem = exc.message
            errors = [e for e in exc.details.get("errors", []) if isinstance(e, dict)]
        else:
            problem = str(exc)
            if isinstance(exc, ConfigFileError):
                errors = [{"field": name, "message": "not a setting"} for name in exc.fields]
        errors = [e for e in errors if e.get("field")]
        also = (" with the settings that need a restart kept as they run" if combined
                else "")
        return cls(f"the configuration is not valid{also}: {problem}; nothing was changed",
                   details={"file": file, "errors": errors})


@dataclass(frozen=True, kw_only=True, slots=True)
class ReloadOutcome:
    """What a reload did: the settings it applied and those that need a restart, as
    paths (``providers.openai.rpm``, ``tenants.acme``, ``tokens``), sorted."""

    applied: tuple[str, ...]
    restart_required: tuple[str, ...]
    #: The configuration file read (it may not exist: then defaults and the
    #: environment only).
    file: str

    @property
    def unchanged(self) -> bool:
        """The configuration holds what the daemon runs."""
        return not self.applied and not self.restart_required

    def to_api(self) -> dict[str, Any]:
        return {"applied": list(self.applied), "restart_required":
                list(self.restart_required), "unchanged": self.unchanged, "file": self.file}


def field_of(path: str) -> str:
    """The key of :data:`FIELDS` a changed setting's path falls under."""
    head, _, rest = path.partition(".")
    section = f"{head}.{rest.partition('.')[0]}"
    return section if section in FIELDS else head


def apply_of(path: str) -> Apply:
    """How a reload treats the change of one setting's path: as :data:`FIELDS` says,
    but a provider lane's ``scope`` (whether the cluster's nodes share its limits)
    takes a restart: the lane, its calls and the store's rows are this node's or the
    cluster's from the start."""
    parts = path.split(".")
    if len(parts) == 3 and parts[0] == "providers" and parts[2] == "scope":
        return "restart"
    return FIELDS[field_of(path)]


def changed_paths(old: Any, new: Any, path: str = "") -> list[str]:
    """The paths of the settings that differ between ``old`` and ``new``: models by
    field, mappings by key (a key added or removed is its own path), anything else
    (lists, numbers, strings) whole."""
    if isinstance(old, BaseModel) and type(old) is type(new):
        found: list[str] = []
        for name in type(old).model_fields:
            found += changed_paths(getattr(old, name), getattr(new, name),
                                   f"{path}.{name}" if path else name)
        return found
    if isinstance(old, dict) and isinstance(new, dict) and path:
        found = []
        for key in sorted({*old, *new}, key=str):
            sub = f"{path}.{key}"
            if key in old and key in new:
                found += changed_paths(old[key], new[key], sub)
            else:
                found.append(sub)
        return found
    return [] if old == new else [path]


def _check(settings: Settings) -> None:
    """What the daemon's start checks beyond the settings' model."""
    try:
        logs.level_of(settings.log_level)
    except ValueError as exc:
        raise InvalidInput(f"log_level: {exc}", field="log_level") from None
    resolve_traces(settings.telemetry, os.environ)  # InvalidInput naming the variable


class Reloader:
    """Reloads of one daemon's configuration (one per runtime).

    Args:
        settings: The settings the daemon runs: the object every service reads, on
            which a reload sets the live settings.
        load: Reads the settings as the daemon's start did (the daemon passes its
            command line's options again); default :func:`agentd.config.load_settings`.
        audit: Where each reload is recorded.
    """

    def __init__(self, settings: Settings, *, load: Callable[[], Settings] | None = None,
                 audit: AuditLog | None = None) -> None:
        self.settings = settings
        self.load = load or load_settings
        self.audit = audit
        #: Reloads that applied something (parts that cache what they worked out from
        #: the settings compare it).
        self.generation = 0
        self._hooks: list[tuple[frozenset[str], Prepare]] = []
        self._lock = asyncio.Lock()

    def on_reload(self, fields: Iterable[str], prepare: Prepare) -> None:
        """Have ``prepare`` called when any of ``fields`` (keys of :data:`FIELDS`,
        live ones) changed."""
        keys = frozenset(fields)
        wrong = sorted(k for k in keys if FIELDS.get(k) != "live")
        if wrong:
            raise ValueError(f"not live settings: {', '.join(wrong)}")
        self._hooks.append((keys, prepare))

    @property
    def file(self) -> str:
        return str(default_home() / "agentd.toml")

    async def reload(self, *, actor: Principal | None = None, trigger: str = "api"
                     ) -> ReloadOutcome:
        """Read the configuration again and apply what can change live (see the
        module); :class:`ConfigInvalid` when it cannot be loaded (nothing changed).
        ``actor``: who asked (the API's token); ``trigger``: ``api`` or ``SIGHUP``."""
        async with self._lock:
            try:
                outcome = await self._reload()
            except ConfigInvalid as exc:
                log.error("configuration reload (%s) refused: %s", trigger, exc.message)
                await self._record(actor, trigger, outcome="denied", reason=exc.message,
                                   details={"errors": exc.details.get("errors", [])})
                raise
            if outcome.unchanged:
                log.info("configuration reload (%s): nothing changed in %s", trigger,
                         outcome.file)
            else:
                log.info("configuration reload (%s): applied %s; needs a restart: %s",
                         trigger, ", ".join(outcome.applied) or "nothing",
                         ", ".join(outcome.restart_required) or "nothing")
            await self._record(actor, trigger, outcome="allowed", reason="", details={
                "applied": list(outcome.applied),
                "restart_required": list(outcome.restart_required)})
            return outcome

    async def _reload(self) -> ReloadOutcome:
        file = self.file
        try:
            new = await asyncio.to_thread(self._read)
        except (ValueError, AgentdError) as exc:  # (ValidationError is a ValueError)
            raise ConfigInvalid.reading(exc, file) from None
        paths = changed_paths(self.settings, new)
        live = sorted(p for p in paths if apply_of(p) == "live")
        restart = sorted(p for p in paths if apply_of(p) == "restart")
        keys = {field_of(p) for p in live}
        running = self._running(new, keys, file)
        try:
            commits = [prepare(running) for fields, prepare in self._hooks
                       if fields & keys]
        except (ValueError, AgentdError) as exc:
            raise ConfigInvalid.reading(exc, file) from None
        for key in keys:  # every service reads these from the one settings object
            head = key.partition(".")[0]
            setattr(self.settings, head, getattr(running, head))
        for commit in commits:
            try:
                commit()
            except Exception:  # (a bug: the others still apply)
                log.exception("a part of the daemon could not apply the reloaded settings")
        if keys:
            self.generation += 1
        return ReloadOutcome(applied=tuple(live), restart_required=tuple(restart),
                             file=file)

    def _read(self) -> Settings:
        new = self.load()
        _check(new)
        return new

    def _running(self, new: Settings, keys: set[str], file: str) -> Settings:
        """The settings the daemon will run: its own, with the live ``keys`` of
        ``new``; checked whole (a check may span live and restart-only settings)."""
        values = {name: getattr(self.settings, name) for name in type(new).model_fields}
        for key in sorted(keys):
            head, _, sub = key.partition(".")
            values[head] = (values[head].model_copy(update={sub: getattr(
                getattr(new, head), sub)}) if sub else getattr(new, head))
        # A provider lane keeps the scope it started with (a restart changes it).
        values["providers"] = {
            name: (limits.model_copy(update={"scope": self.settings.providers[name].scope})
                   if name in self.settings.providers else limits)
            for name, limits in values["providers"].items()}
        try:
            return type(new).model_validate(values)
        except ValidationError as exc:
            raise ConfigInvalid.reading(exc, file, combined=True) from None

    async def _record(self, actor: Principal | None, trigger: str, *, outcome: str,
                      reason: str, details: dict[str, Any]) -> None:
        if self.audit is None:
            return
        try:
            await self.audit.append(
                actor=actor.name if actor is not None else f"({trigger})",
                role=actor.role if actor is not None else None, action="config.reload",
                resource=self.file[:500], outcome=outcome, reason=reason[:500],
                details={"trigger": trigger, **details})
        except Exception:
            log.exception("could not record the configuration reload in the audit log")


def install(runtime: Runtime, reloader: Reloader) -> None:
    """The runtime's parts that hold live settings, on ``reloader``: the kernel, the
    tenants, the audit log's cap, what members may name (with the awake agents'
    models), and the logs. (The server adds the request layer's tokens.)"""

    def kernel(settings: Settings) -> Callable[[], object]:
        parts = KernelSettings.of(settings)
        parts.scheduler(runtime.clock)  # (checked as the start checks it)
        return lambda: parts.apply(runtime.kernel)

    def tenants(settings: Settings) -> Callable[[], object]:
        return lambda: runtime.identity.tenants.configure(settings.tenants)

    def audit(settings: Settings) -> Callable[[], object]:
        def apply() -> None:
            runtime.identity.audit.limit = settings.audit.refusals_per_minute
        return apply

    def grants(settings: Settings) -> Callable[[], object]:
        endpoint_providers(settings.models)  # (ValueError naming the endpoint)

        def apply() -> None:
            runtime.identity.grants.configure(settings)
            dropped = runtime.agents.retarget(runtime.identity.grants.endpoints,
                                              runtime.supervisor.busy_agents())
            if dropped:
                log.info("named model endpoints changed: %d awake agent(s) take them at "
                         "their next run", len(dropped))
        return apply

    def logging_(settings: Settings) -> Callable[[], object]:
        old = reloader.settings
        level = settings.log_level if settings.log_level != old.log_level else None
        form = (settings.telemetry.log_format
                if settings.telemetry.log_format != old.telemetry.log_format else None)
        secrets = logs.known_secrets(settings, os.environ)
        return lambda: logs.reconfigure(level, form, secrets)

    reloader.on_reload(("providers", "priority_weights", "tenants", "retry_attempts",
                        "retry_base_s", "retry_max_s", "breaker_failures",
                        "breaker_cooldown_s"), kernel)
    reloader.on_reload(("tenants",), tenants)
    reloader.on_reload(("audit",), audit)
    reloader.on_reload(("member_providers", "models", "mcp_commands", "mcp_urls"), grants)
    reloader.on_reload(("log_level", "telemetry.log_format", "token", "tokens", "models"),
                       logging_)
