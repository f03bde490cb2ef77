"""The suite's two daemon launchers, for every test that needs a daemon on a socket.

- :class:`Daemon`: a real ``agentd serve`` process (``python -m agentd serve``) with its
  own log file: for tests that kill, signal or restart it, or that test the process
  itself (its start-up, its flags, its files). The ``spawn`` fixture starts them and
  kills every one at the end.
- :class:`ThreadDaemon`: the same app, uvicorn and socket served from a thread of the
  test process (:class:`agentd.testing.LiveServer`), with a log file of its own: for
  tests that only talk to the daemon over HTTP. No process start: no imports, no
  sandbox probe, no migrations in a new interpreter.

Both have ``url``, ``port``, ``home``, ``log()``, ``client()`` and ``cleanup()``; a test
that does not care which it gets takes either. Helpers for their API (``create_agent``,
``send``, ``read_events``, ``wait_for_run``...) are here too.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import queue
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from tests.conftest import WORKER_UID_BASE, free_port, listening, wait_until

from agentd.config import SandboxConfig, Settings
from agentd.security.tokens import read_token
from agentd.testing.live import LiveServer


def clean_env() -> dict[str, str]:
    """This process's environment without agentd's own variables and the OpenAI key:
    a child daemon or bench takes its settings from what the test gives it."""
    return {k: v for k, v in os.environ.items()
            if not k.startswith("AGENTD_") and k != "OPENAI_API_KEY"}


def run_bench(script: Path, args: list[str], cwd: Path, *, timeout: float = 300,
              env: dict[str, str] | None = None
              ) -> tuple[dict[str, Any], subprocess.CompletedProcess[str]]:
    """Run a bench script (in a :func:`clean_env`, or ``env``); its last line of
    output as JSON (there must be one) and the finished process."""
    result = subprocess.run(
        [sys.executable, str(script), *args], env=clean_env() if env is None else env,
        cwd=cwd, stdin=subprocess.DEVNULL, capture_output=True, text=True,
        timeout=timeout, check=False)
    lines = result.stdout.strip().splitlines()
    assert lines, f"no JSON line; stderr:\n{result.stderr[-4000:]}"
    return orjson.loads(lines[-1]), result

def run_refused(script: Path, args: list[str], cwd: Path, *,
                env: dict[str, str] | None = None) -> str:
    """Run a bench script whose arguments must be refused: exit 2 and nothing on
    stdout (no figures, no daemon started). Its stderr, the one line that says why."""
    result = subprocess.run(
        [sys.executable, str(script), *args], env=clean_env() if env is None else env,
        cwd=cwd, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60,
        check=False)
    assert result.returncode == 2 and result.stdout == "", (result.returncode,
                                                            result.stdout[-2000:])
    return result.stderr


#: This tree's sources: a daemon process runs this agentd, not whichever is installed.
SRC = Path(__file__).resolve().parents[1] / "src"

TOOL_MESSAGE = '/tool calculator {"expression": "6*7"}'
WAIT_S = 60.0


def node_of(home: Path, env: dict[str, str]) -> str:
    """The node id a daemon of ``home`` reports in /health (config.Settings' default):
    how a test tells its own daemon from another that took the port it meant to use."""
    if "AGENTD_NODE_ID" in env:
        return env["AGENTD_NODE_ID"]
    return Settings(home=home, node_id="", _env_file=None).node_id  # (config's default)


class ForkedProcess:
    """A process the fork server started, as much of :class:`subprocess.Popen` as the
    tests use (``pid``, ``returncode``, ``poll``, ``wait``, ``send_signal``, ``kill``,
    ``terminate``). Its exit code comes from the fork server, its parent."""

    def __init__(self, server: ForkServer, pid: int, generation: int, args: list[str]
                 ) -> None:
        self.server = server
        self.pid = pid
        #: Which process of this pid it is: pids are reused, and an earlier process's
        #: exit must not be taken for this one's (seen in CI: a daemon "exited with 0"
        #: before it had written a line).
        self.generation = generation
        self.args = args

    @property
    def returncode(self) -> int | None:
        return self.server.exits.get((self.pid, self.generation))

    def poll(self) -> int | None:
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        with self.server.changed:
            key = (self.pid, self.generation)
            if not self.server.changed.wait_for(lambda: key in self.server.exits,
                                                timeout=timeout):
                raise subprocess.TimeoutExpired(self.args, timeout or 0)
            return self.server.exits[key]

    def send_signal(self, sig: int) -> None:
        if self.returncode is None:  # (an ended one's pid may be another's by now)
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)


class ForkServer:
    """This test process's fork server (``tests/_forkserver.py``): ``agentd`` commands
    forked from an interpreter that has imported a daemon's modules already, about
    1.2 s of CPU less per start than ``python -m agentd``. Started on first use, again
    if it died; one per xdist worker."""

    _current: ForkServer | None = None
    _lock = threading.Lock()

    def __init__(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        env = clean_env()
        env.update(PYTHONUNBUFFERED="1", PYTHONPATH=os.pathsep.join(
            [str(SRC), *filter(None, [env.get("PYTHONPATH")])]))
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).with_name("_forkserver.py"))],
            env=env, stdin=theirs, cwd="/")
        theirs.close()
        self.control = ours
        #: (pid, generation) -> exit code; the generation counts the processes the
        #: server reported under that pid (its exit of a pid is always reported
        #: before the pid is forked again: one thread reaps and forks).
        self.exits: dict[tuple[int, int], int] = {}
        self._generations: dict[int, int] = {}
        self.changed = threading.Condition()
        self._pids: queue.Queue[tuple[int, int] | None] = queue.Queue()
        self._requests = threading.Lock()
        threading.Thread(target=self._read, name="forkserver-reader", daemon=True).start()

    @classmethod
    def get(cls) -> ForkServer:
        with cls._lock:
            server = cls._current
            if server is None or server.proc.poll() is not None:
                server = cls._current = ForkServer()
            return server

    def _read(self) -> None:
        while True:
            try:
                message = self.control.recv(1 << 16)
            except OSError:
                message = b""
            if not message:
                self._pids.put(None)
                return
            reply = pickle.loads(message)
            if reply[0] == "pid":
                with self.changed:
                    generation = self._generations.get(reply[1], 0) + 1
                    self._generations[reply[1]] = generation
                self._pids.put((reply[1], generation))
            else:
                with self.changed:
                    generation = self._generations.get(reply[1], 0)
                    self.exits[(reply[1], generation)] = reply[2]
                    self.changed.notify_all()

    def start(self, argv: list[str], *, env: dict[str, str], cwd: Path, log_path: Path
              ) -> ForkedProcess:
        """``python -m agentd *argv`` forked, its output in ``log_path``."""
        with self._requests:
            self.control.send(pickle.dumps((argv, env, str(cwd), str(log_path))))
            forked = self._pids.get(timeout=WAIT_S)
        if forked is None:
            raise AssertionError(f"the fork server ended (exit {self.proc.poll()})")
        return ForkedProcess(self, *forked, ["agentd", *argv])


class Daemon:
    """One `agentd serve` process with its own log file (forked from the
    :class:`ForkServer`; ``fresh=True``: a new interpreter, ``python -m agentd``)."""

    def __init__(self, home: Path, log_path: Path, *, env: dict[str, str],
                 args: tuple[str, ...], fresh: bool = False) -> None:
        self.home = home
        self.fresh = fresh
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.env = clean_env()
        self.env.update(AGENTD_HOME=str(home), PYTHONUNBUFFERED="1")
        self.env["PYTHONPATH"] = os.pathsep.join(
            [str(SRC), *filter(None, [self.env.get("PYTHONPATH")])])
        self.env.update(env)
        self.args = args
        self.proc: subprocess.Popen[bytes] | ForkedProcess | None = None

    def start(self) -> Daemon:
        # free_port() closes the port it found before the daemon binds it: on a busy
        # machine another test's daemon (or a connection's ephemeral port) can take it in
        # between. A first start then moves to another port; a restart keeps its own
        # (the test means that one).
        attempts = 1 if self.proc is not None else 3
        for attempt in range(attempts):
            self._spawn()
            may_retry = attempt + 1 < attempts
            state = wait_until(lambda: self._healthy(may_retry=may_retry),  # noqa: B023
                               what=lambda: f"agentd answering /health:\n{self.log()}",
                               interval=0.05)
            if state == "up":
                return self
            self.port = free_port()
            self.url = f"http://127.0.0.1:{self.port}"
        raise AssertionError("unreachable")  # the last attempt fails inside _healthy

    def _spawn(self) -> None:
        if not self.fresh:
            # Not the repo: a stray .env there must not configure the daemon.
            self.proc = ForkServer.get().start(
                ["serve", "--port", str(self.port), *self.args], env=self.env,
                cwd=self.home.parent, log_path=self.log_path)
            return
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "agentd", "serve", "--port", str(self.port),
                 *self.args],
                env=self.env,
                # Not the repo: a stray .env there must not configure the daemon.
                cwd=self.home.parent,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    @property
    def node(self) -> str:
        return node_of(self.home, self.env)

    def _healthy(self, *, may_retry: bool = False) -> str:
        """"up" once this daemon answers; "port taken" (with ``may_retry``) when its
        port was taken before it could bind it; "" until then."""
        assert self.proc is not None
        if self.proc.poll() is not None:
            if may_retry and "address already in use" in self.log().lower():
                return "port taken"
            pytest.fail(f"agentd exited with {self.proc.returncode}:\n{self.log()}")
        if not listening(self.port):  # (cheap: no httpx request until it listens)
            return ""
        try:
            answer = httpx.get(f"{self.url}/health", timeout=2)
        except httpx.TransportError:
            return ""
        # Another daemon on the port (see start) is not this one: wait for this one to
        # answer or to fail to bind.
        ours = answer.status_code == 200 and answer.json().get("node") == self.node
        return "up" if ours else ""

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def client(self, token: str | None = None) -> httpx.Client:
        """A client with ``token``, else the daemon's bootstrap token (if it made one)."""
        token = token or read_token(self.home)
        return httpx.Client(base_url=self.url, headers=self.auth(token), timeout=WAIT_S)

    def auth(self, token: str | None = None) -> dict[str, str]:
        token = token or read_token(self.home)
        return {"Authorization": f"Bearer {token}"} if token else {}

    def signal_and_wait(self, sig: int) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=WAIT_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"agentd did not exit after signal {sig}:\n{self.log()}")

    def cleanup(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=WAIT_S)


