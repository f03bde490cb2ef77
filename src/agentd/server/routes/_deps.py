"""Helpers shared by the route modules."""

from __future__ import annotations

from fastapi import Request

from agentd.runtime import Runtime

__all__ = ["ERRORS", "runtime_of"]


def runtime_of(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


def _errors(*codes: int) -> dict[int | str, dict[str, object]]:
    from agentd.server.schemas import ErrorOut

    return {code: {"model": ErrorOut} for code in codes}


ERRORS = _errors
