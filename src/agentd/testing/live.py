"""A real agentd HTTP server on a free loopback port, in a background thread.

For tests of HTTP clients (the CLI, the Python client) over a real socket::

    with LiveServer(Settings(home=tmp_path, demo_agent=False)) as server:
        Client(server.url).list_agents()
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from types import TracebackType

import uvicorn

from agentd.config import Settings

__all__ = ["LiveServer", "free_port"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class LiveServer:
    """``reload_from``: how a configuration reload reads the settings (default: as
    ``agentd serve`` with no options would); give the same settings again to have a
    reload find nothing changed."""

    def __init__(self, settings: Settings, *, startup_timeout_s: float = 15.0,
                 reload_from: Callable[[], Settings] | None = None) -> None:
        from agentd.server.app import create_app
        from agentd.server.daemon import GracefulServer

        self.settings = settings
        # The socket is bound here and handed to uvicorn: a port found free and bound
        # later could be taken in between by another server on a busy machine.
        # IPPROTO_TCP: asyncio sets TCP_NODELAY only on a socket whose proto says TCP.
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind(("127.0.0.1", 0))
        self.port: int = self._socket.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        if settings.port != self.port and settings.public_url is None:
            # The daemon's own URL (OAuth's redirects come back to it) is where it is.
            settings = self.settings = settings.model_copy(update={"port": self.port})
        app = create_app(settings, reload_from=reload_from)
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                                lifespan="on", access_log=False,
                                timeout_graceful_shutdown=int(settings.shutdown_grace_s) + 5)
        self._server = GracefulServer(config, app.state)
        self._thread = threading.Thread(target=self._server.run,
                                        kwargs={"sockets": [self._socket]},
                                        name="agentd-live-server", daemon=True)
        self._timeout = startup_timeout_s

    def __enter__(self) -> LiveServer:
        self._thread.start()
        deadline = time.monotonic() + self._timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self._socket.close()
                raise RuntimeError("agentd test server did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._server.request_exit()
        self._thread.join(timeout=60)
        self._socket.close()
