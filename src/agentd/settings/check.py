"""Checking an agent's settings against :class:`AgentSettings`, with every problem
named by its field.

The settings are validated as the JSON they are (strict: no string taken for a number,
no boolean for an integer, an array accepted where a tuple is meant). Before that, one
pass over the raw value refuses what JSON parsing lets through but nothing downstream
can hold: non-finite numbers (``1e309`` parses to infinity), integers beyond 64 bits
(the store's JSON encoder and PostgreSQL refuse them), nesting too deep to store, and
keys that look like secrets.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from typing import Annotated, Any, get_args, get_origin

import orjson
from pydantic import BaseModel, ValidationError

from agentd.errors import InvalidInput, InvalidModel, InvalidSettings
from agentd.llm.settings import ModelSettings
from agentd.settings._model import AgentSettings
from agentd.settings.sandbox import SandboxLimits

__all__ = ["SettingsProblem", "check_settings", "settings_problems", "stored_settings"]

_INT64 = (-(2**63), 2**63 - 1)
#: Deeper than this is refused (the store's JSON encoder stops at 255 levels).
MAX_DEPTH = 64
_SECRET = re.compile(r"(^|_)(api_?key|access_?key|private_?key|secret|password|passwd|"
                     r"token|credentials?|bearer|authorization)(_|$)")
_SECRET_MESSAGE = ("secrets are not allowed in settings (they are stored, and shown by "
                   "the API): put the key in an environment variable where the daemon "
                   "runs and name it in settings.api_key_env, or set it in the daemon's "
                   "config")
#: What pydantic calls the members of a union in an error's location.
_TAGS = frozenset({"str", "int", "float", "bool", "list", "dict", "tuple", "set", "none",
                   "bytes", "is-instance", "lax-or-strict", "json-or-python"})

Loc = tuple[str | int, ...]
_MODEL_KEYS = frozenset(ModelSettings.model_fields)


@dataclass(frozen=True, slots=True)
class SettingsProblem:
    """One problem: ``path`` inside the settings (``max_steps``, ``fallbacks[0].model``;
    empty for the whole object) and what is wrong."""

    path: str
    message: str

    def field(self, prefix: str = "settings") -> str:
        return f"{prefix}.{self.path}" if self.path else prefix

    def to_api(self) -> dict[str, str]:
        return {"field": self.field(), "message": self.message}


def _path(loc: Loc) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".")


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """The models an annotation holds (``list[X]``, ``X | None``, ``Annotated[X, ...]``)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    origin = get_origin(annotation)
    args = get_args(annotation)
    if origin is Annotated:
        return _models_in(args[0])
    found: list[type[BaseModel]] = []
    if origin is not None:  # list[X], X | None, dict[str, X], Literal[...]
        for arg in args:
            found.extend(_models_in(arg))
    return found


def _walk(loc: Loc) -> tuple[Loc, list[str]]:
    """``loc`` without pydantic's union member tags, and the field names of the model
    that holds its last part (for a "did you mean" hint)."""
    model: type[BaseModel] | None = AgentSettings
    names: list[str] = list(AgentSettings.model_fields)
    clean: list[str | int] = []
    classes = {m.__name__: m for m in _all_models()}
    for part in loc:
        if isinstance(part, int):
            clean.append(part)
        elif model is not None and part in model.model_fields:
            clean.append(part)
            names = list(model.model_fields)
            inner = _models_in(model.model_fields[part].annotation)
            model = inner[0] if inner else None
        elif part in _TAGS or any(c in part for c in "[](),") or part in classes:
            # A union's member ("bool", "tuple[str, ...]", a class name), not a key.
            model = classes.get(part, model)
        else:  # an unknown key, or a key of a dict
            names = list(model.model_fields) if model is not None else []
            model = None
            clean.append(part)
    return tuple(clean), names


@cache
def _all_models() -> tuple[type[BaseModel], ...]:
    seen: dict[type[BaseModel], None] = {}
    todo: list[type[BaseModel]] = [AgentSettings]
    while todo:
        model = todo.pop()
        if model in seen:
            continue
        seen[model] = None
        for info in model.model_fields.values():
            todo.extend(_models_in(info.annotation))
    return tuple(seen)


def _from_pydantic(exc: ValidationError) -> list[tuple[Loc, str]]:
    found: dict[Loc, list[str]] = {}
    for error in exc.errors(include_url=False):
        loc, names = _walk(tuple(error["loc"]))
        message = str(error["msg"])
        if message.startswith("Value error, "):
            message = message[len("Value error, "):]
        if error["type"] == "extra_forbidden":
            key = str(loc[-1]) if loc else ""
            message = "unknown setting"
            close = difflib.get_close_matches(key, names, n=1, cutoff=0.6)
            if close:
                message += f"; did you mean {close[0]!r}?"
            elif len(names) <= 12:
                message += f"; known here: {', '.join(sorted(names))}"
            else:
                message += ("; the settings are listed in docs/configuration.md and in "
                            "the AgentSettings schema of /openapi.json")
        messages = found.setdefault(loc, [])
        if message not in messages:
            messages.append(message)
    # A union whose members all failed reports each member's type error; an error
    # deeper inside one member says more than "not a string" about the others.
    deeper = [loc for loc in found if any(o[:len(loc)] == loc and len(o) > len(loc)
                                          for o in found)]
    for loc in deeper:
        del found[loc]
    return [(loc, " or ".join(messages)) for loc, messages in found.items()]


