"""The ``web_search`` tool's service: the operator's providers, and which one each
agent's settings name (read when a search runs, checked when settings are saved)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from agentd.errors import AgentdError, InvalidInput
from agentd.tools.search import WebSearch
from agentd.tools.search_config import WebSearchConfig

if TYPE_CHECKING:
    from agentd.runtime.agents import Agents
    from agentd.settings import AgentSettings

__all__ = ["web_search_service"]


def web_search_service(config: WebSearchConfig, agents: Agents) -> WebSearch:
    """The service ``web_search`` asks for, with its settings check added to
    ``agents``."""

    async def choice_of(agent_id: str) -> tuple[str | None, str]:
        agent = await agents.by_id(agent_id)
        if agent is None:
            return None, ""  # (deleted: no tenant, so no provider listing tenants)
        try:
            settings = agents.plan(agent).settings
        except AgentdError:
            return None, ""  # (the run itself fails on settings it cannot read)
        return settings.web_search.provider, settings.tenant

    service = WebSearch(config, choice_of)

    def check(settings: AgentSettings) -> None:
        try:
            service.check(settings.web_search.provider, settings.tenant)
        except ValueError as exc:
            raise InvalidInput(f"settings.web_search.provider: {exc}",
                               field="body.settings.web_search.provider") from None

    agents.checks.append(check)
    return service
