"""An adapter's termo-agent hooks: which it has of its own, and its extra routes
(aiohttp handlers) served from Starlette."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from starlette.datastructures import Headers, QueryParams
from starlette.responses import Response

__all__ = ["ExtraRoute", "HandlerRequest", "compile_path", "own_hook", "to_response"]

#: Where the default (do-nothing) hooks live: a hook defined there is not the
#: adapter's own, so agentd's equivalent answers instead.
_BASES = {("agentd.adapters._protocol", "AdapterBase"),
          ("termo_agent.adapter", "AgentAdapter")}


def own_hook(adapter: Any, name: str) -> Any:
    """The adapter's method ``name`` if it defines one itself (not inherited from
    agentd's ``AdapterBase`` or termo-agent's ``AgentAdapter`` defaults), else None."""
    method = getattr(adapter, name, None)
    if method is None or not callable(method):
        return None
    func = getattr(method, "__func__", method)
    owner = (getattr(func, "__module__", ""),
             getattr(func, "__qualname__", "").split(".", 1)[0])
    return None if owner in _BASES else method


_PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(?::((?:[^{}]|\{[^{}]*\})*))?\}")


def compile_path(path: str) -> re.Pattern[str]:
    """An aiohttp route path (``/api/x/{name}``, ``/files/{path:.*}``) as a regex over
    the request's (decoded) path, with its parameters as named groups."""
    if not path.startswith("/"):
        raise ValueError(f"an extra route's path must start with '/': {path!r}")
    out, last = [], 0
    for match in _PARAM.finditer(path):
        out.append(re.escape(path[last:match.start()]))
        out.append(f"(?P<{match.group(1)}>{match.group(2) or '[^{}/]+'})")
        last = match.end()
    out.append(re.escape(path[last:]))
    return re.compile("".join(out))


@dataclass(frozen=True, slots=True)
class ExtraRoute:
    """One of the adapter's ``extra_routes()``: ``(method, path, handler)``."""

    method: str
    pattern: re.Pattern[str]
    handler: Any

    def match(self, method: str, path: str) -> dict[str, str] | None:
        if self.method not in ("*", method) and not (
                self.method == "GET" and method == "HEAD"):
            return None
        found = self.pattern.fullmatch(path)
        return None if found is None else found.groupdict()


class HandlerRequest:
    """What an aiohttp handler reads of its request, over a Starlette request:
    ``method``, ``path``, ``headers``, ``query``, ``match_info``, ``read()``,
    ``text()``, ``json()``. ``starlette`` is the request itself."""

    def __init__(self, *, method: str, path: str, headers: Headers, query: QueryParams,
                 match_info: Mapping[str, str], body: bytes, starlette: Any) -> None:
        self.method = method
        self.path = path
        self.headers = headers
        self.query = query
        self.match_info = dict(match_info)
        self._body = body
        self.starlette = starlette

    @property
    def can_read_body(self) -> bool:
        return bool(self._body)

    body_exists = can_read_body

    async def read(self) -> bytes:
        return self._body

    async def text(self) -> str:
        return self._body.decode("utf-8", "replace")

    async def json(self, *, loads: Any = json.loads) -> Any:
        return loads(self._body.decode("utf-8", "replace"))


def to_response(result: Any) -> Response:
    """A handler's answer as a Starlette response: a Starlette response as it is; an
    aiohttp ``web.Response`` (or a raised ``web.HTTPException``) from its status,
    headers and body; a dict or list as JSON; text as text."""
    if isinstance(result, Response):
        return result
    status = getattr(result, "status", None)
    if isinstance(status, int):
        body = getattr(result, "body", None)
        if not isinstance(body, bytes | bytearray):
            text = getattr(result, "text", None)
            body = text.encode() if isinstance(text, str) else b""
        raw = getattr(result, "headers", None) or {}
        headers = {str(k): str(v) for k, v in raw.items()
                   if str(k).lower() not in ("content-length", "transfer-encoding")}
        return Response(bytes(body), status_code=status, headers=headers)
    if isinstance(result, dict | list):
        return Response(json.dumps(result).encode(), media_type="application/json")
    if isinstance(result, str):
        return Response(result, media_type="text/plain")
    if result is None:
        return Response(status_code=204)
    raise TypeError(f"an extra route answered {type(result).__name__}: return an "
                    "aiohttp or Starlette response, a dict, a list or text")
