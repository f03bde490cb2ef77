"""Graders: what a case checks of a run (the candidate's fork, or the recorded
baseline). A grader is data, one of:

==================  =========================================================================
``exact``           the final answer equals ``expected`` (default: the baseline's answer);
                    ``strip`` (default true) and ``ignore_case``
``regex``           the final answer matches ``pattern`` (``ignore_case``; ``negate``: must
                    not); patterns are guarded against catastrophic backtracking as output
                    schemas' are (:func:`agentd.llm.output.check_pattern`)
``json_schema``     the final answer is JSON matching ``schema`` (Draft 2020-12, checked as
                    an output schema is: :func:`agentd.llm.output.check_schema`)
``tool_called``     a call of ``tool`` was made (``arguments``: with at least these),
                    at least ``min`` times (default 1)
``tool_not_called`` no such call was made
``max_steps``       the run took at most ``steps`` steps
``max_tokens``      the run used at most ``tokens`` tokens (input and output)
``max_cost``        the run cost at most ``usd`` (its model priced in the catalog)
``rubric``          a model judges the answer against ``rubric`` (``model`` and ``settings``
                    of the judge: default the agent's; checked as an agent's change is)
==================  =========================================================================

Each grade is ``{kind, name?, passed, reason}``; a grader that fails to grade (raises,
or does not finish in time) gives ``passed: null`` and ``error``, and errors its case.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from agentd.errors import InvalidInput
from agentd.llm.output import (
    MAX_ANSWER_BYTES,
    OutputProblem,
    check_pattern,
    check_schema,
    parse_output,
    validate_inline,
)

__all__ = ["GRADER_KINDS", "Grade", "Observed", "check_graders", "grade", "verdict"]


class _Grader(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, max_length=200)


class Exact(_Grader):
    kind: Literal["exact"]
    expected: str | None = Field(default=None, max_length=1_000_000)
    strip: bool = True
    ignore_case: bool = False


class Regex(_Grader):
    kind: Literal["regex"]
    pattern: str = Field(min_length=1, max_length=1000)
    ignore_case: bool = False
    negate: bool = False


class JsonSchema(_Grader):
    kind: Literal["json_schema"]
    schema_: dict[str, Any] = Field(alias="schema")


class ToolCalled(_Grader):
    kind: Literal["tool_called"]
    tool: str = Field(min_length=1, max_length=200)
    arguments: dict[str, Any] | None = None
    min: int = Field(default=1, ge=1, le=10_000)


class ToolNotCalled(_Grader):
    kind: Literal["tool_not_called"]
    tool: str = Field(min_length=1, max_length=200)
    arguments: dict[str, Any] | None = None


class MaxSteps(_Grader):
    kind: Literal["max_steps"]
    steps: int = Field(ge=0, le=100_000)


class MaxTokens(_Grader):
    kind: Literal["max_tokens"]
    tokens: int = Field(ge=0)


class MaxCost(_Grader):
    kind: Literal["max_cost"]
    usd: float = Field(ge=0, allow_inf_nan=False)


class Rubric(_Grader):
    kind: Literal["rubric"]
    rubric: str = Field(min_length=1, max_length=20_000)
    model: str | None = Field(default=None, max_length=300)
    settings: dict[str, Any] | None = None


_ANY = Annotated[Exact | Regex | JsonSchema | ToolCalled | ToolNotCalled | MaxSteps
                 | MaxTokens | MaxCost | Rubric, Field(discriminator="kind")]
_LIST = TypeAdapter(list[_ANY])
GRADER_KINDS = ("exact", "regex", "json_schema", "tool_called", "tool_not_called",
                "max_steps", "max_tokens", "max_cost", "rubric")
#: Graders per case.
MAX_GRADERS = 32


def check_graders(raw: Any, where: str = "body.graders") -> list[dict[str, Any]]:
    """``raw`` as a case's graders (as stored: each as given, checked), or a 422
    naming each bad one (``body.graders[1].pattern``)."""
    if not isinstance(raw, list) or len(raw) > MAX_GRADERS:
        raise InvalidInput(f"graders must be a list of at most {MAX_GRADERS}", field=where)
    try:
        parsed = _LIST.validate_python(raw)
    except ValidationError as exc:
        errors = [{"field": f"{where}[{e['loc'][0]}]" + "".join(
            f".{p}" for p in e["loc"][2:] if isinstance(p, str)) if e["loc"] else where,
                   "message": e["msg"]} for e in exc.errors()]
        raise InvalidInput(f"{errors[0]['field']}: {errors[0]['message']}",
                           details={"errors": errors}) from None
    for i, grader in enumerate(parsed):
        at = f"{where}[{i}]"
        if isinstance(grader, Regex):
            check_pattern(grader.pattern, f"{at}.pattern")
            try:
                re.compile(grader.pattern)
            except re.error as exc:
                raise InvalidInput(f"{at}.pattern: {exc}", field=f"{at}.pattern") from None
        elif isinstance(grader, JsonSchema):
            check_schema(grader.schema_, f"{at}.schema")
    return [dict(g) for g in raw]


@dataclass(kw_only=True, slots=True)
class Observed:
    """What a run did, as graders see it."""

    status: str
    output: str | None
    error: Mapping[str, Any] | None = None
    steps: int = 0
    usage: Mapping[str, Any] = field(default_factory=dict)
    #: ``{name, arguments}`` of every tool call its model made (from the fork step on).
    tool_calls: Sequence[Mapping[str, Any]] = ()


@dataclass(kw_only=True, slots=True)
class Grade:
    kind: str
    passed: bool | None
    reason: str
    name: str | None = None
    error: str | None = None

    def to_api(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "passed": self.passed,
                               "reason": self.reason}
        if self.name:
            out["name"] = self.name
        if self.error is not None:
            out["error"] = self.error
        return out


def _short(text: str | None, limit: int = 120) -> str:
    text = "" if text is None else text
    return repr(text if len(text) <= limit else text[:limit] + "...")


def _matches(call: Mapping[str, Any], name: str, arguments: Mapping[str, Any] | None
             ) -> bool:
    if call.get("name") != name:
        return False
    got = call.get("arguments") or {}
    return arguments is None or all(k in got and got[k] == v for k, v in arguments.items())


async def grade(raw: Mapping[str, Any], observed: Observed, *,
                baseline_output: str | None) -> Grade:
    """One grader's grade of ``observed`` (not a rubric's: see the service); a bad
    value the grader cannot read is a failure to grade (raised)."""
    grader = _LIST.validate_python([raw])[0]
    kind, name = grader.kind, grader.name
    output = observed.output or ""
    passed, reason = False, ""
    if isinstance(grader, Exact):
        expected = baseline_output if grader.expected is None else grader.expected
        want, got = expected or "", output
        if grader.strip:
            want, got = want.strip(), got.strip()
        if grader.ignore_case:
            want, got = want.casefold(), got.casefold()
        passed = want == got
        reason = "the answer is as expected" if passed else (
            f"expected {_short(expected)}, got {_short(observed.output)}")
    elif isinstance(grader, Regex):
        found = await _search(grader.pattern, output, grader.ignore_case)
        passed = found != grader.negate
        reason = (f"{'no ' if not found else ''}match of /{grader.pattern}/"
                  + (" (must not match)" if grader.negate else ""))
    elif isinstance(grader, JsonSchema):
        parsed = (parse_output(grader.schema_, output)
                  if validate_inline(grader.schema_, output)
                  else await asyncio.to_thread(parse_output, grader.schema_, output))
        passed = not isinstance(parsed, OutputProblem)
        reason = ("the answer matches the schema" if passed
                  else f"the answer does not match: {parsed.describe()}"
                  if isinstance(parsed, OutputProblem) else "")
    elif isinstance(grader, ToolCalled | ToolNotCalled):
        count = sum(_matches(c, grader.tool, grader.arguments) for c in observed.tool_calls)
        what = grader.tool + (f" with {orjson.dumps(grader.arguments).decode()}"
                              if grader.arguments else "")
        if isinstance(grader, ToolCalled):
            passed = count >= grader.min
            reason = f"{what} called {count} time(s); at least {grader.min} wanted"
        else:
            passed = count == 0
            reason = f"{what} called {count} time(s); none wanted"
    else:
        passed, reason = _budget(grader, observed)
    return Grade(kind=kind, name=name, passed=passed, reason=reason)


def _budget(grader: Any, observed: Observed) -> tuple[bool, str]:
    usage = observed.usage or {}
    if isinstance(grader, MaxSteps):
        return (observed.steps <= grader.steps,
                f"{observed.steps} step(s); at most {grader.steps}")
    if isinstance(grader, MaxTokens):
        used = int(usage.get("input_tokens") or 0) + int(usage.get("output_tokens") or 0)
        return used <= grader.tokens, f"{used} token(s); at most {grader.tokens}"
    if isinstance(grader, MaxCost):
        if "cost_usd" not in usage:
            raise ValueError("the run's model has no price in the catalog: its cost is "
                             "unknown (grade its tokens with max_tokens)")
        cost = float(usage["cost_usd"])
        return cost <= grader.usd, f"cost ${cost:.6f}; at most ${grader.usd:.6f}"
    raise ValueError(f"a {grader.kind} grader is not graded here")


async def _search(pattern: str, text: str, ignore_case: bool) -> bool:
    compiled = re.compile(pattern, re.IGNORECASE if ignore_case else 0)
    text = text[:MAX_ANSWER_BYTES]
    if len(text) <= 4096:
        return compiled.search(text) is not None
    return await asyncio.to_thread(lambda: compiled.search(text) is not None)


def verdict(grades: Sequence[Grade], status: str) -> str:
    """A case's result from its grades and its run's status: ``errored`` when a
    grader could not grade, ``failed`` when one failed or the run did not complete,
    else ``passed``."""
    if any(g.passed is None for g in grades):
        return "errored"
    if status != "completed" or any(not g.passed for g in grades):
        return "failed"
    return "passed"
