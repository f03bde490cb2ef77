"""The OpenAI-compatible door (see :mod:`.routes` and docs/protocols/openai.md)."""

from __future__ import annotations

from fastapi import FastAPI

from agentd.doors.http import add_error_shape
from agentd.protocols.openai._errors import openai_error
from agentd.protocols.openai.routes import PREFIXES, UNSERVED, router

__all__ = ["install"]


def install(app: FastAPI) -> None:
    """Serve the door's routes on ``app``, its errors in OpenAI's shape (and those of
    the paths of OpenAI's API it does not serve: a 404 an OpenAI SDK understands)."""
    app.include_router(router)
    for prefix in (*PREFIXES, *UNSERVED):
        add_error_shape(app, prefix, openai_error)
    # Its routes read their bodies with loads_strict: the request layer need not too.
    app.state.strict_json_routes = (*getattr(app.state, "strict_json_routes", ()),
                                    "/v1/chat/completions", "/v1/responses")
