"""Local HTTP servers standing for the web, each a process of its own (a port of the
test's own process is the daemon's to the egress check, when the daemon is served from
a thread): fixed routes (an image, a redirect) and a log of the paths asked for."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["Host", "media_daemon", "private_host", "serving"]

_SERVER = r'''
import base64, json, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
routes = json.loads(sys.argv[1])
log = open(sys.argv[2], "a", buffering=1)

class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        log.write(self.path + "\n")
        status, headers, body = routes.get(self.path, [404, {}, ""])
        body = base64.b64decode(body)
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(httpd.server_address[1], flush=True)
httpd.serve_forever()
'''


@dataclass
class Host:
    port: int
    log: Path

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def hits(self) -> list[str]:
        return self.log.read_text().splitlines() if self.log.exists() else []


@contextmanager
def serving(routes: dict[str, tuple[int, dict[str, str], bytes]], log: Path
            ) -> Iterator[Host]:
    """A server answering ``routes`` (path: status, headers, body), logging to ``log``."""
    encoded = {path: [status, headers, base64.b64encode(body).decode()]
               for path, (status, headers, body) in routes.items()}
    proc = subprocess.Popen([sys.executable, "-c", _SERVER, json.dumps(encoded), str(log)],
                            stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        yield Host(port=int(proc.stdout.readline()), log=log)
    finally:
        proc.kill()
        proc.wait()


def media_daemon(root: Path, web: Host, token: str, *agents: tuple[str, str]) -> Any:
    """A daemon (served from a thread) whose settings list ``web`` as a reachable
    endpoint (the "public" web of these tests), with ``agents`` (name, model) made."""
    from tests.daemons import WORKER_UID_BASE, ThreadDaemon, create_agent

    from agentd.config import SandboxConfig

    process = ThreadDaemon(root / "home", root / "agentd.log", token=token,
                           demo_agent=False, sandbox=SandboxConfig(
                               uid_base=WORKER_UID_BASE, uid_count=20_000,
                               private_endpoints=[f"127.0.0.1:{web.port}"])).start()
    with process.client() as api:
        for name, model in agents:
            create_agent(api, name, model=model)
    return process


@contextmanager
def private_host(log: Path) -> Iterator[Host]:
    """A server on the loopback that no setting lists (never to be reached): its
    ``/secret.png`` is what an SSRF would fetch."""
    from tests.media.images import png

    with serving({"/secret.png": (200, {"Content-Type": "image/png"}, png())}, log) as host:
        yield host
