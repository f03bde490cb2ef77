"""What the runtime adds to :mod:`agentd.settings` (which holds every check and
default): reporting stored settings this version refuses (``settings_errors`` for the
API, ``warn_invalid_settings`` at start).

The runtime reads an agent's settings once per plan (``Agents.plan``:
``stored_settings``) and a client's when it saves them (``Agents._validate``:
``check_settings`` with the daemon's sandbox caps).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

from agentd.config import SandboxLimits
from agentd.settings import settings_problems
from agentd.store.records import AgentRecord

__all__ = ["settings_errors", "warn_invalid_settings"]

log = logging.getLogger(__name__)


def settings_errors(settings: Mapping[str, Any], caps: SandboxLimits
                    ) -> list[dict[str, str]]:
    """What this version refuses in an agent's stored settings, as the API shows it
    (``[{"field": "settings.max_step", "message": ...}]``); empty when valid. ``caps``:
    the daemon's sandbox limits (a stored limit above them is capped when it runs, and
    reported here)."""
    return [p.to_api() for p in settings_problems(settings, caps=caps)]


def warn_invalid_settings(agents: Iterable[AgentRecord], caps: SandboxLimits) -> int:
    """Log a warning for each agent whose stored settings this version refuses, naming
    the fields (at start: nothing is changed, the operator fixes them). Returns how
    many agents have such settings."""
    count = 0
    for agent in agents:
        problems = settings_problems(agent.settings, caps=caps)
        if not problems:
            continue
        count += 1
        log.warning("agent %r: its stored settings are not valid in this version: %s. "
                    "Nothing was changed; its runs fail with invalid_settings (a sandbox "
                    "limit above the daemon's is capped instead) until a PATCH of "
                    "/v1/agents/%s fixes them ('agentd show %s' lists them)",
                    agent.name, "; ".join(f"{p.field()}: {p.message}" for p in problems),
                    agent.name, agent.name)
    return count
