"""The structured-output half of a run's last step: its final answer held to a schema.

The run's schema is its message's ``output_schema`` (the sender's), else its agent's
``settings.output.json_schema``. A final answer is read as JSON and validated
(:func:`agentd.llm.output.parse_output`); one that matches is the run's output, as
compact JSON. One that does not is committed as the step it was, with an
``output.invalid`` event naming its first schema error; while repairs are left the
event carries the prompt that tells the model (it joins the conversation: a resumed
run finds it in the log and asks again, without calling the model for a step already
recorded), else the run fails with ``output_invalid`` in the same commit. Every
answer's usage is charged like any step's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, cast

from agentd.errors import AgentdError
from agentd.events import (
    ErrorData,
    Event,
    OutputInvalid,
    OutputInvalidData,
    RunEnd,
    RunFailed,
    UsageData,
)
from agentd.llm.output import (
    OutputProblem,
    format_of,
    parse_output,
    repair_prompt,
    validate_inline,
)
from agentd.store import RunUpdate

if TYPE_CHECKING:
    from agentd.llm.messages import OutputFormat
    from agentd.runtime.history import SessionHistory
    from agentd.runtime.loop import RunOutcome
    from agentd.settings import AgentSettings
    from agentd.store import NewEvent
    from agentd.store.records import EventRecord, RunRecord, UsageCharge

__all__ = ["OutputSteps"]

class OutputSteps:
    """Mixed into :class:`~agentd.runtime.loop.RunExecutor` (declares what it uses)."""

    run: RunRecord
    history: SessionHistory
    agent_settings: AgentSettings
    steps: int
    _pieces: list[str]
    #: The format the run's final answer must have (None: any answer).
    output: OutputFormat | None
    #: How many answers that did not match may be asked for again, and how many were.
    max_repairs: int
    repairs: int

    async def _commit(self, events: Sequence[NewEvent], update: RunUpdate | None = None,
                      *args: Any, **kwargs: Any) -> list[EventRecord]:
        raise NotImplementedError

    def _new(self, event: Event) -> NewEvent:
        raise NotImplementedError

    def _charged(self, charge: UsageCharge | None) -> None:
        raise NotImplementedError

    def _used(self) -> UsageData:
        raise NotImplementedError

    async def _finish(self, end: RunEnd, *, before: Sequence[NewEvent] = (),
                      steer_guard: int | None = None, charge: UsageCharge | None = None
                      ) -> RunOutcome:
        raise NotImplementedError

    def _output_format(self) -> None:
        """The run's output format, from its message (in the log) or its agent."""
        schema = (self.history.output_schema(self.run.id)
                  or self.agent_settings.output.json_schema)
        self.output = format_of(schema) if schema else None

    async def _checked_output(self, output: str, events: list[NewEvent],
                              charge: UsageCharge | None) -> str | RunOutcome | None:
        """The final answer ``output`` (its step's ``events`` and ``charge`` not yet
        committed) as the run's output: its JSON when it matches; else None when the
        model is asked again (the step committed), or the failed run's outcome."""
        assert self.output is not None
        schema = self.output.schema
        checked = (parse_output(schema, output) if validate_inline(schema, output)
                   else await asyncio.to_thread(parse_output, schema, output))
        if not isinstance(checked, OutputProblem):
            return checked.text
        data: OutputInvalidData = {"step": self.steps, "path": checked.path,
                                   "message": checked.message}
        if self.repairs < self.max_repairs:
            self.repairs += 1
            data["repair"], data["max_repairs"] = self.repairs, self.max_repairs
            data["prompt"] = repair_prompt(checked)
            await self._commit([*events, self._new(OutputInvalid(data=data))],
                               RunUpdate(steps=self.steps), usage=charge)
            self._charged(charge)
            self._pieces.clear()
            return None
        tried = f" (after {self.repairs} repair{'s' * (self.repairs != 1)})" \
            if self.repairs else ""
        error = AgentdError(
            f"the final answer does not match the output schema {checked.describe()}"
            f"{tried}", code="output_invalid",
            details={"path": checked.path, "message": checked.message,
                     "repairs": self.repairs})
        outcome = await self._finish(
            RunFailed(data={"error": cast(ErrorData, error.to_dict()), "steps": self.steps,
                            "usage": self._used()}),
            before=[*events, self._new(OutputInvalid(data=data))], charge=charge)
        self._charged(charge)
        return outcome
