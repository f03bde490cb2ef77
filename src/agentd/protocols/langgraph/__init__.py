"""The Agent Protocol door for ``langgraph-sdk`` (see :mod:`.routes`, :mod:`.store`
and docs/protocols/langgraph.md)."""

from __future__ import annotations

from fastapi import FastAPI

from agentd.doors.http import add_error_shape, add_fast_route
from agentd.protocols.langgraph import store
from agentd.protocols.langgraph._errors import langgraph_error
from agentd.protocols.langgraph.routes import PREFIX, RUN_PATH, router, serve_run

__all__ = ["PREFIX", "install"]


def install(app: FastAPI) -> None:
    """Serve the door's routes on ``app``, its errors in LangGraph's shape."""
    app.include_router(router)
    app.include_router(store.router)
    # Every turn is a run: served past FastAPI's routing, like the native message route.
    add_fast_route(app, "POST", RUN_PATH, serve_run)
    add_error_shape(app, PREFIX + "/", langgraph_error)
