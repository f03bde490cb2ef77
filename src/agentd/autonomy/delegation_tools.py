"""The agent tools of subtasks and agent calls (``ctx.service(Subtasks)``).

``subtask_start`` and ``agent_call`` start a child run; each is idempotent by the
call's effect id (a re-run after a crash finds the child it started), so the loop
may re-run it. ``subtask_wait`` and ``agents_list`` only read. Waiting is bounded by
the call's ``timeout_s`` (at most the agent's ``max_wait_s``), well inside the tool's
own time limit: a wait that times out answers with what is still running, and the
model may wait again.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Literal

from agentd.autonomy.calls import callable_agents
from agentd.autonomy.subtasks import Subtasks
from agentd.errors import ToolError
from agentd.settings.delegation import MAX_WAIT_S, DelegationSettings
from agentd.tools.base import Tool, ToolContext, tool

if TYPE_CHECKING:
    from agentd.store.subtasks import SubtaskRecord

__all__ = ["DELEGATION_TOOLS", "agent_call", "agents_list", "subtask_start", "subtask_wait"]

#: A child's output shown in a tool result at most (the run keeps it all).
MAX_SHOWN = 8000
#: The tool time limit of the waiting tools: their own bound plus a margin.
_WAIT_LIMIT_S = MAX_WAIT_S + 30.0
#: A session name an agent gives a conversation with another agent.
SESSION_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$"
AGENT_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$"
SUBTASK_ID = r"^st_[A-Za-z0-9_]{1,64}$"
MAX_TITLE = 200


def _service(ctx: ToolContext) -> Subtasks:
    service = ctx.service(Subtasks)
    if service is None:
        raise ToolError("subtasks are not available here", code="subtasks_unavailable")
    return service


async def _settings(service: Subtasks, ctx: ToolContext) -> DelegationSettings:
    """The calling agent's delegation settings (its plan's: read once while awake)."""
    return service.agents.plan(await service.agents.get(ctx.agent)).settings.delegation


def _shown(text: str | None) -> str | None:
    if text is None or len(text) <= MAX_SHOWN:
        return text
    return text[:MAX_SHOWN] + f"\n[truncated: {len(text)} characters in all]"


async def _report(service: Subtasks, ctx: ToolContext, child: SubtaskRecord
                  ) -> dict[str, Any]:
    """A child as the model sees it; a finished child's tainted session taints the
    caller's (its output may carry what came from outside)."""
    out: dict[str, Any] = {"id": child.id, "title": child.title, "agent": child.child_agent,
                           "status": child.status}
    if child.finished:
        out["output"] = _shown(child.output)
        if child.error:
            out["error"] = child.error.get("message", child.error)
        tainted = await service.tainted(child)
        if tainted and ctx.untrusted is None:
            ctx.untrusted = (f"the result of {child.type} {child.id} (agent "
                             f"{child.child_agent!r}) whose session had read content from "
                             f"outside: {tainted}")[:500]
    return out


def _check(value: str, pattern: str, what: str) -> None:
    """The model's arguments are attacker text: each checked, the refusal naming it."""
    if re.fullmatch(pattern, value) is None:
        raise ToolError(f"invalid {what} {value[:80]!r}", code="invalid_input")


@tool(idempotent=True)
async def subtask_start(title: str, instructions: str, ctx: ToolContext,
                        agent: str | None = None) -> dict[str, Any]:
    """Start a subtask: a child run, in a session of its own, working on instructions
    while you go on; several may run at once. Get results with subtask_wait.

    Args:
        title: a short name for the subtask (shown in listings)
        instructions: everything the child needs to know: it sees only these
        agent: another agent to run it (if your settings allow calling it); default: you
    """
    service = _service(ctx)
    if len(title) > MAX_TITLE:
        raise ToolError(f"the title comes to {len(title)} characters; the limit is "
                        f"{MAX_TITLE}", code="invalid_input")
    if not instructions.strip():
        raise ToolError("instructions must not be empty", code="invalid_input")
    if agent is not None:
        _check(agent, AGENT_NAME, "agent name")
    limit = (await _settings(service, ctx)).subtasks.max_instructions_chars
    if len(instructions) > limit:
        raise ToolError(f"instructions come to {len(instructions)} characters; the limit "
                        f"is {limit}", code="invalid_input")
    child = await service.start(ctx, content=instructions, title=title, agent=agent)
    return {"id": child.id, "agent": child.child_agent, "run_id": child.child_run,
            "status": child.status}