Spawn = Callable[..., Daemon]


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


@pytest.fixture
def spawn(tmp_path: Path, home: Path) -> Iterator[Spawn]:
    """Start daemons; every one of them is killed at the end, whatever happened."""
    daemons: list[Daemon] = []

    def factory(*args: str, env: dict[str, str] | None = None, fresh: bool = False
                ) -> Daemon:
        daemon = Daemon(home, tmp_path / f"agentd-{len(daemons)}.log", env=env or {},
                        args=args, fresh=fresh)
        daemons.append(daemon)
        return daemon.start()

    try:
        yield factory
    finally:
        for daemon in daemons:
            daemon.cleanup()


# -- helpers ------------------------------------------------------------------------


def create_agent(client: httpx.Client, name: str, **fields: Any) -> dict[str, Any]:
    response = client.post("/v1/agents", json={"name": name, **fields})
    assert response.status_code == 201, response.text
    agent: dict[str, Any] = response.json()
    return agent


def send(client: httpx.Client, agent: str, key: str, content: str, **body: Any
         ) -> httpx.Response:
    return client.post(f"/v1/agents/{agent}/sessions/{quote(key)}/messages",
                       json={"content": content, **body})


def quote(key: str) -> str:
    from urllib.parse import quote as _quote

    return _quote(key, safe="")


