"""Agent-to-agent calls: who may call whom, and the agents a caller can see.

A call is a child run in the callee's session (:class:`agentd.autonomy.subtasks.
Subtasks` starts it and waits for it, exactly as a subtask); this module decides
whether it may start. Both sides must agree:

- the caller's ``settings.delegation.calls.allow`` names the callee (default: nobody);
- the callee's ``accept_from`` admits the caller (default ``null``: any agent of its
  own tenant; ``[]``: nobody);
- across tenants, only when the callee sets ``accept_other_tenants`` and names the
  caller in ``accept_from`` explicitly;
- never itself (a run that wants help from its own agent starts a subtask), never an
  agent already in the chain of calls that led here (A -> B -> A), never deeper than
  the caller's ``calls.max_depth``.

Each refusal is a :class:`~agentd.errors.ToolError` whose code and message say why,
with one exception: an agent of another tenant that does not take this caller is
answered exactly as an agent that does not exist (:func:`no_agent`). Tenants do not
learn each other's agent names by asking: a tenant-scoped token makes agents that
call (or teams that name) whatever it likes, and a hostile model tries names too.
"""

from __future__ import annotations

from dataclasses import dataclass

from agentd.errors import InvalidInput, ToolError
from agentd.security.access import tenant_of
from agentd.settings import AgentSettings
from agentd.settings.check import stored_settings
from agentd.settings.delegation import HARD_MAX_DEPTH, DelegationSettings, matches
from agentd.store.records import AgentRecord

__all__ = ["Peer", "callable_agents", "check_allowed", "check_call", "describe", "foreign",
           "no_agent", "settings_of"]

#: Agents ``agents_list`` shows at most.
MAX_LISTED = 200


@dataclass(frozen=True, kw_only=True, slots=True)
class Peer:
    """An agent as the permission checks see it: its name, tenant and settings."""

    name: str
    tenant: str
    delegation: DelegationSettings

    @classmethod
    def of(cls, agent: AgentRecord) -> Peer | None:
        """None when the agent's stored settings are refused by this version (it can
        then neither call nor be called)."""
        settings = settings_of(agent)
        if settings is None:
            return None
        return cls(name=agent.name, tenant=settings.tenant, delegation=settings.delegation)


def settings_of(agent: AgentRecord) -> AgentSettings | None:
    """The agent's settings as stored, read without waking it (None if invalid)."""
    try:
        return stored_settings(agent.settings)
    except InvalidInput:
        return None


def no_agent(name: str) -> ToolError:
    """What a caller is told of an agent that does not exist, and of one of another
    tenant that does not take its calls: the same words."""
    return ToolError(f"there is no agent named {name!r}", code="agent_not_found")


def foreign(caller: Peer, callee: AgentRecord) -> bool:
    """Whether ``callee`` is, to ``caller``, an agent of another tenant that does not
    take its calls: one it must not learn exists. An agent whose stored settings this
    version refuses is judged by the tenant they name."""
    peer = Peer.of(callee)
    if peer is None:
        return tenant_of(callee.settings) != caller.tenant
    return peer.tenant != caller.tenant and not _accepts_foreign(caller, peer)


def _accepts_foreign(caller: Peer, callee: Peer) -> bool:
    accept = callee.delegation.calls.accept_from
    return bool(callee.delegation.calls.accept_other_tenants and accept
                and matches(caller.name, accept))


def _refusal(caller: Peer, callee: Peer) -> str | None:
    """Why ``caller`` may not call ``callee`` (None: it may). Another tenant's callee
    that does not accept the caller is refused before (:func:`foreign`)."""
    if callee.name == caller.name:
        return "an agent cannot call itself (start a subtask instead)"
    if not matches(callee.name, caller.delegation.calls.allow):
        return (f"agent {callee.name!r} is not in this agent's settings.delegation.calls."
                "allow")
    accept = callee.delegation.calls.accept_from
    if caller.tenant != callee.tenant:
        return None if _accepts_foreign(caller, callee) else "it is of another tenant"
    if accept is not None and not matches(caller.name, accept):
        return f"agent {callee.name!r} does not accept calls from {caller.name!r}"
    return None


def check_allowed(caller: Peer, callee_name: str) -> None:
    """The caller's own half of the permission (its ``allow`` list; never itself)."""
    if callee_name == caller.name:
        raise ToolError("not allowed: an agent cannot call itself (start a subtask "
                        "instead)", code="agent_call_denied")
    if not matches(callee_name, caller.delegation.calls.allow):
        raise ToolError(f"not allowed to call {callee_name!r}: it is not in this agent's "
                        "settings.delegation.calls.allow", code="agent_call_denied")


def check_call(caller: Peer, record: AgentRecord, *, chain: list[str], depth: int) -> None:
    """Raise a :class:`ToolError` saying why ``caller`` may not start a run of the
    agent ``record`` ``depth`` levels down a chain of agents ``chain``: for an agent of
    another tenant that does not take the caller's calls, :func:`no_agent`."""
    callee_name = record.name
    if foreign(caller, record):
        raise no_agent(callee_name)
    callee = Peer.of(record)
    if callee is None:
        raise ToolError(f"agent {callee_name!r} cannot take calls (its settings are "
                        "invalid)", code="agent_call_denied")
    why = _refusal(caller, callee)
    if why is not None:
        raise ToolError(f"not allowed to call {callee_name!r}: {why}",
                        code="agent_call_denied")
    if callee.name in chain:
        raise ToolError(f"calling {callee_name!r} would make a cycle: the chain of calls "
                        f"that led here is {' -> '.join(chain)}", code="agent_call_cycle")
    limit = min(caller.delegation.calls.max_depth, HARD_MAX_DEPTH)
    if depth > limit:
        raise ToolError(f"calling {callee_name!r} would nest calls {depth} deep; "
                        f"the limit is {limit} (settings.delegation.calls.max_depth)",
                        code="agent_call_depth")


def describe(agent: AgentRecord) -> str:
    """One line about an agent: the first line of its instructions (at most 200
    characters), or its model."""
    first = next((line.strip() for line in agent.instructions.splitlines()
                  if line.strip()), "")
    return first[:200] or f"(no instructions; model {agent.model})"


def callable_agents(caller: AgentRecord, agents: list[AgentRecord], chain: list[str]
                    ) -> list[tuple[AgentRecord, str]]:
    """The agents ``caller`` may call now, each with its one-line description (those
    in ``chain`` left out: calling them would make a cycle)."""
    me = Peer.of(caller)
    if me is None or not me.delegation.calls.allow:
        return []
    out: list[tuple[AgentRecord, str]] = []
    for agent in agents:
        if agent.name in chain or not matches(agent.name, me.delegation.calls.allow):
            continue
        peer = Peer.of(agent)
        if peer is None or _refusal(me, peer) is not None:
            continue
        out.append((agent, describe(agent)))
        if len(out) >= MAX_LISTED:
            break
    return out
