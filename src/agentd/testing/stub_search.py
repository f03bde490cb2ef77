"""A stub of three web search APIs, SearXNG, Brave Search and Tavily, on one loopback
port in a process of its own, with calls recorded and faults injected.

Point ``[web_search.providers.NAME] base_url`` at :attr:`StubSearch.searxng_url`,
:attr:`StubSearch.brave_url` or :attr:`StubSearch.tavily_url`::

    with StubSearch(key="k") as stub:
        stub.set_results([{"title": "T", "url": "https://a.example/", "snippet": "S"}])
        stub.fail("brave", 429, retry_after=7)      # the next Brave search
        stub.fail("tavily", "malformed")            # a 200 that is not JSON
        ...
        stub.calls("searxng")                       # what each API was asked

Each speaks its API's wire format (the shapes :mod:`agentd.tools._search_wire` cites):
SearXNG ``GET /searxng/search?q=...&format=json`` (an HTML page without
``format=json``, as an instance answers), Brave ``GET /res/v1/web/search`` with
``X-Subscription-Token`` (another key: its 422 ``SUBSCRIPTION_TOKEN_INVALID``), Tavily
``POST /tavily/search`` with ``Authorization: Bearer`` (another key: its 401). Each
answers in its own shape and errors in its own error shape.

Faults, queued per API and used one per call: an HTTP status (429 with
``retry_after`` sent as ``Retry-After``, 500, 503, 401...), ``"malformed"`` (a 200
that is not JSON), ``"shape"`` (JSON that is not the API's), ``"huge"`` (a 200 of
about 3 MB), ``"redirect"`` (a 302 to the cloud metadata address) and ``"slow"`` (answered
after ``delay_s``, then as usual).

The server runs in a process of its own because the daemon refuses every port it
listens on itself (:func:`agentd.sandbox.egress.check`); the test process steers it
over the same port (``/_stub/...``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import threading
from collections import deque
from types import TracebackType
from typing import Any
from urllib.parse import urlparse, urlsplit

import httpx
import orjson

__all__ = ["StubSearch"]

APIS = ("searxng", "brave", "tavily")

DEFAULT_RESULTS: list[dict[str, str]] = [
    {"title": "Python (programming language)", "url": "https://en.wikipedia.org/wiki/Python",
     "snippet": "Python is a high-level, general-purpose programming language."},
    {"title": "Welcome to Python.org", "url": "https://www.python.org/",
     "snippet": "The official home of the Python Programming Language."},
    {"title": "Python Tutorial", "url": "https://docs.python.org/3/tutorial/",
     "snippet": "This tutorial introduces the reader informally to Python."},
]


class StubSearch:
    """The stub APIs in a subprocess on a free 127.0.0.1 port.

    Args:
        key: The key Brave and Tavily accept (and SearXNG, when ``searxng_key``).
        searxng_key: Whether the SearXNG API wants ``Authorization: Bearer <key>``
            (an instance behind a reverse proxy); by default it wants none.
    """

    def __init__(self, *, key: str = "stub-search-key", searxng_key: bool = False) -> None:
        self.key = key
        self._searxng_key = searxng_key
        self._proc: subprocess.Popen[bytes] | None = None
        self._port = 0

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    @property
    def searxng_url(self) -> str:
        return f"{self.url}/searxng"

    @property
    def brave_url(self) -> str:
        return self.url

    @property
    def tavily_url(self) -> str:
        return f"{self.url}/tavily"

    # -- steering -------------------------------------------------------------------------

    def _control(self, path: str, body: Any = None) -> Any:
        with httpx.Client(trust_env=False, timeout=30) as client:
            if body is None:
                response = client.get(f"{self.url}/_stub/{path}")
            else:
                response = client.post(f"{self.url}/_stub/{path}", content=orjson.dumps(body))
            response.raise_for_status()
            return response.json()

    def set_results(self, results: list[dict[str, str]]) -> None:
        """What every API finds from now on: ``{"title", "url", "snippet"}`` each."""
        self._control("results", results)

    def fail(self, api: str, kind: int | str, *, retry_after: float | None = None,
             delay_s: float = 0.0, times: int = 1) -> None:
        """Queue a fault (``times`` of them) for the next searches of ``api``."""
        if api not in APIS:
            raise ValueError(f"api is one of {', '.join(APIS)}")
        self._control("fail", {"api": api, "kind": kind, "retry_after": retry_after,
                               "delay_s": delay_s, "times": times})

    def calls(self, api: str | None = None) -> list[dict[str, Any]]:
        """The searches the stub saw (each: ``api``, ``method``, ``params``, ``json``,
        ``headers`` and the ``status`` it answered), oldest first."""
        found: list[dict[str, Any]] = self._control("calls")
        return [c for c in found if api is None or c["api"] == api]

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        if self._proc is not None:
            raise RuntimeError("StubSearch already started")
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        argv = [sys.executable, "-m", "agentd.testing.stub_search", "--key", self.key]
        if self._searxng_key:
            argv.append("--searxng-key")
        self._proc = subprocess.Popen(argv, stdout=subprocess.PIPE, env=env)
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline()
        if not line.strip().isdigit():
            self.close()
            raise RuntimeError("the stub search server failed to start")
        self._port = int(line)

    def close(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait()
            if self._proc.stdout is not None:
                self._proc.stdout.close()
        self._proc = None

    def __enter__(self) -> StubSearch:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


# -- the server (in its own process) -------------------------------------------------------


class _Server:
    def __init__(self, key: str, searxng_key: bool) -> None:
        self.key, self.searxng_key = key, searxng_key
        self.results: list[dict[str, str]] = list(DEFAULT_RESULTS)
        self.faults: dict[str, deque[dict[str, Any]]] = {api: deque() for api in APIS}
        self.calls: list[dict[str, Any]] = []
        self.lock = threading.Lock()

    def app(self) -> Any:
        from starlette.applications import Starlette
        from starlette.routing import Route

        return Starlette(routes=[
            Route("/searxng/search", self.searxng, methods=["GET", "POST"]),
            Route("/res/v1/web/search", self.brave, methods=["GET"]),
            Route("/tavily/search", self.tavily, methods=["POST"]),
            Route("/_stub/{what}", self.control, methods=["GET", "POST"]),
        ])

    async def control(self, request: Any) -> Any:
        from starlette.responses import JSONResponse

        what = request.path_params["what"]
        with self.lock:
            if what == "results":
                self.results = orjson.loads(await request.body())
            elif what == "fail":
                fault = orjson.loads(await request.body())
                for _ in range(fault.pop("times")):
                    self.faults[fault["api"]].append(dict(fault))
            elif what == "calls":
                return JSONResponse(self.calls)
            else:
                return JSONResponse({"error": "unknown"}, status_code=404)
        return JSONResponse({"ok": True})

    def _record(self, api: str, request: Any, params: dict[str, str], body: Any) -> dict[str, Any]:
        headers = {k: v for k, v in request.headers.items()
                   if k in ("x-subscription-token", "authorization", "host", "accept")}
        call = {"api": api, "method": request.method, "params": params, "json": body,
                "headers": headers, "status": None}
        with self.lock:
            self.calls.append(call)
        return call

    def _fault(self, api: str) -> dict[str, Any] | None:
        with self.lock:
            return self.faults[api].popleft() if self.faults[api] else None

    async def _faulted(self, api: str, fault: dict[str, Any], call: dict[str, Any]) -> Any:
        from starlette.responses import JSONResponse, Response

        kind = fault["kind"]
        if kind == "slow":
            await asyncio.sleep(fault["delay_s"])
            return None
        call["status"] = 302 if kind == "redirect" else 200
        if kind == "malformed":
            return Response(b'{"results": [{"title": "cut', media_type="application/json")
        if kind == "shape":
            return JSONResponse({"results": "not a list", "web": {"results": 42}})
        if kind == "huge":
            big = [{"title": "x" * 1000, "url": "https://big.example/",
                    "content": "y" * 2000, "description": "y" * 2000}] * 1000
            return JSONResponse({"results": big, "web": {"results": big}})
        if kind == "redirect":
            return Response(status_code=302, headers={
                "Location": "http://169.254.169.254/latest/meta-data/"})
        call["status"] = int(kind)
        headers = {"Retry-After": f"{fault['retry_after']:g}"} \
            if fault.get("retry_after") is not None else {}
        return _error(api, int(kind), headers)

    async def searxng(self, request: Any) -> Any:
        from starlette.responses import HTMLResponse, JSONResponse, Response

        params = dict(request.query_params)
        if request.method == "POST":
            params.update({k: str(v) for k, v in (await request.form()).items()})
        call = self._record("searxng", request, params, None)
        if self.searxng_key and request.headers.get("authorization") != f"Bearer {self.key}":
            call["status"] = 401
            return Response("Unauthorized", status_code=401)
        fault = self._fault("searxng")
        if fault is not None and (answer := await self._faulted("searxng", fault, call)):
            return answer
        call["status"] = 200
        if params.get("format") != "json":
            return HTMLResponse("<!DOCTYPE html><html><body>results</body></html>")
        results = [{"url": r["url"], "title": r["title"], "content": r["snippet"],
                    "engine": "duckduckgo", "template": "default.html",
                    "parsed_url": list(urlparse(r["url"])),
                    "engines": ["duckduckgo", "brave"], "positions": [i + 1],
                    "score": 1.0 / (i + 1), "category": "general", "publishedDate": None}
                   for i, r in enumerate(self.results)]
        return JSONResponse({"query": params.get("q", ""), "number_of_results": 0,
                             "results": results, "answers": [], "corrections": [],
                             "infoboxes": [], "suggestions": [],
                             "unresponsive_engines": []})

    async def brave(self, request: Any) -> Any:
        from starlette.responses import JSONResponse

        params = dict(request.query_params)
        call = self._record("brave", request, params, None)
        if request.headers.get("x-subscription-token") != self.key:
            call["status"] = 422
            return _error("brave", 422, {})
        fault = self._fault("brave")
        if fault is not None and (answer := await self._faulted("brave", fault, call)):
            return answer
        call["status"] = 200
        count = min(int(params.get("count") or 20), 20)
        results = [{"type": "search_result", "subtype": "generic", "title": r["title"],
                    "url": r["url"], "description": r["snippet"], "is_source_local": False,
                    "is_source_both": False, "language": "en", "family_friendly": True,
                    "age": "2 days ago",
                    "meta_url": {"scheme": urlsplit(r["url"]).scheme,
                                 "netloc": urlsplit(r["url"]).netloc,
                                 "hostname": urlsplit(r["url"]).hostname or "",
                                 "path": urlsplit(r["url"]).path}}
                   for r in self.results[:count]]
        body: dict[str, Any] = {"type": "search", "query": {
            "original": params.get("q", ""), "more_results_available": False}}
        if results:
            body["web"] = {"type": "search", "results": results, "family_friendly": True}
        return JSONResponse(body)

    async def tavily(self, request: Any) -> Any:
        from starlette.responses import JSONResponse

        try:
            body = orjson.loads(await request.body())
        except orjson.JSONDecodeError:
            body = None
        call = self._record("tavily", request, {}, body)
        if request.headers.get("authorization") != f"Bearer {self.key}":
            call["status"] = 401
            return _error("tavily", 401, {})
        if not isinstance(body, dict) or not isinstance(body.get("query"), str):
            call["status"] = 400
            return JSONResponse({"detail": {"error": "Query is missing."}}, status_code=400)
        fault = self._fault("tavily")
        if fault is not None and (answer := await self._faulted("tavily", fault, call)):
            return answer
        call["status"] = 200
        count = int(body.get("max_results") or 5)
        results = [{"title": r["title"], "url": r["url"], "content": r["snippet"],
                    "score": 0.9 - i / 100, "raw_content": None}
                   for i, r in enumerate(self.results[:count])]
        return JSONResponse({"query": body["query"], "follow_up_questions": None,
                             "answer": None, "images": [], "results": results,
                             "response_time": 0.42, "request_id": "stub"})


_BRAVE_ERRORS = {422: ("SUBSCRIPTION_TOKEN_INVALID", "The provided subscription token "
                       "is invalid."),
                 429: ("RATE_LIMITED", "Request rate limit exceeded for plan."),
                 401: ("SUBSCRIPTION_TOKEN_INVALID", "The provided subscription token "
                       "is invalid.")}


def _error(api: str, status: int, headers: dict[str, str]) -> Any:
    from starlette.responses import JSONResponse, Response

    if api == "brave":
        code, detail = _BRAVE_ERRORS.get(status, ("INTERNAL_ERROR", "Internal error."))
        return JSONResponse({"type": "ErrorResponse", "error": {
            "id": "stub", "status": status, "code": code, "detail": detail,
            "meta": {"component": "api"}}, "time": 0}, status_code=status,
            headers=headers)
    if api == "tavily":
        text = {401: "Unauthorized: missing or invalid API key.",
                429: "Your request has been blocked due to excessive requests."}.get(
                    status, "Internal server error")
        return JSONResponse({"detail": {"error": text}}, status_code=status,
                            headers=headers)
    return Response("Too Many Requests" if status == 429 else "Internal Server Error",
                    status_code=status, headers=headers, media_type="text/plain")


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser()
    parser.add_argument("--key", required=True)
    parser.add_argument("--searxng-key", action="store_true")
    args = parser.parse_args()
    server = _Server(args.key, args.searxng_key)
    # IPPROTO_TCP: asyncio sets TCP_NODELAY only on a socket whose proto says TCP.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    print(sock.getsockname()[1], flush=True)
    config = uvicorn.Config(server.app(), log_config=None, access_log=False,
                            lifespan="off", loop="asyncio", http="h11", ws="none")
    uvicorn.Server(config).run(sockets=[sock])


if __name__ == "__main__":
    main()
