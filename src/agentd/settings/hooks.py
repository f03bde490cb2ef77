"""The ``hooks`` area of an agent's settings: checks that decide at four points of a run.

A check runs at one point: ``input`` (before the run's first step), ``tool_call``
(before each call of the tools it names), ``tool_result`` (after each result, before
the model sees it) or ``output`` (before the reply is delivered). It is a Python
callable the operator allows (``python``), a signed HTTP POST to a host the operator
allows (``webhook``), a command the operator lists run in the agent's sandbox
(``command``), or a rule judged by the agent's own models (``model``). A check
marked ``guardrail`` fails the run (``guardrail_tripped``) when it denies; docs/hooks.md.
"""

from __future__ import annotations

import fnmatch
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

__all__ = ["MAX_CHECKS", "POINTS", "HookCheck", "HookPoint", "HookSettings"]

MAX_CHECKS = 32
HookPoint = Literal["input", "tool_call", "tool_result", "output"]
POINTS: tuple[HookPoint, ...] = ("input", "tool_call", "tool_result", "output")
_TOOL_POINTS = frozenset({"tool_call", "tool_result"})

CheckName = Annotated[str, StringConstraints(min_length=1, max_length=64,
                                             pattern=r"^[a-z0-9][a-z0-9_.-]*$")]
Pattern = Annotated[str, StringConstraints(min_length=1, max_length=200)]
Arg = Annotated[str, StringConstraints(max_length=4096)]


class HookCheck(BaseModel):
    """One check: where it runs, what it is, and what its failure means."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: CheckName = Field(description="Names the check in its verdicts (unique).")
    point: HookPoint = Field(description="`input`, `tool_call`, `tool_result` or `output`.")
    kind: Literal["python", "webhook", "command", "model"] = Field(
        description="`python` (`callable`), `webhook` (`url`), `command` (`command`) or "
                    "`model` (`rule`).")
    guardrail: bool = Field(
        False, description="A deny fails the run with `guardrail_tripped` (else a "
                           "`tool_call` deny answers that call with an error, a "
                           "`tool_result` deny withholds that result, and an `input` or "
                           "`output` deny fails the run with `hook_denied`).")
    callable: str | None = Field(
        None, min_length=3, max_length=300,
        description="`MODULE:NAME` of a Python callable matched by the daemon's "
                    "`[hooks] allow` (anything else is refused when saved).")
    url: str | None = Field(
        None, min_length=8, max_length=2048,
        description="Where the signed POST goes: a host the daemon's `[hooks] "
                    "allow_hosts` names (refused when saved otherwise, and checked "
                    "again before every request).")
    command: list[Arg] | None = Field(
        None, min_length=1, max_length=64,
        description="argv run in the agent's sandbox: the facts as JSON on stdin, the "
                    "verdict as JSON on stdout; it must start with one of the daemon's "
                    "`[hooks] commands`.")
    rule: str | None = Field(
        None, min_length=1, max_length=4000,
        description="What the agent's own models judge the facts against (a `model` "
                    "check; its tokens count in the run's usage and budget).")
    tools: list[Pattern] = Field(
        default_factory=list, max_length=64,
        description="`tool_call` and `tool_result` checks: the tools (shell-style "
                    "patterns, matched case-sensitively against the tool's name) they "
                    "judge; empty: every tool.")
    timeout_s: float = Field(10.0, gt=0, le=300, allow_inf_nan=False,
                             description="The check's verdict comes within this or "
                                         "the check failed.")
    fail: Literal["open", "closed"] = Field(
        "closed", description="A check that fails (times out, raises, answers garbage, "
                              "is unreachable): `closed` denies (withholds a result), "
                              "`open` lets it through; either way the verdict says why.")

    @model_validator(mode="after")
    def _one_target(self) -> HookCheck:
        wanted = {"python": "callable", "webhook": "url", "command": "command",
                  "model": "rule"}[self.kind]
        for name in ("callable", "url", "command", "rule"):
            given = getattr(self, name) is not None
            if name == wanted and not given:
                raise ValueError(f"a {self.kind} check needs `{name}`")
            if name != wanted and given:
                raise ValueError(f"`{name}` is not for a {self.kind} check")
        if self.tools and self.point not in _TOOL_POINTS:
            raise ValueError("`tools` is for tool_call and tool_result checks")
        return self

    def judges(self, point: str, tool: str | None = None) -> bool:
        """Whether this check runs at ``point`` (for a call of ``tool``)."""
        if point != self.point:
            return False
        return (tool is None or not self.tools
                or any(fnmatch.fnmatchcase(tool, p) for p in self.tools))


class HookSettings(BaseModel):
    """An agent's checks, run in the order listed at each point."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    checks: list[HookCheck] = Field(
        default_factory=list, max_length=MAX_CHECKS,
        description=f"At most {MAX_CHECKS}, names unique; docs/hooks.md.")

    @model_validator(mode="after")
    def _unique(self) -> HookSettings:
        names = [c.name for c in self.checks]
        if len(set(names)) != len(names):
            raise ValueError("names a check twice")
        return self

    def at(self, point: str, tool: str | None = None) -> list[HookCheck]:
        """The checks that run at ``point`` (for a call of ``tool``), in order."""
        return [c for c in self.checks if c.judges(point, tool)]

    @property
    def commands(self) -> bool:
        """Whether a check runs a command (the run needs the agent's sandbox)."""
        return any(c.kind == "command" for c in self.checks)
