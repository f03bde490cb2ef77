"""An adapter for the OpenAI Agents SDK (``pip install 'agentd[openai-agents]'``).

Wrap an ``agents.Agent`` (or a function making one, called at ``initialize``)::

    from agents import Agent, function_tool
    from agentd.adapters.openai_agents import OpenAIAgentsAdapter

    @function_tool
    def get_weather(city: str) -> str: ...

    class Support(OpenAIAgentsAdapter):          # adapter:my_agents.support:Support
        def __init__(self) -> None:
            super().__init__(factory=lambda: Agent(name="support", tools=[get_weather]))

Each turn runs ``Runner.run_streamed`` with the session's earlier turns from agentd's
log as its input (so the SDK keeps no session store of its own), streams the text
deltas, and reports each tool the SDK calls (``tool_start`` / ``tool_end``, paired by
call id) and the run's token usage. The SDK's tracing, which uploads traces to
OpenAI, is turned off unless ``tracing=True``. The SDK is imported only when the
adapter is used.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson

from agentd.adapters._protocol import AdapterBase, StreamEvent, current_session

__all__ = ["OpenAIAgentsAdapter"]


def _arguments(raw: Any) -> Any:
    text = getattr(raw, "arguments", None)
    if isinstance(text, str):
        try:
            return orjson.loads(text)
        except orjson.JSONDecodeError:
            return {"arguments": text}
    return text


class OpenAIAgentsAdapter(AdapterBase):
    """An :class:`~agentd.adapters.AgentAdapter` around an OpenAI Agents SDK agent."""

    def __init__(self, agent: Any = None, *, factory: Callable[[], Any] | None = None,
                 max_turns: int = 10, tracing: bool = False) -> None:
        if agent is None and factory is None:
            raise TypeError("give the SDK agent or a factory making it")
        self.agent = agent
        self.factory = factory
        self.max_turns = max_turns
        self.tracing = tracing

    async def initialize(self, config_path: str | None = None) -> None:
        import agents

        if not self.tracing:
            agents.set_tracing_disabled(True)
        if self.agent is None and self.factory is not None:
            self.agent = self.factory()

    async def send_message(self, message: str, session_key: str) -> str:
        text = ""
        async for event in self.send_message_stream(message, session_key):
            if event.type == "done":
                text = event.content
        return text

    async def send_message_stream(self, message: str, session_key: str
                                  ) -> AsyncIterator[StreamEvent]:
        from agents import Runner

        if self.agent is None:
            await self.initialize()
        session = current_session()
        history = session.history if session is not None and session.key == session_key \
            else []
        # The session's turns as they are (converted once per session by agentd, shared
        # between turns): the SDK copies its input before it uses it.
        items: list[Any] = [*history, {"role": "user", "content": message}]
        result = Runner.run_streamed(self.agent, input=items, max_turns=self.max_turns)
        names: dict[str, str] = {}
        async for event in result.stream_events():
            if event.type == "raw_response_event":
                data = event.data
                if getattr(data, "type", "") == "response.output_text.delta":
                    yield StreamEvent(type="token", content=str(data.delta))
            elif event.type == "run_item_stream_event":
                raw = getattr(event.item, "raw_item", None)
                if event.name == "tool_called":
                    name = str(getattr(raw, "name", None) or "tool")
                    call_id = getattr(raw, "call_id", None)
                    if isinstance(call_id, str):
                        names[call_id] = name
                    yield StreamEvent(type="tool_start", name=name, input=_arguments(raw))
                elif event.name == "tool_output":
                    call_id = raw.get("call_id") if isinstance(raw, dict) else getattr(
                        raw, "call_id", None)
                    yield StreamEvent(type="tool_end",
                                      name=names.get(str(call_id), "tool"),
                                      output=getattr(event.item, "output", ""))
        usage = result.context_wrapper.usage
        yield StreamEvent(type="done", content=str(result.final_output or ""), usage={
            "input_tokens": int(usage.input_tokens or 0),
            "output_tokens": int(usage.output_tokens or 0)})
