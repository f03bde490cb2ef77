"""Skills: packages of instructions and files in the Agent Skills layout
(agentskills.io), installed in the daemon's registry and enabled per agent.

- :mod:`._package`: ``SKILL.md`` parsed and checked (name rules, sizes);
- :mod:`.registry`: install (a folder or an archive), list, remove, atomically;
- :mod:`.service`: agents' enabled skills, the ``<skills>`` context section;
- :mod:`.tools`: ``skill_load`` and ``skill_read``;
- :mod:`.settings`: the ``skills`` area of an agent's settings.
"""

from __future__ import annotations

from agentd.settings.skills import SkillSettings
from agentd.skills._package import LIMITS, Limits, SkillMeta, check_name, parse_skill_md
from agentd.skills.registry import SkillInfo, SkillRegistry
from agentd.skills.service import SANDBOX_ROOT, Skills
from agentd.skills.tools import SKILL_TOOLS

__all__ = [
    "LIMITS",
    "SANDBOX_ROOT",
    "SKILL_TOOLS",
    "Limits",
    "SkillInfo",
    "SkillMeta",
    "SkillRegistry",
    "SkillSettings",
    "Skills",
    "check_name",
    "parse_skill_md",
]
