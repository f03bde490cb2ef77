"""agentd in the place of termo-agent's ``AgentServer`` (see termo_agent/README.md).

``AgentdServer(adapter=..., host=..., port=..., token=...)._build_app()`` answers an
aiohttp application, as termo's does, so termo's own tests run unmodified: the
application starts a real agentd daemon (:class:`tests.daemons.ThreadDaemon`: the
real app on a real socket) whose termo door serves the test's adapter instance, and
forwards each request to it as it came, streaming the answer back. termo's
``token=None`` (no ``TERMO_TOKEN``: open) is agentd's ``auth = "none"``; a token is
the termo door's ``[termo] token``.
"""

from __future__ import annotations

import secrets
import shutil
import tempfile
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from tests.daemons import ThreadDaemon

from agentd.config import TermoConfig

#: The adapter the daemon serves: the test's own instance, named by
#: ``[termo] adapter = "tests.conformance.termo_bridge:ADAPTER"`` (agentd uses an
#: adapter instance as it is).
ADAPTER: Any = None
_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host",
        "content-encoding"}


class AgentdServer:
    """termo-agent's ``AgentServer`` signature; agentd behind it."""

    def __init__(self, adapter: Any, host: str = "127.0.0.1", port: int = 8080,
                 token: str | None = None, **_: Any) -> None:
        self.adapter = adapter
        self.token = token
        self.daemon: ThreadDaemon | None = None
        self.workdir: Path | None = None

    def _build_app(self) -> web.Application:
        app = web.Application()
        app.on_startup.append(self._start)
        app.on_cleanup.append(self._stop)
        app.router.add_route("*", "/{tail:.*}", self._forward)
        return app

    async def _start(self, app: web.Application) -> None:
        global ADAPTER
        ADAPTER = self.adapter
        self.workdir = Path(tempfile.mkdtemp(prefix="agentd-termo-"))
        extra: dict[str, Any] = {"auth": "none"} if self.token is None else {}
        self.daemon = ThreadDaemon(
            self.workdir / "home", self.workdir / "agentd.log",
            token=secrets.token_urlsafe(24), demo_agent=False,
            termo=TermoConfig(adapter="tests.conformance.termo_bridge:ADAPTER",
                              token=self.token), **extra).start()
        self.session = aiohttp.ClientSession(
            self.daemon.url, auto_decompress=False,
            timeout=aiohttp.ClientTimeout(total=120))

    async def _stop(self, app: web.Application) -> None:
        global ADAPTER
        await self.session.close()
        if self.daemon is not None:
            self.daemon.cleanup()
        ADAPTER = None
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP}
        async with self.session.request(request.method, request.rel_url,
                                        headers=headers, data=await request.read(),
                                        allow_redirects=False) as answer:
            response = web.StreamResponse(status=answer.status, reason=answer.reason)
            for key, value in answer.headers.items():
                if key.lower() not in _HOP:
                    response.headers.add(key, value)
            await response.prepare(request)
            async for chunk in answer.content.iter_any():
                await response.write(chunk)
            await response.write_eof()
            return response
