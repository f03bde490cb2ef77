"""An agent's sandbox (``settings.sandbox``) and the limits of one command, which the
daemon's ``[sandbox]`` sets for every agent."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from agentd.trust import OperatorOnly

__all__ = ["SANDBOX_BACKENDS", "AgentSandbox", "SandboxLimits"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


SANDBOX_BACKENDS = ("auto", "bubblewrap", "gvisor", "process")


class SandboxLimits(_Strict):
    """Resource limits of one command run in the sandbox (every backend applies them)."""

    cpu_s: float = Field(default=30.0, gt=0, le=86400)
    memory_mb: int = Field(default=1024, ge=16, le=1_048_576)
    processes: int = Field(default=128, ge=1, le=100_000)
    file_size_mb: int = Field(default=256, ge=1, le=1_048_576)
    output_bytes: int = Field(default=256_000, ge=1024, le=16_000_000)
    wall_s: float = Field(default=60.0, gt=0, le=86400)


def _more_disk(name: str) -> OperatorOnly:
    return OperatorOnly(
        "host", f"more than the daemon's {name} takes the host's disk from other tenants",
        allows=lambda grants, value: grants.disk(name, value))


class AgentSandbox(_Strict):
    """An agent's ``settings.sandbox``: its backend and limits (each limit at most the
    daemon's), and whether its shell keeps state between calls by default."""

    backend: Annotated[
        Literal["auto", "bubblewrap", "gvisor", "process"] | None,
        OperatorOnly("host", "a backend weaker than the daemon's lets commands see the "
                             "host", allows=lambda grants, value: grants.backend(value)),
    ] = None
    limits: Annotated[dict[str, float], OperatorOnly(
        "host", "limits above the daemon's defaults ([sandbox.limits]) take the host's "
                "resources from other tenants",
        allows=lambda grants, value: grants.limits(value))] = Field(default_factory=dict)
    persistent_shell: bool = False
    #: Lower the daemon's workspace size quota / snapshot budget for this agent (MB).
    workspace_max_mb: Annotated[int | None, _more_disk("workspace_max_mb")] = Field(
        default=None, gt=0)
    snapshot_budget_mb: Annotated[int | None, _more_disk("snapshot_budget_mb")] = Field(
        default=None, gt=0)

    @field_validator("limits")
    @classmethod
    def _known_limits(cls, value: dict[str, float]) -> dict[str, float]:
        for name, limit in value.items():
            if name not in SandboxLimits.model_fields:
                raise ValueError(f"unknown limit {name!r}; known: "
                                 + ", ".join(SandboxLimits.model_fields))
            if not limit > 0:
                raise ValueError(f"limits.{name} must be greater than 0")
        return value

    def above(self, caps: SandboxLimits) -> dict[str, str]:
        """The agent's limits above the daemon's ``caps`` (by name: why): refused
        when an agent is saved; a stored one is capped (the operator may lower a cap
        under existing agents)."""
        def shown(value: float) -> str:
            return str(int(value)) if float(value).is_integer() else str(value)

        return {name: f"{shown(limit)} is above the daemon's limit of "
                      f"{shown(getattr(caps, name))} ([sandbox.max_limits] {name}, else "
                      "[sandbox.limits])"
                for name, limit in self.limits.items()
                if name in SandboxLimits.model_fields and limit > getattr(caps, name)}
