"""Params the SDK's dispatcher lets through, or refuses with the wrong code, refused
here first with A2A's own error (found by the A2A TCK: docs/protocols/a2a.md).

- An unknown enum value. The dispatcher parses params with protobuf's
  ``ignore_unknown_fields`` (for forward compatibility), which also turns an enum
  value it does not know into 0, with no way to opt out: ``ListTasks`` with
  ``"status": "running"`` would list every task, as if no status were given. A2A
  1.0 §3.1.4 lists an invalid status among a ListTasks request's validation errors.
  (A message's ``role`` becomes 0, ``ROLE_UNSPECIFIED``, which the handler refuses:
  :mod:`._handler`.)
- Invalid params on the 0.3 binding. The SDK's 0.3 adapter validates the whole
  request with one pydantic model and answers any failure with -32600 (invalid
  request); JSON-RPC 2.0 and A2A 0.3 §8.1 give -32602 (invalid params) when the
  envelope is sound and the params are not.
"""

from __future__ import annotations

from typing import Any

# The dispatcher's module first: importing the adapter's own first is a circle.
import a2a.server.routes.jsonrpc_dispatcher  # noqa: F401  isort: skip
from a2a.compat.v0_3.jsonrpc_adapter import JSONRPC03Adapter
from a2a.types.a2a_pb2 import TaskState
from a2a.utils.errors import A2AError, InvalidParamsError
from pydantic import ValidationError

__all__ = ["refusal"]

_STATE_NAMES = frozenset(TaskState.keys())
_STATE_NUMBERS = frozenset(TaskState.values())


def _is_state(value: Any) -> bool:
    if type(value) is str:
        return value in _STATE_NAMES
    return type(value) is int and value in _STATE_NUMBERS


def _where(error: Any) -> str:
    return ".".join(str(part) for part in error["loc"][1:]) or "params"


def refusal(body: dict[str, Any]) -> A2AError | None:
    """The error a request whose JSON-RPC envelope is sound gets for its params, where
    the SDK's dispatcher would not give it; None: the dispatcher's answer stands."""
    method, params = body.get("method"), body.get("params")
    if (method == "ListTasks" and type(params) is dict and "status" in params
            and not _is_state(params["status"])):
        return InvalidParamsError(
            f"status {params['status']!r} is not a task state (one of "
            f"{', '.join(sorted(_STATE_NAMES))})", data={"field": "status"})
    model = JSONRPC03Adapter.METHOD_TO_MODEL.get(method) if type(method) is str else None
    if model is None:
        return None
    try:
        model.model_validate(body)
    except ValidationError as exc:
        problems = exc.errors(include_url=False, include_input=False)
        if "id" not in body:  # a notification: the dispatcher answers it all the same
            problems = [p for p in problems if p["loc"][:1] != ("id",)]
        if problems and all(p["loc"][:1] == ("params",) for p in problems):
            return InvalidParamsError(
                "invalid params: " + "; ".join(f"{_where(p)}: {p['msg']}"
                                               for p in problems[:5]),
                data={"fields": sorted({_where(p) for p in problems})})
    return None
