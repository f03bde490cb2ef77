"""The settings of one model call: what an agent's ``settings`` (or one fallback's
``settings``) says to the provider that builds its model.

The one definition of these keys, their types, ranges and defaults: the providers read
them through :meth:`ModelSettings.pick`, and ``agentd.settings.AgentSettings`` (an
agent's whole settings) is built on this model. Validate JSON-shaped input strictly
(``model_validate_json(..., strict=True)``, as ``agentd.settings`` does): a string is
never taken for a number, nor a boolean for an integer.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    ValidationError,
    WithJsonSchema,
    field_validator,
)

from agentd.errors import InvalidModel, InvalidSettings
from agentd.trust import OperatorOnly

__all__ = ["DAEMON_ENV_PREFIX", "MAX_OUTPUT_TOKENS", "MIN_THINKING_BUDGET", "SCRIPT_TURN_SCHEMA",
           "ModelSettings", "key_variable"]

#: No model writes more in one call; a larger ``max_tokens`` is a typo.
MAX_OUTPUT_TOKENS = 1_000_000
#: Anthropic's smallest extended-thinking budget.
MIN_THINKING_BUDGET = 1024
#: The daemon's own variables (its tokens, its database URL): never a model's key.
DAEMON_ENV_PREFIX = "AGENTD_"
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}\Z")

def key_variable(value: str | None) -> str | None:
    """``value`` if it names an environment variable that may hold a key (a provider's,
    a search API's): a variable name, never one of the daemon's own (``AGENTD_*``).
    For pydantic validators: a ValueError says why not."""
    if value is not None and not _ENV_NAME.match(value):
        raise ValueError("must be the name of an environment variable (letters, "
                         "digits and '_', not starting with a digit)")
    if value is not None and value.upper().startswith(DAEMON_ENV_PREFIX):
        raise ValueError(f"may not name one of the daemon's own variables "
                         f"({DAEMON_ENV_PREFIX}*): they hold its tokens and database")
    return value


#: The JSON schema of one scripted turn (``agentd.llm.scripted`` checks turns).
SCRIPT_TURN_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "One turn of the scripted model: text, tool calls or an error.",
    "properties": {
        "text": {"type": "string"},
        "tool_calls": {"type": "array", "items": {
            "type": "object", "required": ["name"],
            "properties": {"name": {"type": "string"}, "arguments": {"type": "object"}}}},
        "delay_ms": {"type": "number", "minimum": 0},
        "error": {"type": "string"},
        "retryable": {"type": "boolean"},
        "finish_reason": {"enum": ["stop", "length", "tool_calls", "content_filter"]},
    },
    "additionalProperties": False,
}


def _turn(turn: Any) -> Any:
    from agentd.llm.scripted import validate_turn  # (the scripted model owns its turns)

    try:
        validate_turn(turn)
    except InvalidModel as exc:
        raise ValueError(exc.message) from None
    return turn


def _thinking(value: Any) -> int | str:
    # One plain check instead of a union: a union's errors name each member.
    if value == "adaptive":
        return "adaptive"
    if (type(value) is int and MIN_THINKING_BUDGET <= value <= MAX_OUTPUT_TOKENS):
        return value
    raise ValueError(f"must be a token budget (an integer from {MIN_THINKING_BUDGET} to "
                     f"{MAX_OUTPUT_TOKENS}) or 'adaptive'")


class ModelSettings(BaseModel):
    """How one model is called. Every field is optional; unset means the provider's
    default (or the daemon's, for ``max_retries``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    base_url: Annotated[str | None, OperatorOnly(
        "secrets", "the model's API key is sent to this URL")] = Field(
        None, min_length=1, max_length=2048,
        description="OpenAI-compatible providers, `anthropic`: the server's URL (http or "
                    "https), e.g. `http://127.0.0.1:8000/v1`; overrides "
                    "`AGENTD_<PROVIDER>_BASE_URL` and the provider's default.")
    api_key_env: Annotated[str | None, OperatorOnly(
        "secrets", "the value of this daemon variable is sent to the model's server")
    ] = Field(
        None, description="OpenAI-compatible providers, `anthropic`: the name of the "
                          "environment variable (where the daemon runs) holding the API "
                          "key; never an `AGENTD_*` variable (the daemon's own). A key "
                          "itself is refused in settings.")
    temperature: float | None = Field(
        None, ge=0, le=2, allow_inf_nan=False,
        description="OpenAI-compatible providers, `anthropic`: the sampling temperature; "
                    "`anthropic` sends it only when set.")
    max_tokens: int | None = Field(
        None, ge=1, le=MAX_OUTPUT_TOKENS,
        description="Output token limit per model call, at most the model's own when "
                    "the catalog knows it; sent as `max_completion_tokens` to `openai`, "
                    "`max_tokens` elsewhere. Default: the provider's; `anthropic` always "
                    "sends one, 4096 by default.")
    timeout_s: float | None = Field(
        None, gt=0, le=86_400, allow_inf_nan=False,
        description="HTTP timeout of one model call, seconds. Default: the SDK's.")
    max_retries: int | None = Field(
        None, ge=0, le=20,
        description="Every model: the kernel's retries of a transient failure, per model "
                    "and call. Default: the daemon's `retry_attempts` - 1. The SDKs' own "
                    "retries are off.")
    thinking: Annotated[
        int | Literal["adaptive"] | None,
        PlainValidator(_thinking, json_schema_input_type=int | Literal["adaptive"] | None),
    ] = Field(None, description="`anthropic`: extended thinking, a token budget (an "
                                "integer >= 1024, below `max_tokens`) or `\"adaptive\"`. "
                                "Off when unset.")
    script: list[Annotated[dict[str, Any], BeforeValidator(_turn),
                           WithJsonSchema(SCRIPT_TURN_SCHEMA)]] | None = Field(
        None, max_length=10_000,
        description="`scripted`: the turns it plays in order, one per model call in a "
                    "session (see concepts.md, the scripted model).")

    @field_validator("script", mode="before")
    @classmethod
    def _turns(cls, value: Any) -> Any:
        if value is not None and (not isinstance(value, list) or not value):
            raise ValueError("must be a non-empty list of turns")
        return value

    @field_validator("base_url")
    @classmethod
    def _http(cls, value: str | None) -> str | None:
        if value is None:
            return None
        scheme, sep, rest = value.strip().partition("://")
        if not sep or scheme.lower() not in ("http", "https") or not rest.strip("/"):
            raise ValueError("must be an http:// or https:// URL with a host, e.g. "
                             "'http://127.0.0.1:8000/v1'")
        return value

    @field_validator("api_key_env")
    @classmethod
    def _env_name(cls, value: str | None) -> str | None:
        return key_variable(value)

    @classmethod
    def pick(cls, settings: Mapping[str, Any]) -> ModelSettings:
        """This model's keys of ``settings`` (an agent's, holding other areas' keys
        too), checked. Raises :class:`InvalidSettings` naming the first bad field."""
        if isinstance(settings, ModelSettings):
            return settings
        own = {k: v for k, v in settings.items() if k in cls.model_fields}
        try:
            return cls.model_validate(own, strict=True)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}"
                            for p in first["loc"])
            raise InvalidSettings(f"settings{where}: {first['msg']}",
                                  field=f"body.settings{where}") from None
