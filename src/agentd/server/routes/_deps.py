"""Helpers shared by the route modules."""

from __future__ import annotations

from fastapi import Request

from agentd.doors.access import runtime_of
from agentd.doors.http import person as _person

__all__ = ["ERRORS", "person", "runtime_of"]


def person(request: Request, what: str) -> str:
    """Who makes a request only a person may make (the name of its token); 401 when it
    carries no valid token, whatever ``auth`` says."""
    return _person(request.scope, what)


def _errors(*codes: int) -> dict[int | str, dict[str, object]]:
    from agentd.server.schemas import Error

    return {code: {"model": Error} for code in codes}


ERRORS = _errors