def read_events(client: httpx.Client, agent: str, key: str, after: int = 0
                ) -> list[dict[str, Any]]:
    response = client.get(f"/v1/agents/{agent}/sessions/{quote(key)}/events",
                          params={"after": after, "limit": 10_000})
    assert response.status_code == 200, response.text
    events: list[dict[str, Any]] = response.json()["events"]
    return events


def wait_for_run(client: httpx.Client, run_id: str, statuses: set[str] | frozenset[str],
                 ) -> dict[str, Any]:
    last: dict[str, Any] = {}

    def reached() -> dict[str, Any] | None:
        response = client.get(f"/v1/runs/{run_id}")
        assert response.status_code == 200, response.text
        last.update(response.json())
        return dict(last) if last["status"] in statuses else None

    return wait_until(reached, what=lambda: f"run {run_id} ({last.get('status')}) reaching "
                                            f"{sorted(statuses)}")


def kinds_of(events: list[dict[str, Any]]) -> list[str]:
    return [e["kind"] for e in events]


def frames_of(events: Any) -> list[dict[str, Any]]:
    return [{"event": sse.event, "id": sse.id, "data": orjson.loads(sse.data)}
            for sse in events]


def assert_dense(events: list[dict[str, Any]], start: int = 1) -> None:
    seqs = [e["seq"] for e in events]
    assert seqs == list(range(start, start + len(seqs))), seqs