@tool(read_only=True, timeout_s=_WAIT_LIMIT_S)
async def subtask_wait(ctx: ToolContext, ids: list[str] | None = None,
                       wait_for: Literal["all", "any"] = "all", timeout_s: float = 60.0
                       ) -> dict[str, Any]:
    """Wait for subtasks (and calls) this run started; get their status and output.
    Answers when all (or any) have finished, or after timeout_s with what is still
    running: then wait again.

    Args:
        ids: the subtasks to wait for (default: all of this run's)
        wait_for: "all" to wait until every one has finished, "any" for the first
        timeout_s: how long to wait at most, in seconds (your settings may cap it)
    """
    service = _service(ctx)
    if ids is not None:
        if len(ids) > 1000:
            raise ToolError("at most 1000 ids", code="invalid_input")
        for one in ids:
            _check(one, SUBTASK_ID, "subtask id")
    if not 0 <= timeout_s <= MAX_WAIT_S:  # (NaN fails both)
        raise ToolError(f"timeout_s must be between 0 and {MAX_WAIT_S:g}",
                        code="invalid_input")
    cap = (await _settings(service, ctx)).subtasks.max_wait_s
    waited = await service.wait(ctx.run_id, ids, every=wait_for == "all",
                                timeout_s=min(timeout_s, cap))
    if not waited.children:
        return {"done": True, "subtasks": [], "note": "this run has started no subtasks"}
    reports = [await _report(service, ctx, c) for c in waited.children]
    running = sum(1 for c in waited.children if not c.finished)
    return {"done": not waited.timed_out, "running": running, "subtasks": reports}


@tool(read_only=True)
async def agents_list(ctx: ToolContext) -> list[dict[str, str]]:
    """List the agents you may call with agent_call, each with a one-line description."""
    service = _service(ctx)
    me = await service.agents.get(ctx.agent)
    chain = ctx.origin.get("chain")
    listed = callable_agents(me, await service.agents.list_all(),
                             [str(a) for a in chain] if isinstance(chain, list) else [])
    return [{"name": a.name, "description": d} for a, d in listed]


@tool(idempotent=True, timeout_s=_WAIT_LIMIT_S)
async def agent_call(agent: str, message: str, ctx: ToolContext,
                     session: str | None = None) -> str:
    """Send a message to another agent and get its reply.

    Args:
        agent: the agent's name (see agents_list)
        message: what to ask or tell it; it sees only this (and earlier messages of
            the same session)
        session: a name for a conversation with this agent to continue (its earlier
            messages are remembered); default: a new conversation
    """
    service = _service(ctx)
    _check(agent, AGENT_NAME, "agent name")
    if session is not None:
        _check(session, SESSION_NAME, "session name (letters, digits, _.:- only)")
    if not message.strip():
        raise ToolError("the message must not be empty", code="invalid_input")
    calls = (await _settings(service, ctx)).calls
    if len(message) > calls.max_message_chars:
        raise ToolError(f"the message comes to {len(message)} characters; the limit is "
                        f"{calls.max_message_chars}", code="invalid_input")
    child = await service.start(ctx, content=message, agent=agent, type="call",
                                session=session)
    waited = await service.wait(ctx.run_id, [child.id], every=True,
                                timeout_s=calls.timeout_s)
    done = waited.children[0]
    report = await _report(service, ctx, done)
    if waited.timed_out:
        return (f"{agent} has not replied within {calls.timeout_s:g}s; the call goes on "
                f"as {done.id}: get its reply with subtask_wait(ids=[\"{done.id}\"])")
    if done.status != "completed":
        raise ToolError(f"{agent} did not reply: its run ended {done.status}"
                        + (f" ({report['error']})" if report.get("error") else ""),
                        code="agent_call_failed")
    return str(report.get("output") or "")


DELEGATION_TOOLS: dict[str, Tool] = {t.name: t for t in (
    subtask_start, subtask_wait, agents_list, agent_call)}
