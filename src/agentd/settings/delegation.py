"""The ``delegation`` area of an agent's settings: subtasks and calls to other agents.

One key (``settings.delegation``) with two parts:

- ``subtasks``: how deep child runs may nest, how many one run may start and how many
  may run at once, and how long one ``subtask_wait`` may wait;
- ``calls``: which agents this one may call (``allow``, default nobody), which may
  call it (``accept_from``, default: agents of its own tenant), whether callers of
  another tenant are accepted, how deep a call chain may go and how long a call waits.

Permission is shared: a subtask run by another agent needs that agent in
``calls.allow`` (and the other agent's ``accept_from`` to admit this one), exactly as
a call does. Patterns are shell-style (``team-*``), matched against agent names.
"""

from __future__ import annotations

from fnmatch import fnmatchcase
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

__all__ = ["AGENT_PATTERN", "CallSettings", "DelegationSettings", "SubtaskSettings",
           "matches"]

#: An agent name pattern: a name (``[A-Za-z0-9_-]``), possibly with ``*`` / ``?``.
AGENT_PATTERN = r"^[A-Za-z0-9_*?][A-Za-z0-9_*?.\-]{0,63}$"
#: The most any setting lets a chain of runs nest (subtasks and calls together).
HARD_MAX_DEPTH = 10
#: The longest one ``subtask_wait`` / ``agent_call`` may wait (its tool's time limit
#: is this plus a margin, so the bound is the argument's, never the tool timeout's).
MAX_WAIT_S = 600.0

AgentPattern = Annotated[str, StringConstraints(pattern=AGENT_PATTERN)]


def matches(name: str, patterns: list[str]) -> bool:
    """Whether an agent name matches any of the patterns (case-sensitive)."""
    return any(fnmatchcase(name, p) for p in patterns)


class _Area(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SubtaskSettings(_Area):
    """Child runs a run starts (``subtask_start``) and waits on (``subtask_wait``)."""

    max_depth: int = Field(2, ge=1, le=HARD_MAX_DEPTH,
                           description="How deep subtasks may nest: 1 lets a run start "
                                       "children but not its children start their own.")
    max_children: int = Field(20, ge=1, le=1000,
                              description="Subtasks one run may start in all (fan-out).")
    max_concurrent: int = Field(10, ge=1, le=1000,
                                description="Subtasks of one run unfinished at once; "
                                            "one more is refused until one ends.")
    max_wait_s: float = Field(120.0, ge=1, le=MAX_WAIT_S, allow_inf_nan=False,
                              description="The longest one `subtask_wait` waits before "
                                          "answering with what is still running.")
    max_instructions_chars: int = Field(32_000, ge=1, le=1_000_000,
                                        description="The longest subtask instructions "
                                                    "accepted.")


class CallSettings(_Area):
    """Messages to other agents (``agent_call``) and who may send them here."""

    allow: list[AgentPattern] = Field(
        default_factory=list, max_length=64,
        description="Agents this one may call (and run subtasks as): names or patterns "
                    "(`team-*`). Default: none.")
    accept_from: list[AgentPattern] | None = Field(
        None, max_length=64,
        description="Agents that may call this one. Default (null): any agent of the "
                    "same tenant that is allowed to; `[]`: none.")
    accept_other_tenants: bool = Field(
        False, description="Accept calls from agents of another tenant (they must also "
                           "match `accept_from`, which must then be given).")
    max_depth: int = Field(3, ge=1, le=HARD_MAX_DEPTH,
                           description="How long a chain of calls may be (A calls B "
                                       "calls C is 2).")
    timeout_s: float = Field(120.0, ge=1, le=MAX_WAIT_S, allow_inf_nan=False,
                             description="How long `agent_call` waits for the reply "
                                         "before answering with the call's id (to "
                                         "`subtask_wait` on).")
    max_message_chars: int = Field(32_000, ge=1, le=1_000_000,
                                   description="The longest message one call sends.")


class DelegationSettings(_Area):
    """An agent's subtasks and calls to other agents (``settings.delegation``)."""

    subtasks: SubtaskSettings = Field(default_factory=SubtaskSettings)
    calls: CallSettings = Field(default_factory=CallSettings)