class _SaysWhyRefused(httpx.HTTPTransport):
    """A refused connection to an in-thread daemon says what became of its server
    (:meth:`LiveServer.state`) and the end of its log: the refusal was once seen in
    CI, at a test's first request, with nothing more to go on."""

    def __init__(self, server: LiveServer, log: Callable[[], str]) -> None:
        super().__init__()
        self._server = server
        self._log = log

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        try:
            return super().handle_request(request)
        except httpx.ConnectError as exc:
            raise httpx.ConnectError(
                f"{exc} ({request.method} {request.url}); the in-thread daemon: "
                f"{self._server.state()}\n-- its log:\n{self._log()[-3000:]}",
                request=request) from exc


class ThreadDaemon:
    """A daemon served from a thread of this process (:class:`LiveServer`): what the
    tests use of :class:`Daemon` (url, port, home, log, client, cleanup), without a
    process. Its log lines go to ``log_path`` while it runs."""

    proc = None

    def __init__(self, home: Path, log_path: Path, *, token: str, **settings: Any) -> None:
        self.home = home
        self.log_path = log_path
        self.token = token
        # No grace at the end: a run a test left under way (a slow scripted reply) is
        # stopped, not waited for (nothing starts this daemon again). Sandbox uids of
        # this xdist worker's own range.
        settings.setdefault("shutdown_grace_s", 0)
        settings.setdefault("sandbox", SandboxConfig(uid_base=WORKER_UID_BASE,
                                                     uid_count=20_000))
        self.settings = Settings(home=home, token=token, **settings)
        self._server: LiveServer | None = None
        self._handler: logging.Handler | None = None

    def start(self) -> ThreadDaemon:
        self._handler = logging.FileHandler(self.log_path)
        self._handler.setFormatter(logging.Formatter(
            "%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logging.getLogger().addHandler(self._handler)
        # LiveServer binds its socket before it starts: no other test can take the port.
        self._server = LiveServer(self.settings).__enter__()
        return self

    @property
    def url(self) -> str:
        assert self._server is not None
        return self._server.url

    @property
    def port(self) -> int:
        assert self._server is not None
        return self._server.port

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def client(self, token: str | None = None) -> httpx.Client:
        assert self._server is not None
        return httpx.Client(base_url=self.url, timeout=WAIT_S,
                            headers={"Authorization": f"Bearer {token or self.token}"},
                            transport=_SaysWhyRefused(self._server, self.log))

    def cleanup(self) -> None:
        if self._server is not None:
            self._server.__exit__(None, None, None)
            self._server = None
        if self._handler is not None:
            logging.getLogger().removeHandler(self._handler)
            self._handler.close()
            self._handler = None
