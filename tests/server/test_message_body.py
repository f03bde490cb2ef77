"""The message route's own check of the usual body (a text and flags) takes exactly
what :class:`MessageIn` takes, with the same values; every other body, and every
refusal, is MessageIn's."""

from __future__ import annotations

import itertools
import typing
from typing import Any

import pytest
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from agentd.server.routes import sessions
from agentd.server.schemas import MessageIn

ABSENT = object()
#: Each field's values to try: MessageIn's own, their neighbours, other JSON types.
POOLS: dict[str, list[Any]] = {
    "content": [ABSENT, "", "x", "hello there", 1, None, [], {}],
    "stream": [ABSENT, True, False, 0, 1, "true", None],
    "wait": [ABSENT, True, False, 0, "false", None],
    "mode": [ABSENT, "enqueue", "reject", "interrupt", "steer", "Enqueue", "", None, 1, []],
    "priority": [ABSENT, None, "interactive", "background", "batch", "urgent", 0, []],
}


def _reference(data: Any) -> tuple[Any, ...] | list[Any]:
    """What MessageIn makes of ``data``: its fields, or its errors."""
    try:
        body = MessageIn.model_validate(data)
    except ValidationError as exc:
        return [{**e, "loc": ("body", *e["loc"])} for e in exc.errors()]
    return (body.content, body.stream, body.wait, body.mode, body.priority,
            body.output_schema)


def _checked(data: Any) -> tuple[Any, ...] | list[Any]:
    try:
        body = sessions._message_body(data)
    except RequestValidationError as exc:
        return list(exc.errors())
    return (body.content, body.stream, body.wait, body.mode, body.priority,
            body.output_schema)


def test_every_combination_of_the_plain_fields_is_taken_as_message_in_takes_it() -> None:
    for values in itertools.product(*POOLS.values()):
        data = {k: v for k, v in zip(POOLS, values, strict=True) if v is not ABSENT}
        assert _checked(data) == _reference(data), data


@pytest.mark.parametrize("data", [
    {"content": "x", "extra": 1},
    {"content": "x", "output_schema": {"type": "object"}},
    {"content": "x", "output_schema": None},
    {"content": [{"type": "text", "text": "hi"}]},
    {"content": [{"type": "image", "url": "https://example.com/a.png"}], "wait": False},
    {"content": []},
    [],
    "x",
    None,
])
def test_other_bodies_are_message_in_s(data: Any) -> None:
    assert _checked(data) == _reference(data)


def test_the_named_values_are_message_in_s() -> None:
    fields = MessageIn.model_fields
    assert set(typing.get_args(fields["mode"].annotation)) == sessions._MODES
    assert set(typing.get_args(typing.get_args(fields["priority"].annotation)[0])) \
        == sessions._PRIORITIES
    assert set(fields) - {"output_schema"} == sessions._PLAIN_FIELDS
