"""Serving the console: ``/ui`` (the page) and ``/ui/assets/...`` (its files)."""

from __future__ import annotations

import hashlib
import mimetypes
from dataclasses import dataclass
from pathlib import Path

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response

__all__ = ["ASSETS", "PREFIX", "PUBLIC_PATHS", "SECURITY_HEADERS", "install"]

PREFIX = "/ui"
#: The console's files, inside the package.
ASSETS = Path(__file__).parent / "assets"
#: What the bearer check lets through without a token: the page and its files only.
PUBLIC_PATHS = ("/", PREFIX, PREFIX + "/", PREFIX + "/assets/*")

#: On every console response. The policy allows the daemon's own scripts, styles,
#: images and connections (fetch and SSE to the API) and nothing else: no inline
#: script, no eval, no frames, no plugins, forms only to itself.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
        "connect-src 'self'; font-src 'self'; manifest-src 'self'; base-uri 'none'; "
        "form-action 'self'; frame-ancestors 'none'"),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=()",
}

_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
          ".html": "text/html; charset=utf-8", ".svg": "image/svg+xml",
          ".json": "application/json", ".png": "image/png", ".ico": "image/x-icon",
          ".webmanifest": "application/manifest+json"}


@dataclass(frozen=True, slots=True)
class _Asset:
    body: bytes
    media_type: str
    etag: str


def _load(root: Path) -> dict[str, _Asset]:
    """Every file under ``root`` by its path relative to it, read once at start-up: a
    request never touches the disk, and nothing outside ``root`` can be named."""
    found: dict[str, _Asset] = {}
    for path in sorted(root.rglob("*")):
        if not path.is_file() or path.name.startswith("."):
            continue
        body = path.read_bytes()
        media = _TYPES.get(path.suffix) or mimetypes.guess_type(path.name)[0] or (
            "application/octet-stream")
        found[path.relative_to(root).as_posix()] = _Asset(
            body, media, f'"{hashlib.sha256(body).hexdigest()[:20]}"')
    return found


def _answer(request: Request, asset: _Asset) -> Response:
    headers = {**SECURITY_HEADERS, "ETag": asset.etag,
               # Revalidated each time (a 304 is cheap): an upgrade never serves stale
               # scripts next to a new API.
               "Cache-Control": "no-cache"}
    if request.headers.get("if-none-match") == asset.etag:
        return Response(status_code=304, headers=headers)
    return Response(asset.body, media_type=asset.media_type, headers=headers)


def install(app: FastAPI, root: Path = ASSETS) -> None:
    """Route ``/ui`` and ``/ui/assets/{path}`` on ``app``; the files are read now."""
    assets = _load(root)
    page = assets["index.html"]

    async def index(request: Request) -> Response:
        return _answer(request, page)

    async def slash(request: Request) -> Response:
        return RedirectResponse(PREFIX + "/", status_code=308)

    async def asset(request: Request) -> Response:
        found = assets.get(request.path_params["path"])
        if found is None:
            return Response("not found", status_code=404, media_type="text/plain",
                            headers=SECURITY_HEADERS)
        return _answer(request, found)

    async def home(request: Request) -> Response:
        # The daemon's root points to the console: a browser is sent there, anything
        # else told where things are (it was a 401 that named nothing).
        if "text/html" in request.headers.get("accept", ""):
            return RedirectResponse(PREFIX + "/", status_code=307)
        return JSONResponse({"console": PREFIX + "/", "api": "/v1",
                             "openapi": "/openapi.json", "health": "/health"},
                            headers=SECURITY_HEADERS)

    app.add_route("/", home, methods=["GET", "HEAD"], include_in_schema=False)
    app.add_route(PREFIX, slash, methods=["GET", "HEAD"], include_in_schema=False)
    app.add_route(PREFIX + "/", index, methods=["GET", "HEAD"], include_in_schema=False)
    app.add_route(PREFIX + "/assets/{path:path}", asset, methods=["GET", "HEAD"],
                  include_in_schema=False)
