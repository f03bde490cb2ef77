"""What the core asks of whoever runs an agent's checks (``settings.hooks``).

The run loop decides *when* a check runs and what its verdict does (``_hooksteps``);
a :class:`Checks` (``agentd.hooks.HookRunner``, wired by the composition root) decides
*how* one runs: a Python callable the operator allows, a signed webhook, a command in
the agent's sandbox. Whatever a check answers goes through :func:`parse_verdict`: an
answer that is not a verdict for its point is the check failing (:class:`CheckFailed`),
never a guess.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from agentd.settings.hooks import HookCheck, HookPoint

__all__ = ["VERDICTS", "CheckCall", "CheckFailed", "CheckVerdict", "Checks", "parse_verdict"]

#: The verdicts each point takes.
VERDICTS: dict[str, frozenset[str]] = {
    "input": frozenset({"allow", "deny"}),
    "tool_call": frozenset({"allow", "deny", "modify"}),
    "tool_result": frozenset({"pass", "redact", "taint", "deny"}),
    "output": frozenset({"allow", "deny"}),
}
_MAX_REASON = 1000


class CheckFailed(Exception):
    """A check gave no verdict: it timed out, raised, answered garbage or could not be
    reached. ``str(exc)`` says which, for the log and the verdict's ``failed``."""


@dataclass(frozen=True, slots=True, kw_only=True)
class CheckVerdict:
    """A check's answer. ``arguments``: a ``modify``'s new arguments; ``text``: a
    ``redact``'s replacement of the result."""

    verdict: str
    reason: str = ""
    arguments: dict[str, Any] | None = None
    text: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class CheckCall:
    """One check to run: the check, where, the facts it judges, and whose run it is
    (the sandbox and workspace a ``command`` check runs in)."""

    check: HookCheck
    point: HookPoint
    facts: Mapping[str, Any]
    agent: str
    agent_id: str
    session: str
    run_id: str
    sandbox: Any = None
    workspace: Path | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    def payload(self) -> dict[str, Any]:
        """What a webhook or command receives (JSON)."""
        return {"check": self.check.name, "point": self.point, "agent": self.agent,
                "session": self.session, "run_id": self.run_id, **self.facts}


class Checks(Protocol):
    """Runs one check to its verdict (the caller bounds it by ``check.timeout_s``)."""

    async def run(self, call: CheckCall) -> CheckVerdict:
        """The verdict; :class:`CheckFailed` when there is none."""
        ...


def parse_verdict(point: str, value: Any) -> CheckVerdict:
    """A verdict for ``point`` from what a check answered (a :class:`CheckVerdict`, or
    ``{"verdict": ..., "reason"?, "arguments"?, "text"?}``); :class:`CheckFailed`
    naming what is wrong with anything else."""
    if isinstance(value, CheckVerdict):
        value = {"verdict": value.verdict, "reason": value.reason,
                 "arguments": value.arguments, "text": value.text}
    if not isinstance(value, Mapping):
        raise CheckFailed(f"answered {type(value).__name__}, not a verdict object "
                          '({"verdict": ...})')
    verdict = value.get("verdict")
    allowed = VERDICTS[point]
    if not isinstance(verdict, str) or verdict not in allowed:
        raise CheckFailed(f"answered verdict {str(verdict)[:40]!r}; at {point} it must be "
                          f"one of {', '.join(sorted(allowed))}")
    reason = value.get("reason", "")
    if reason is None:
        reason = ""
    if not isinstance(reason, str):
        raise CheckFailed("answered a reason that is not a string")
    arguments = value.get("arguments")
    text = value.get("text")
    if verdict == "modify" and not isinstance(arguments, dict):
        raise CheckFailed("answered modify without an `arguments` object")
    if verdict == "redact" and not isinstance(text, str):
        raise CheckFailed("answered redact without a `text` string")
    return CheckVerdict(verdict=verdict, reason=reason[:_MAX_REASON],
                        arguments=arguments if verdict == "modify" else None,
                        text=text if verdict == "redact" else None)
