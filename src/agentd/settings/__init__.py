"""An agent's ``settings``: one typed model, the single source of their types, ranges
and defaults, and the checks that name every bad field.

The daemon's own configuration is :mod:`agentd.config`; this package is about what a
client puts in an agent's ``settings``. It sits between the runtime and server (which
use it) and the layers whose models it composes (config, llm, security, tools).

Typical use::

    settings = check_settings(body_settings, caps=config.sandbox.limits)  # 422 if bad
    settings.max_steps, settings.loop_guard.action, settings.budget.run.tokens

    problems = settings_problems(agent.settings)  # a stored agent: what no longer holds
    stored_settings(agent.settings)  # for a run: InvalidSettings naming the fields

The names below are imported on first use (:mod:`agentd.lazy`): the daemon's
configuration, which every CLI call loads, imports a few of this package's modules
(``budget``, ``memory``...) and needs nothing of the agent's whole model.
"""

from typing import TYPE_CHECKING

from agentd.lazy import exports

if TYPE_CHECKING:
    from agentd.llm.settings import ModelSettings
    from agentd.settings._model import (
        MAX_FALLBACKS,
        MAX_MCP_SERVERS,
        AgentSettings,
        FallbackModel,
        KernelSettings,
        LoopGuard,
        ModelArea,
        RunSettings,
    )
    from agentd.settings._operator import Reaching, operator_only
    from agentd.settings.check import (
        SettingsProblem,
        check_settings,
        settings_problems,
        stored_settings,
    )

__all__ = [
    "MAX_FALLBACKS",
    "MAX_MCP_SERVERS",
    "AgentSettings",
    "FallbackModel",
    "KernelSettings",
    "LoopGuard",
    "ModelArea",
    "ModelSettings",
    "Reaching",
    "RunSettings",
    "SettingsProblem",
    "check_settings",
    "operator_only",
    "settings_problems",
    "stored_settings",
]

__getattr__ = exports(__name__, {
    "ModelSettings": "agentd.llm.settings",
    **dict.fromkeys(["MAX_FALLBACKS", "MAX_MCP_SERVERS", "AgentSettings", "FallbackModel",
                     "KernelSettings", "LoopGuard", "ModelArea", "RunSettings"],
                    "agentd.settings._model"),
    "Reaching": "agentd.settings._operator", "operator_only": "agentd.settings._operator",
    **dict.fromkeys(["SettingsProblem", "check_settings", "settings_problems",
                     "stored_settings"], "agentd.settings.check")})
