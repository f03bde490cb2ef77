"""An OpenAI Agents SDK agent for the adapter tests: its model calls go to the stub
LLM server whose base URL is in $AGENTD_TEST_STUB_URL."""

from __future__ import annotations

import os
from typing import Any

from agentd.adapters.openai_agents import OpenAIAgentsAdapter


def _build() -> Any:
    from agents import Agent, ModelSettings, OpenAIChatCompletionsModel, function_tool
    from openai import AsyncOpenAI

    @function_tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        return f"sunny in {city}"

    client = AsyncOpenAI(base_url=os.environ["AGENTD_TEST_STUB_URL"], api_key="stub-key")
    # (include_usage: a streamed Chat Completions answer reports its usage only then.)
    return Agent(name="support", instructions="Answer briefly.", tools=[get_weather],
                 model=OpenAIChatCompletionsModel(model="stub", openai_client=client),
                 model_settings=ModelSettings(include_usage=True))


class Support(OpenAIAgentsAdapter):
    def __init__(self) -> None:
        super().__init__(factory=_build)
