"""Proactive messages: the agent posts a message into another of its own sessions.

The ``message_post`` tool appends a ``message.proactive`` event to the target
session's log (``{"content", "from_session", "from_run", "tainted"?}``), publishes it
to that session's subscribers, and the target's history shows it to the model as the
agent's own message (folded between turns: held while a run of the target session is
under way, see :class:`agentd.runtime.history.SessionHistory`).

Guards, because the model is hostile:

- only the agent's own sessions (the target is looked up by the run's agent id; a
  key is never resolved across agents), and only sessions that exist: a post never
  creates one (a model must not mint sessions; a client or a channel makes them);
- not into the posting session itself (the run's reply is its message there);
- ``MAX_CONTENT`` characters at most, ``MAX_POSTS_PER_RUN`` posts per run, counted in
  the store (``proactive_posts``), so a restart does not reset the count;
- a post is keyed by its run and its call's effect id, committed with the event: a
  call re-run after a crash posts nothing twice (so the tool is idempotent);
- a tainted posting session (it read content from outside) taints the target: the
  event carries ``tainted`` and the target's history takes it in;
- a post into a channel's session (``telegram:<chat>``: see
  :func:`agentd.channels.channel_of`) is delivered to that chat at once, so it leaves
  the daemon: from a tainted session it is asked about (or denied) by the policy's
  taint rule, like any call that sends out (:func:`posts_to`), the approval naming the
  chat; from a clean session it is posted as ever.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from agentd.channels import channel_of
from agentd.errors import SessionNotFound, ToolError
from agentd.events import MessageProactive, MessageProactiveData
from agentd.store.heartbeats import AlreadyPosted, PostCapReached
from agentd.store.records import EventRecord, NewEvent
from agentd.tools.base import Tool, ToolContext, tool

if TYPE_CHECKING:
    from agentd.runtime.bus import EventBus
    from agentd.runtime.history import HistoryCache
    from agentd.store import Store

__all__ = ["MAX_CONTENT", "MAX_POSTS_PER_RUN", "PROACTIVE_TOOLS", "ProactiveService",
           "message_post", "posts_to"]

MAX_CONTENT = 16_000
MAX_POSTS_PER_RUN = 5


class ProactiveService:
    """Posts into an agent's sessions (``ctx.service(ProactiveService)``)."""

    def __init__(self, store: Store, *, bus: EventBus, histories: HistoryCache,
                 max_posts_per_run: int = MAX_POSTS_PER_RUN) -> None:
        self.store = store
        self.bus = bus
        self.histories = histories
        self.max_posts_per_run = max_posts_per_run

    async def post(self, *, agent_id: str, from_key: str, to_key: str, content: str,
                   run_id: str, effect_id: str) -> EventRecord | None:
        """Append the message to the agent's session ``to_key``; None when this call
        posted it already (a re-run). :class:`ToolError` for what is refused."""
        if not isinstance(to_key, str) or not 1 <= len(to_key) <= 256:
            raise ToolError("session must be the key of one of your sessions "
                            "(1-256 characters)", code="invalid_input")
        if to_key == from_key:
            raise ToolError("that is this session: your reply here is the message; "
                            "message_post is for your other sessions", code="invalid_input")
        if not isinstance(content, str) or not content.strip():
            raise ToolError("content is empty", code="invalid_input")
        if len(content) > MAX_CONTENT:
            raise ToolError(f"content has {len(content)} characters; at most "
                            f"{MAX_CONTENT} may be posted", code="invalid_input")
        try:
            target = await self.store.get_session(agent_id, to_key)
        except SessionNotFound:
            raise ToolError(f"you have no session {to_key!r} (a post goes to an existing "
                            "session of yours; it creates none)",
                            code="session_not_found") from None
        source = await self.store.get_session(agent_id, from_key)
        history = await self.histories.get(source.id, agent_id=agent_id)
        data: MessageProactiveData = {"content": content, "from_session": from_key,
                                      "from_run": run_id}
        if history.tainted:
            data["tainted"] = f"posted from tainted session {from_key!r}: {history.tainted}"
        try:
            records = await self.store.post_proactive(
                session_id=target.id, event=NewEvent.of(MessageProactive(data=data)),
                run_id=run_id, effect_id=effect_id, cap=self.max_posts_per_run)
        except AlreadyPosted:
            return None
        except PostCapReached:
            raise ToolError(f"this run posted {self.max_posts_per_run} messages already "
                            "(the most a run may)", code="post_limit") from None
        self.bus.publish(records)
        self.histories.offer(records)
        return records[0]


def _service(ctx: ToolContext) -> ProactiveService:
    service = ctx.service(ProactiveService)
    if service is None or not ctx.agent_id:
        raise ToolError("proactive messages are not available here",
                        code="proactive_unavailable")
    return service


def posts_to(arguments: Mapping[str, Any], session: str) -> str | None:
    """Where a ``message_post`` call sends its content out of the daemon: the chat of
    a channel whose session it posts into (``Tool.sends_out_to``), else None."""
    target = arguments.get("session")
    where = channel_of(target)
    if where is None:
        return None
    return f"posts its content to {where} (session {target!r}), outside the daemon"


@tool(idempotent=True, sends_out_to=posts_to)
async def message_post(session: str, content: str, ctx: ToolContext) -> str:
    """Post a message into another of your own sessions (its user sees it there as a
    message from you).

    Args:
        session: the key of one of your other sessions (it must exist)
        content: the message
    """
    event = await _service(ctx).post(agent_id=ctx.agent_id, from_key=ctx.session,
                                     to_key=session, content=content, run_id=ctx.run_id,
                                     effect_id=ctx.effect_id)
    if event is None:
        return f"posted to session {session!r} (already, by this call)"
    return f"posted to session {session!r} (event {event.seq})"


PROACTIVE_TOOLS: dict[str, Tool] = {message_post.name: message_post}
