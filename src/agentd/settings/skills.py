"""The ``skills`` area of an agent's settings: which installed skills it has."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

__all__ = ["MAX_ENABLED", "SKILL_NAME_PATTERN", "SkillSettings"]

MAX_ENABLED = 64
#: A skill's name (agentskills.io): lowercase letters, digits, single hyphens inside.
SKILL_NAME_PATTERN = r"^[a-z0-9]+(?:-[a-z0-9]+)*$"

SkillName = Annotated[str, StringConstraints(min_length=1, max_length=64,
                                             pattern=SKILL_NAME_PATTERN)]


class SkillSettings(BaseModel):
    """An agent's skills: their names and descriptions are in every run's
    instructions; ``skill_load`` reads one's instructions when the model asks."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: list[SkillName] = Field(
        default_factory=list, max_length=MAX_ENABLED,
        description="Names of installed skills (`GET /v1/skills`) the agent has, at "
                    f"most {MAX_ENABLED}; an unknown name is refused when the agent is "
                    "saved.")

    @field_validator("enabled")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("names a skill twice")
        return value
