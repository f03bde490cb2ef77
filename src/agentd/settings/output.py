"""The ``output`` area of an agent's settings: structured output, a final answer held
to a JSON Schema (:mod:`agentd.llm.output` checks it; the run loop holds answers to it)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from agentd.errors import InvalidInput
from agentd.llm.output import check_schema

__all__ = ["MAX_REPAIRS", "OutputSettings"]

#: The most answers a run may ask for again after one that did not match.
MAX_REPAIRS = 10


class OutputSettings(BaseModel):
    """The JSON Schema every run's final answer must match, and how often a model is
    asked again after an answer that did not."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    json_schema: dict[str, Any] | None = Field(
        None, description="A JSON Schema (draft 2020-12) the final answer of every run "
                          "must match: one JSON value, returned as the run's output. A "
                          "message's `output_schema` replaces it for its run. Local "
                          "`$ref`s only; at most 32 KiB and 32 levels deep; no recursion "
                          "without a base case.")
    max_repairs: int | None = Field(
        None, ge=0, le=MAX_REPAIRS,
        description="Answers that did not match which the model is asked to correct "
                    "before the run fails with `output_invalid`. Default: the daemon's "
                    "`output_max_repairs` (2).")

    @field_validator("json_schema")
    @classmethod
    def _checked(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is None:
            return None
        try:
            return check_schema(value, "json_schema")
        except InvalidInput as exc:
            raise ValueError(exc.message.removeprefix("json_schema").strip(" :")) from None
