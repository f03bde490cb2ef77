"""The one check of operator-only settings (:mod:`agentd.trust`).

:func:`operator_only` walks a typed model (an agent's :class:`AgentSettings`, a
session's policy) and lists every field marked :class:`~agentd.trust.OperatorOnly`
that the change sets and a member may not: set to something other than the field's
default, not kept as it was (a value the same field held before the change, where a
list's items are compared whatever their place), and not one the mark's ``allows``
lets members use. The caller refuses the change (403) unless the token's role is
``operator`` or above. Changing other fields of an agent an operator configured is
therefore fine: what the operator set stays.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson
from pydantic import BaseModel

from agentd.trust import MODEL_SPEC, Grants, OperatorOnly, Reach

__all__ = ["Reaching", "operator_only"]


@dataclass(frozen=True, slots=True)
class Reaching:
    """One operator-only field a change sets: where (``settings.base_url``,
    ``settings.fallbacks[0].settings.api_key_env``, ``model``) and what it reaches."""

    field: str
    reaches: Reach
    why: str

    def to_api(self, prefix: str = "body.") -> dict[str, str]:
        return {"field": prefix + self.field, "message": f"operator-only: {self.why}"}


def _mark(model: type[BaseModel], name: str) -> OperatorOnly | None:
    for item in model.model_fields[name].metadata:
        if isinstance(item, OperatorOnly):
            return item
    return None


def _frozen(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS, default=_plain)


def _plain(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, tuple | set | frozenset):
        return list(value)
    raise TypeError(type(value).__name__)


def _marked(model: BaseModel | None, path: str, key: str
            ) -> Iterator[tuple[str, str, OperatorOnly, Any]]:
    """(path, key without list indexes, mark, value) of every marked field set to
    something other than its default, at any depth."""
    if model is None:
        return
    cls = type(model)
    for name, info in cls.model_fields.items():
        value = getattr(model, name)
        here, here_key = f"{path}.{name}".lstrip("."), f"{key}.{name}".lstrip(".")
        mark = _mark(cls, name)
        if mark is not None and value != info.get_default(call_default_factory=True):
            yield here, here_key, mark, value
        if isinstance(value, BaseModel):
            yield from _marked(value, here, here_key)
        elif isinstance(value, list | tuple):
            for index, item in enumerate(value):
                if isinstance(item, BaseModel):
                    yield from _marked(item, f"{here}[{index}]", f"{here_key}[]")


def operator_only(after: BaseModel, before: BaseModel | None, grants: Grants, *,
                  prefix: str = "settings", model: str | None = None,
                  model_before: str | None = None) -> list[Reaching]:
    """The operator-only fields ``after`` sets that ``before`` did not hold and a
    member may not use (``prefix``: how fields are named, ``settings`` for an agent's).
    ``model``/``model_before``: an agent's model string, checked as a marked field."""
    had = {(key, _frozen(value)) for _, key, _, value in _marked(before, prefix, prefix)}
    found: list[Reaching] = []
    allowed_model = MODEL_SPEC.allows
    assert allowed_model is not None
    if model is not None and model != model_before and not allowed_model(grants, model):
        found.append(Reaching("model", MODEL_SPEC.reaches, MODEL_SPEC.why))
    for path, key, mark, value in _marked(after, prefix, prefix):
        if (key, _frozen(value)) in had:
            continue
        if mark.allows is not None and mark.allows(grants, value):
            continue
        found.append(Reaching(path, mark.reaches, mark.why))
    return found
