"""A real agentd HTTP server on a free loopback port, in a background thread.

For tests of HTTP clients (the CLI, the Python client) over a real socket::

    with LiveServer(Settings(home=tmp_path, demo_agent=False)) as server:
        Client(server.url).list_agents()
"""

from __future__ import annotations

import contextlib
import os
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
        self._inode = os.fstat(self._socket.fileno()).st_ino
        if settings.port != self.port and settings.public_url is None:
            # The daemon's own URL (OAuth's redirects come back to it) is where it is.
            settings = self.settings = settings.model_copy(update={"port": self.port})
        app = self.app = create_app(settings, reload_from=reload_from)
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

    def state(self) -> str:
        """What became of the server, for a client that found nobody at its port (a
        test's failure says it): its thread, uvicorn's flags, whether its descriptor
        is still the socket it bound and listens, whether the kernel has a listener
        on the port, and whether the server's thread and the caller share a network
        namespace."""
        said = [f"thread alive: {self._thread.is_alive()}",
                f"started: {self._server.started}",
                f"should_exit: {self._server.should_exit}"]
        fd = self._socket.fileno()
        if fd < 0:
            said.append("its socket object is closed or detached")
        else:
            try:
                same = os.fstat(fd).st_ino == self._inode
                target = os.readlink(f"/proc/self/fd/{fd}")
            except OSError as exc:
                said.append(f"descriptor {fd}: {exc.strerror} (closed under it)")
            else:
                said.append(f"descriptor {fd}: {target}"
                            + ("" if same else " (NOT the socket it bound)"))
                if same:
                    listening = self._socket.getsockopt(socket.SOL_SOCKET,
                                                        socket.SO_ACCEPTCONN)
                    said.append(f"listening: {bool(listening)}")
        said.append(f"a listener on port {self.port} in this thread's network: "
                    f"{_kernel_listens(self.port)}")
        tid = self._thread.native_id
        with contextlib.suppress(OSError):
            mine = os.readlink("/proc/thread-self/ns/net")
            theirs = os.readlink(f"/proc/self/task/{tid}/ns/net")
            said.append("network namespace: " + ("the same as the server thread's"
                        if mine == theirs else f"{mine}, the server thread's {theirs}"))
        return "; ".join(said)

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._server.request_exit()
        self._thread.join(timeout=60)
        self._socket.close()


def _kernel_listens(port: int) -> bool | None:
    """Whether the calling thread's network namespace has a TCP socket listening at
    ``port`` (IPv4, any address: ``/proc/thread-self/net/tcp``); None if it cannot be
    read."""
    try:
        with open("/proc/thread-self/net/tcp") as table:
            rows = table.read().splitlines()[1:]
    except OSError:
        return None
    for row in rows:
        fields = row.split()
        local, state = fields[1], fields[3]
        if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:
            return True
    return False
