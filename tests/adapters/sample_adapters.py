"""Adapters the adapter tests name (``adapter:tests.adapters.sample_adapters:...``):
real code loaded by the daemon the way an operator's would be."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from termo_agent.adapter import AgentAdapter as _TermoAdapter
from termo_agent.adapter import StreamEvent as _TermoEvent

from agentd.adapters import AdapterBase, Session, StreamEvent, current_session, function


async def echo(message: str, session: Session) -> str:
    """A plain async reply function: its earlier turns come from agentd's log."""
    return f"echo {message} after {len(session.history)} turns"


async def words(message: str, session: Session) -> AsyncIterator[str]:
    """Streams its reply word by word."""
    for word in f"you said {message}".split():
        await asyncio.sleep(0.05)
        yield word + " "


def blocking(message: str, session: Session) -> str:
    """A blocking function (run in a thread, so the loop goes on meanwhile)."""
    time.sleep(0.3)
    return f"slept on {message}"


class ToolUser(AdapterBase):
    """Streams a tool call, its result, text, and usage (a framework that ran a tool)."""

    instances = 0

    def __init__(self) -> None:
        ToolUser.instances += 1
        self.initialized = False

    async def initialize(self, config_path: str | None = None) -> None:
        self.initialized = True

    async def send_message_stream(self, message: str, session_key: str
                                  ) -> AsyncIterator[StreamEvent]:
        assert self.initialized
        yield StreamEvent(type="tool_start", name="lookup", input={"q": message})
        yield StreamEvent(type="tool_end", name="lookup", output=f"found {message}")
        yield StreamEvent(type="token", content="found ")
        yield StreamEvent(type="token", content=message)
        yield StreamEvent(type="done", content="", usage={"prompt_tokens": 30,
                                                          "completion_tokens": 12})


class Raising(AdapterBase):
    async def send_message(self, message: str, session_key: str) -> str:
        raise RuntimeError(f"framework exploded on {message!r}")


class ErrorEvent(AdapterBase):
    async def send_message_stream(self, message: str, session_key: str
                                  ) -> AsyncIterator[StreamEvent]:
        yield StreamEvent(type="token", content="partial")
        yield StreamEvent(type="error", content="upstream said no")


class Hanging(AdapterBase):
    async def send_message(self, message: str, session_key: str) -> str:
        await asyncio.Event().wait()
        return "never"


class NotText(AdapterBase):
    async def send_message(self, message: str, session_key: str) -> Any:
        return {"not": "a string"}


#: Set by a test: the gated adapter answers only once it is set.
GATE: dict[str, asyncio.Event] = {}
SEEN: list[str] = []
#: The history each of the gated adapter's turns saw, as "role:content" strings.
HISTORIES: list[list[str]] = []


class Gated(AdapterBase):
    """Answers each message once the test opens its gate (for session modes)."""

    async def send_message(self, message: str, session_key: str) -> str:
        SEEN.append(message)
        gate = GATE.setdefault("open", asyncio.Event())
        await gate.wait()
        session = current_session()
        HISTORIES.append([f"{t['role']}:{t['content']}" for t in session.history]
                         if session else [])
        return f"re {message} ({len(session.history) if session else -1})"


def _marker() -> Path:
    return Path(os.environ["AGENTD_ADAPTER_TEST_DIR"])


class SlowFile(AdapterBase):
    """For the kill test: notes each send in a file, then answers slowly."""

    async def send_message(self, message: str, session_key: str) -> str:
        with (_marker() / "sends").open("a") as f:
            f.write(message + "\n")
        await asyncio.sleep(float(os.environ.get("AGENTD_ADAPTER_TEST_SLEEP", "0.2")))
        return f"slow {message}"


@function(idempotent=True)
async def idempotent_slow(message: str, session: Session) -> str:
    with (_marker() / "sends").open("a") as f:
        f.write(message + "\n")
    await asyncio.sleep(float(os.environ.get("AGENTD_ADAPTER_TEST_SLEEP", "0.2")))
    return f"again {message}"


NOT_AN_ADAPTER = 42


async def nothing_to_report(message: str, session: Session) -> str:
    return "HEARTBEAT_OK"


class Hostile(AdapterBase):
    """Relays what a hostile model wrote: odd names, inputs, huge outputs, an end
    with no start."""

    async def send_message_stream(self, message: str, session_key: str
                                  ) -> AsyncIterator[StreamEvent]:
        yield StreamEvent(type="tool_end", name="never_started", output="x")
        yield StreamEvent(type="tool_start", name="n" * 1000, input={1, 2})
        yield StreamEvent(type="tool_end", name="n" * 1000, output="o" * 1_000_000)
        yield StreamEvent(type="tool_start", name="", input="just text")
        yield StreamEvent(type="tool_end", name="", output=None, is_error=True)
        yield StreamEvent(type="tool_start", name="big", input={"blob": "b" * 200_000})
        yield StreamEvent(type="done", content="survived", usage={"prompt_tokens": -5,
                                                                  "completion_tokens": "7"})


class FailingInit(AdapterBase):
    async def initialize(self, config_path: str | None = None) -> None:
        raise ValueError("no API key configured")

    async def send_message(self, message: str, session_key: str) -> str:
        return "unreachable"


def sleepy(message: str, session: Session) -> str:
    time.sleep(2.0)
    return "too late"


class TermoTools(_TermoAdapter):
    """An adapter written against termo-agent's own classes, as its bundled ones are:
    termo's ``StreamEvent`` has no ``input``/``output``; the call's id, input and
    output travel in ``metadata`` (two calls of one tool, ended out of order)."""

    async def initialize(self, config_path: str | None = None) -> None:
        return None

    async def shutdown(self) -> None:
        return None

    async def send_message(self, message: str, session_key: str = "default") -> str:
        return f"whole: {message}"

    async def send_message_stream(self, message: str, session_key: str = "default"
                                  ) -> AsyncIterator[_TermoEvent]:
        yield _TermoEvent(type="tool_start", name="search",
                          metadata={"call_id": "c1", "input": {"q": "a"}})
        yield _TermoEvent(type="tool_start", name="search",
                          metadata={"call_id": "c2", "input": {"q": "b"}})
        yield _TermoEvent(type="tool_end", name="search",
                          metadata={"call_id": "c2", "output": "found b"})
        yield _TermoEvent(type="tool_end", name="search",
                          metadata={"tool_use_id": "x", "call_id": "c1",
                                    "output": "no luck", "is_error": True})
        yield _TermoEvent(type="token", content=f"streamed: {message}")
        yield _TermoEvent(type="done", content="", usage={})

    async def get_history(self, session_key: str) -> list[dict[str, Any]]:
        return []