# complexity: one walk of raw settings JSON with one branch per kind of value JSON
# parsing lets through (duplicate keys, secrets, non-finite numbers, depth).
def _scan(raw: Mapping[str, Any]) -> tuple[list[tuple[Loc, str]], list[Loc]]:
    """Problems JSON parsing lets through (see the module's docstring), and the
    locations of values to blank before the model sees them."""
    problems: list[tuple[Loc, str]] = []
    blank: list[Loc] = []
    secrets: list[tuple[Loc, Any]] = [((key,), key) for key in raw]
    for index, entry in enumerate(raw.get("fallbacks") or ()
                                  if isinstance(raw.get("fallbacks"), list) else ()):
        own = entry.get("settings") if isinstance(entry, dict) else None
        if isinstance(own, dict):
            secrets += [(("fallbacks", index, "settings", key), key) for key in own]
    for loc, key in secrets:
        normal = str(key).lower().replace("-", "_")
        if _SECRET.search(normal) and normal not in AgentSettings.model_fields:
            problems.append((loc, _SECRET_MESSAGE))
    stack: list[tuple[Loc, Any]] = [((), raw)]
    while stack:
        loc, value = stack.pop()
        if isinstance(value, bool) or value is None or isinstance(value, str):
            continue
        if isinstance(value, int):
            if not _INT64[0] <= value <= _INT64[1]:
                problems.append((loc, f"{value} does not fit in 64 bits (at most "
                                      f"{_INT64[1]})"))
                blank.append(loc)
        elif isinstance(value, float):
            if not math.isfinite(value):
                problems.append((loc, "must be a finite number"))
                blank.append(loc)
        elif len(loc) >= MAX_DEPTH and isinstance(value, dict | list | tuple):
            problems.append((loc, f"nested deeper than {MAX_DEPTH} levels"))
            blank.append(loc)
        elif isinstance(value, dict):
            for key, item in value.items():
                if not isinstance(key, str):
                    problems.append((loc, "keys must be strings"))
                    blank.append(loc)
                    break
                stack.append(((*loc, key), item))
        elif isinstance(value, list | tuple):
            stack.extend(((*loc, i), item) for i, item in enumerate(value))
        else:
            problems.append((loc, f"{type(value).__name__} is not a JSON value"))
            blank.append(loc)
    return problems, blank


def _blanked(raw: Any, loc: Loc) -> Any:
    """``raw`` with the value at ``loc`` replaced by None (containers on the way
    copied, the caller's left alone)."""
    if not loc:
        return None
    head, rest = loc[0], loc[1:]
    copy: Any = dict(raw) if isinstance(raw, dict) else list(raw)
    copy[head] = _blanked(raw[head], rest)
    return copy


def _validate(raw: Any, caps: SandboxLimits | None
              ) -> tuple[AgentSettings | None, list[SettingsProblem]]:
    if not isinstance(raw, Mapping):
        return None, [SettingsProblem("", "must be a JSON object")]
    found, blank = _scan(raw)
    value: Any = raw
    for loc in blank:
        value = _blanked(value, loc)
    parsed: AgentSettings | None = None
    try:
        parsed = AgentSettings.model_validate_json(orjson.dumps(value), strict=True)
    except ValidationError as exc:
        taken = {loc for loc, _ in found}
        found += [(loc, m) for loc, m in _from_pydantic(exc) if loc not in taken]
    if parsed is not None and caps is not None:
        found += [(("sandbox", "limits", name), message)
                  for name, message in parsed.sandbox.above(caps).items()]
    problems = [SettingsProblem(_path(loc), message) for loc, message in found]
    return (parsed if not problems else None), problems


def settings_problems(raw: Any, *, caps: SandboxLimits | None = None
                      ) -> list[SettingsProblem]:
    """Every problem with ``raw`` (an agent's settings as stored or sent); none when
    valid. ``caps``: the daemon's sandbox limits, which an agent's may not exceed."""
    return _validate(raw, caps)[1]


def check_settings(raw: Any, *, caps: SandboxLimits | None = None,
                   where: str = "body.settings") -> AgentSettings:
    """``raw`` as :class:`AgentSettings`, or a 422 (:class:`InvalidInput`) naming each
    bad field (``body.settings.max_steps``) in ``details.errors``."""
    parsed, problems = _validate(raw, caps)
    if parsed is None:
        # A bad model-call setting keeps the code it had when the providers checked
        # them (invalid_model); any other, invalid_input. Both are 422s.
        model_call = any(p.path.partition(".")[0].partition("[")[0] in _MODEL_KEYS
                         for p in problems)
        raise _error(InvalidModel if model_call else InvalidInput, problems, where)
    return parsed


def stored_settings(raw: Any) -> AgentSettings:
    """An agent's settings as stored, read. Raises :class:`InvalidSettings` naming
    each field this version refuses: a run of such an agent fails with it rather than
    running on a guessed default. (Not cached: a check takes microseconds, and the
    runtime reads an agent's settings once while it is awake.)"""
    parsed, problems = _validate(raw, None)
    if parsed is None:
        raise _error(InvalidSettings, problems, "settings")
    return parsed


def _error(kind: type[InvalidInput], problems: list[SettingsProblem], where: str
           ) -> InvalidInput:
    shown = "; ".join(f"{p.field('settings')}: {p.message}" for p in problems[:5])
    more = len(problems) - 5
    if kind is InvalidSettings:
        shown = ("the agent's stored settings are not valid in this version (fix them "
                 "with PATCH, then resume the agent): " + shown)
    error = kind(shown + (f"; and {more} more" if more > 0 else ""))
    error.details = {**error.details, "errors": [
        {"field": p.field(where), "message": p.message} for p in problems]}
    return error
