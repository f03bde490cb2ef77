"""The checks on an agent's ``settings`` that belong to the runtime (the providers check
their own: base_url, api_key_env, max_tokens, ...). Each refusal names its field."""

from __future__ import annotations

import shlex
from typing import Any

from pydantic import ValidationError

from agentd.config import PRIORITIES, AgentSandbox
from agentd.errors import Forbidden, InvalidInput
from agentd.runtime.budgets import parse_budget
from agentd.security.policy import parse_policy
from agentd.tools.mcp import MCPServer

__all__ = ["MAX_MCP_SERVERS", "check_agent_settings", "check_mcp_commands", "mcp_servers",
           "sandbox_settings"]

MAX_MCP_SERVERS = 16


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _whole(value: Any, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _refuse(name: str, message: str) -> InvalidInput:
    return InvalidInput(f"settings.{name} {message}", field=f"body.settings.{name}")


def check_agent_settings(settings: dict[str, Any]) -> None:
    """Refuse a bad ``settings`` value with a 422 that names it."""
    max_steps = settings.get("max_steps")
    if max_steps is not None and not _whole(max_steps, 1, 1000):
        raise _refuse("max_steps", "must be an integer from 1 to 1000")
    guard = settings.get("loop_guard")
    if guard is not None:
        repeats = guard.get("repeats", 5) if isinstance(guard, dict) else None
        if (not isinstance(guard, dict) or set(guard) - {"repeats", "action"}
                or guard.get("action", "warn") not in ("warn", "stop")
                or not _whole(repeats, 2, 100)):
            raise _refuse("loop_guard", 'must be {"repeats": 2-100, "action": "warn" or '
                                        '"stop"}')
    fallbacks = settings.get("fallbacks")
    if fallbacks is not None:
        if not isinstance(fallbacks, list) or len(fallbacks) > 8:
            raise _refuse("fallbacks", "must be a list of up to 8 models "
                                       '("provider:model" or {"model": ..., "settings": {...}})')
        for index, entry in enumerate(fallbacks):
            if isinstance(entry, str):
                continue
            if (not isinstance(entry, dict) or set(entry) - {"model", "settings"}
                    or not isinstance(entry.get("model"), str)
                    or not isinstance(entry.get("settings", {}), dict)):
                raise _refuse(f"fallbacks[{index}]", 'must be "provider:model" or '
                                                     '{"model": "provider:model", '
                                                     '"settings": {...}}')
    tenant = settings.get("tenant")
    if tenant is not None and (not isinstance(tenant, str) or not 0 < len(tenant) <= 64):
        raise _refuse("tenant", "must be a name of 1-64 characters")
    weight = settings.get("weight")
    if weight is not None and (not _number(weight) or not 0 < weight <= 1000):
        raise _refuse("weight", "must be a number greater than 0 and at most 1000")
    priority = settings.get("priority")
    if priority is not None and priority not in PRIORITIES:
        raise _refuse("priority", f"must be one of {', '.join(PRIORITIES)}")
    on_outage = settings.get("on_outage")
    if on_outage is not None and on_outage not in ("wait", "fail"):
        raise _refuse("on_outage", 'must be "wait" (park the run until a model answers) '
                                   'or "fail"')
    timeout = settings.get("outage_timeout_s")
    if timeout is not None and (not _number(timeout) or timeout < 0):
        raise _refuse("outage_timeout_s", "must be a number of seconds >= 0 (0: no limit)")
    continuations = settings.get("max_continuations")
    if continuations is not None and not _whole(continuations, 0, 20):
        raise _refuse("max_continuations", "must be an integer from 0 to 20")
    retries = settings.get("max_retries")
    if retries is not None and not _whole(retries, 0, 20):
        raise _refuse("max_retries", "must be an integer from 0 to 20")
    parse_budget(settings.get("budget"))
    parse_policy(settings.get("policy"), "settings.policy", "body.settings.policy")
    sandbox_settings(settings)
    mcp_servers(settings)


def mcp_servers(settings: dict[str, Any]) -> list[MCPServer]:
    """The agent's ``settings.mcp`` servers, checked (422 naming the field)."""
    value = settings.get("mcp")
    if value is None:
        return []
    if not isinstance(value, list) or len(value) > MAX_MCP_SERVERS:
        raise _refuse("mcp", f"must be a list of up to {MAX_MCP_SERVERS} MCP servers "
                             '({"name": ..., "command": [...]} or {"name": ..., '
                             '"url": ...})')
    servers = []
    for index, entry in enumerate(value):
        try:
            servers.append(MCPServer.model_validate(entry))
        except ValidationError as exc:
            raise InvalidInput.of(exc, f"settings.mcp[{index}]",
                                  f"body.settings.mcp[{index}]") from None
    names = [s.name for s in servers]
    if len(set(names)) != len(names):
        raise _refuse("mcp", "names a server twice")
    return servers


def check_mcp_commands(servers: list[MCPServer], allowed: list[str]) -> None:
    """Refuse (403) a stdio server whose command is not on the operator's list
    (``mcp_commands``): for requests from tokens that are not the daemon's admins."""
    prefixes = [shlex.split(entry) for entry in allowed]
    for index, server in enumerate(servers):
        command = server.command
        if command is None:
            continue
        if not any(p and command[:len(p)] == p for p in prefixes):
            raise Forbidden(
                f"settings.mcp[{index}]: the command {shlex.join(command)!r} is not in "
                "the daemon's mcp_commands; only an admin token may configure it",
                details={"field": f"body.settings.mcp[{index}].command"})


def sandbox_settings(settings: dict[str, Any]) -> AgentSandbox:
    """The agent's ``settings.sandbox``, checked (422 naming the field)."""
    try:
        return AgentSandbox.model_validate(settings.get("sandbox") or {})
    except ValidationError as exc:
        raise InvalidInput.of(exc, "settings.sandbox", "body.settings.sandbox") from None
