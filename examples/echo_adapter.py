"""Example adapters for agentd (docs/adapters.md).

Run a daemon that allows them, then create agents backed by them::

    # $AGENTD_HOME/agentd.toml
    [adapters]
    allow = ["echo_adapter:*"]

    PYTHONPATH=examples agentd serve
    agentd create shouty --model adapter:echo_adapter:shout
    agentd create counter --model adapter:echo_adapter:CountingAdapter
    agentd send shouty "hello"
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from agentd.adapters import AdapterBase, Session, StreamEvent, current_session


async def shout(message: str, session: Session) -> str:
    """The smallest adapter: a reply function. ``session.history`` holds the earlier
    turns from agentd's log, so it needs no state of its own."""
    return f"{message.upper()}! (turn {len(session.history) // 2 + 1})"


class CountingAdapter(AdapterBase):
    """A class adapter (one instance per agent), streaming its reply word by word and
    reporting the "tool" it used, as a framework's agent loop would."""

    async def initialize(self, config_path: str | None = None) -> None:
        self.replies = 0  # per process: agentd's log is what survives a restart

    async def send_message_stream(self, message: str, session_key: str
                                  ) -> AsyncIterator[StreamEvent]:
        words = message.split()
        yield StreamEvent(type="tool_start", name="count_words", input={"text": message})
        yield StreamEvent(type="tool_end", name="count_words", output=str(len(words)))
        self.replies += 1
        session = current_session()
        earlier = len(session.history) if session is not None else 0
        reply = f"{len(words)} words; {earlier} earlier messages in {session_key}"
        for word in reply.split(" "):
            await asyncio.sleep(0.02)  # a model producing tokens
            yield StreamEvent(type="token", content=word + " ")
        yield StreamEvent(type="done", content=reply,
                          usage={"prompt_tokens": len(words), "completion_tokens": 8})
