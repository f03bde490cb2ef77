"""Approvals: the requests runs wait on, listed and decided.

A request is an ``approval.requested`` event of a run in ``waiting_approval`` (see
:mod:`agentd.store._approvals`); a decision is an ``approval.decided`` event. Two kinds:

- ``policy``: the permission policy said ``ask`` for a tool call; ``approve`` (with the
  model's arguments, or with ``arguments`` edited by the person) or ``deny``. With
  ``remember`` (``"arguments"``: these exact arguments; ``"tool"``: the tool whatever
  its arguments; for ``deny`` only), the decision also becomes a rule at the front of
  the agent's ``settings.policy.rules``, so the agent is not asked again. ``by`` is the
  name of the token the decision came with (only a person holds one).
- ``unknown_outcome``: a non-idempotent call was cut off by a crash; ``retry``,
  ``skip`` (with the ``output`` to record) or ``fail``.

The run waits in its executor; a decision for a run no executor of this node holds
(its node died, or it waits on another node) is logged by the store and this node
takes the run over, resuming it with the decision.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from agentd.errors import Conflict, InvalidInput, NotFound
from agentd.events import DecisionData
from agentd.runtime.agents import Agents
from agentd.runtime.bus import EventBus
from agentd.runtime.guard import NO_GUARD, Guard
from agentd.runtime.supervisor import Supervisor
from agentd.security.identity import Principal
from agentd.security.policy import Policy, PolicyConfig, sticky_rule
from agentd.settings import stored_settings
from agentd.store import Store
from agentd.tools import ToolRegistry

if TYPE_CHECKING:
    from agentd.runtime.loop import RunExecutor

__all__ = ["REMEMBER", "ApprovalDesk"]

REMEMBER = ("arguments", "tool")
#: How long a decision waits for a run held here to be ready for it.
HOLD_WAIT_S = 10.0


class ApprovalNotFound(NotFound):
    code = "approval_not_found"


class ApprovalDesk:
    """The runtime's approval requests. Owned by :class:`~agentd.assembly.Runtime`.

    Args:
        permissions_for: the layered policy of a session (agent layer, session layer).
    """

    def __init__(self, store: Store, *, bus: EventBus, agents: Agents, tools: ToolRegistry,
                 supervisor: Supervisor,
                 permissions_for: Callable[[PolicyConfig, PolicyConfig | None], Policy],
                 guard: Guard = NO_GUARD) -> None:
        self.store = store
        self.guard = guard
        self.bus = bus
        self.agents = agents
        self.tools = tools
        self.supervisor = supervisor
        self.permissions_for = permissions_for

    async def pending(self, agent: str | None = None) -> list[dict[str, Any]]:
        """Undecided requests, oldest first, each with its run, agent and session."""
        if agent is not None:
            await self.agents.get(agent)  # 404 for an unknown agent
        return await self.store.pending_approvals(agent)

    async def get(self, approval_id: str) -> dict[str, Any]:
        for request in await self.store.pending_approvals():
            if request.get("approval_id") == approval_id:
                return request
        raise ApprovalNotFound(f"no pending approval {approval_id!r} (it was decided, "
                               "expired, or never existed)")

    async def decide(self, approval_id: str, action: str, *,
                     arguments: dict[str, Any] | None = None, output: str | None = None,
                     remember: str | None = None, reason: str | None = None,
                     by: str | None = None, actor: Principal | None = None
                     ) -> dict[str, Any]:
        """Decide a pending request; returns the decision as logged. ``actor``: the
        person's token (``by`` is its name; the decision is audited)."""
        request = await self.get(approval_id)
        return await self._decide(request, action, arguments=arguments, output=output,
                                  remember=remember, reason=reason,
                                  by=actor.name if actor is not None else by, actor=actor)

    async def decide_run(self, run_id: str, action: str, output: str | None = None, *,
                         actor: Principal | None = None) -> dict[str, Any]:
        """Decide what ``run_id`` waits on (the older, run-addressed API)."""
        for request in await self.store.pending_approvals():
            if request["run_id"] == run_id:
                return await self._decide(request, action, output=output, actor=actor,
                                          by=actor.name if actor is not None else None)
        run = await self.store.get_run(run_id)
        raise Conflict(f"run {run_id} is {run.status}, not waiting for a decision",
                       code="not_waiting")

    # complexity: one check per decision option (approve, edit, deny, retry, skip, fail,
    # remember) against what the request offers, each refusing with its own error,
    # before one write.
    async def _decide(self, request: dict[str, Any], action: str, *,
                      arguments: dict[str, Any] | None = None, output: str | None = None,
                      remember: str | None = None, reason: str | None = None,
                      by: str | None = None, actor: Principal | None = None
                      ) -> dict[str, Any]:
        options = request.get("options") or ["retry", "skip", "fail"]
        if action not in options:
            raise InvalidInput(f"unknown action {action!r}; this request takes "
                               f"{', '.join(options)}", field="body.action")
        policy_kind = request.get("kind") == "policy"
        if arguments is not None:
            if not policy_kind or action != "approve":
                raise InvalidInput("arguments can only be given to approve a tool call",
                                   field="body.arguments")
            tool = self.tools.get(request["name"])
            if tool is not None:
                try:
                    tool.validate(arguments)
                except Exception as exc:
                    raise InvalidInput(f"the edited arguments do not fit {request['name']}: "
                                       f"{getattr(exc, 'message', exc)}",
                                       field="body.arguments") from None
        if remember is not None and (not policy_kind or remember not in REMEMBER):
            raise InvalidInput("remember takes 'arguments' or 'tool', for a policy "
                               "request", field="body.remember")
        if remember == "tool" and action == "approve":
            # A rule for the tool would allow every later call of it: more than the
            # person saw. An approval is remembered for exactly these arguments.
            raise InvalidInput("remember 'tool' is only for deny; an approval is "
                               "remembered for its exact arguments ('arguments')",
                               field="body.remember")
        if output is not None and policy_kind:
            raise InvalidInput("output is for skipping a call of unknown outcome",
                               field="body.output")
        run_id = request["run_id"]
        run = await self.store.get_run(run_id)
        executor = await self._holder(run.session_id, run_id)
        if executor is not None:
            waiting = executor.waiting_for
            if waiting is None or waiting.get("approval_id") != request.get("approval_id"):
                raise Conflict("the run is not waiting for this decision (yet); try again",
                               code="not_waiting", retryable=True)
        remembered = (None if remember is None
                      else await self._remembered(request, action, arguments, remember, by))
        if remembered is not None and executor is not None:
            # The run's next calls see the rule at once (it is saved just below).
            executor.permissions = self.permissions_for(
                remembered[1], executor.permissions.layers_by_name().get("session"))
        if executor is not None:
            data = await executor.decide(action, output, arguments=arguments,
                                         reason=reason, by=by)
        else:
            decision: DecisionData = {"action": action}
            if output is not None or not policy_kind:
                decision["output"] = output
            if arguments is not None:
                decision["arguments"] = arguments
            if reason is not None:
                decision["reason"] = reason
            if by is not None:
                decision["by"] = by
            event = await self.store.decide_unheld(run_id, decision)
            self.bus.publish([event])
            self.supervisor.submit(run.session_id, run_id, agent_id=run.agent_id,
                                      order=run.queued_seq)
            data = event.data
        self.supervisor.waiting_runs.discard(run_id)
        if remembered is not None:
            # (a rule a person's decision makes: no operator-only field, so the role
            # does not matter; the change is audited with the decision)
            await self.agents.update(request["agent"], {"settings": remembered[0]})
        if self.guard.audit is not None and actor is not None:
            await self.guard.audit.append(
                actor=actor.name, role=actor.role, action="approval.decide",
                resource=f"run:{request['run_id']}",
                details={"agent": request.get("agent"), "action": action,
                         "approval_id": request.get("approval_id"),
                         "tool": request.get("name"),
                         **({"remember": remember} if remember else {})})
        return data

    async def _holder(self, session_id: str, run_id: str) -> RunExecutor | None:
        """The executor of this node that holds the run, once it waits for the decision
        (a run resuming after a restart is held here before it asks again: deciding
        around it would race its resume), or None when no executor here holds it."""
        supervisor = self.supervisor
        deadline = time.monotonic() + HOLD_WAIT_S
        while supervisor.is_known(run_id) and time.monotonic() < deadline:
            executor = supervisor.active_executor(session_id, run_id)
            if executor is not None and not executor.lost:
                await executor.asking(max(deadline - time.monotonic(), 0.0))
                return executor
            await asyncio.sleep(0.01)
        if supervisor.is_known(run_id):
            raise Conflict("the run is held here but not waiting yet; try again",
                           code="not_waiting", retryable=True)
        return None

    async def _remembered(self, request: dict[str, Any], action: str,
                          arguments: dict[str, Any] | None, scope: str, by: str | None
                          ) -> tuple[dict[str, Any], PolicyConfig]:
        """The agent's settings with the decision as a rule at the front of its policy,
        and that policy layer (nothing is saved here)."""
        agent = await self.agents.get(request["agent"])
        rule = sticky_rule(request["name"], arguments or request.get("arguments") or {},
                           "allow" if action == "approve" else "deny", scope,
                           by or "a person")
        current = stored_settings(agent.settings).policy
        layer = PolicyConfig.model_validate({**current.model_dump(exclude_none=True),
                                             "rules": [rule, *current.rules]})
        return {**agent.settings, "policy": layer.model_dump(exclude_none=True)}, layer
