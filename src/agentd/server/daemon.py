"""Run the daemon in the foreground: settings, logging, pid file, uvicorn, signals.

SIGTERM or SIGINT stops taking new runs, lets running steps finish for up to
``shutdown_grace_s``, interrupts what is left (queued runs stay queued and start
again with the next daemon), closes every stream and exits 0. SIGHUP reloads the
configuration (:mod:`agentd.assembly.reload`: what changes live is applied, what needs
a restart is logged, a file that cannot be loaded changes nothing and is logged).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import gc
import ipaddress
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from functools import partial
from types import FrameType
from typing import IO, Any

import uvicorn
from pydantic import ValidationError

from agentd.config import ConfigFileError, Settings, load_settings, settings_problem
from agentd.errors import AgentdError, InvalidInput
from agentd.security.tokens import ensure_home, read_token, undumpable
from agentd.server.app import create_app
from agentd.store import tune_sqlite
from agentd.telemetry.follower import resolve as resolve_traces
from agentd.telemetry.logs import JsonFormatter, Redactor, TextFormatter, known_secrets

__all__ = ["GracefulServer", "run", "tune_gc"]

log = logging.getLogger("agentd")


def tune_gc() -> None:
    """The daemon process's garbage collector (set once, before it serves; the
    benchmarks that run the runtime in their own process call it too, to measure
    what the daemon does). Long-lived objects from start-up need no cyclic GC scans,
    and a turn allocates a few hundred objects: fewer, larger young collections cut
    p99 (docs/benchmarks.md); starting the runs of a burst of 10,000 schedule fires
    takes about half the CPU it takes with Python's defaults."""
    gc.freeze()
    gc.set_threshold(10_000, 20, 20)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class GracefulServer(uvicorn.Server):
    """Starts the runtime's shutdown as soon as the signal arrives, so streams and
    waiting requests end within the grace period instead of holding uvicorn open."""

    def __init__(self, config: uvicorn.Config, app_state: object) -> None:
        super().__init__(config)
        self._app_state = app_state
        self._loop: asyncio.AbstractEventLoop | None = None
        self._reloads: set[asyncio.Task[None]] = set()

    async def serve(self, sockets: list[object] | None = None) -> None:  # type: ignore[override]
        self._loop = asyncio.get_running_loop()
        # (Signals reach the main thread only: a server run in a thread of a test or
        # an embedding program reloads through the API.)
        hup = threading.current_thread() is threading.main_thread()
        if hup:
            self._loop.add_signal_handler(signal.SIGHUP, self.request_reload)
        try:
            await super().serve(sockets)  # type: ignore[arg-type]
        finally:
            if hup:
                self._loop.remove_signal_handler(signal.SIGHUP)

    def request_reload(self) -> None:
        """Reload the configuration (what SIGHUP does); the outcome is logged."""
        task = asyncio.get_running_loop().create_task(self._reload(), name="agentd-reload")
        self._reloads.add(task)
        task.add_done_callback(self._reloads.discard)

    async def _reload(self) -> None:
        # A signal during start-up waits for the runtime (the start may have read the
        # file before it changed); the runtime serialises reloads.
        while (runtime := getattr(self._app_state, "runtime", None)) is None:
            if self.should_exit:
                return
            await asyncio.sleep(0.1)
        if self.should_exit:
            log.warning("SIGHUP while stopping: the configuration is not reloaded")
            return
        try:
            await runtime.reload(trigger="SIGHUP")
        except AgentdError:
            pass  # (logged by the reload, with what is wrong; nothing changed)
        except Exception:
            log.exception("the configuration reload failed")

    def request_exit(self) -> None:
        """Begin a graceful shutdown (thread-safe): what SIGTERM does."""
        runtime = getattr(self._app_state, "runtime", None)
        if runtime is not None and self._loop is not None and not self.should_exit:
            self._loop.call_soon_threadsafe(runtime.begin_shutdown)
        self.should_exit = True

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.should_exit:
            super().handle_exit(sig, frame)  # a second signal forces the exit
            return
        self.request_exit()


def _configure_logging(settings: Settings) -> Redactor:
    """The root logger's one handler (stderr, which ``agentd start`` sends to the home's
    agentd.log), in the ``[telemetry] log_format``; what it writes is redacted of the
    secrets the daemon knows at start and of anything shaped like one."""
    redactor = Redactor(known_secrets(settings, os.environ))
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(redactor) if settings.telemetry.log_format == "json"
                         else TextFormatter(redactor))
    logging.basicConfig(level=settings.log_level.upper(), handlers=[handler])
    # Python's warnings as log lines too (a JSON log holds nothing else).
    logging.captureWarnings(True)
    return redactor


def _loopback_only(settings: Settings) -> str | None:
    """Without a token (``auth = "none"``) the daemon listens on a loopback address
    only: the host asked for when it was changed, else None."""
    if settings.auth_enabled or _is_loopback(settings.host):
        return None
    asked, settings.host = settings.host, "127.0.0.1"
    return asked


def _load(host: str | None, port: int | None, termo: dict[str, Any] | None) -> Settings:
    """The settings as this daemon reads them, at start and on every reload: the
    command line's options over the rest (a reload compares like with like)."""
    settings = load_settings(host=host, port=port, termo=termo)
    _loopback_only(settings)
    return settings


def run(host: str | None = None, port: int | None = None,
        termo: dict[str, Any] | None = None) -> int:
    """Serve until a signal; return the process exit code. ``termo``: the ``[termo]``
    settings to use (``agentd serve --adapter``)."""
    try:
        settings = load_settings(host=host, port=port, termo=termo)
    except (ValidationError, ConfigFileError) as exc:
        print(f"agentd: invalid settings: {settings_problem(exc)}", file=sys.stderr)
        return 2
    try:
        # The OpenTelemetry variables, read once more where they are used (the
        # runtime): a protocol it cannot speak is said here, before anything starts.
        resolve_traces(settings.telemetry, os.environ)
    except InvalidInput as exc:
        print(f"agentd: invalid settings: {exc}", file=sys.stderr)
        return 2
    asked = _loopback_only(settings)
    redactor = _configure_logging(settings)
    # At once: the checks and the store's opening below take seconds on a first start
    # (it was silent for about 9 s).
    log.info("agentd %s starting (home %s): checking the sandbox, opening the store",
             _version(), settings.home)
    # Whatever the daemon writes (the database, its WAL, logs, snapshots, the token)
    # is for its own user only.
    os.umask(0o077)
    # Its /proc files (environ: keys and tokens) closed to its own user's processes.
    if not undumpable():
        log.warning("could not make the daemon non-dumpable; processes of its user may "
                    "read its environment in /proc")
    if not settings.auth_enabled:
        if asked is not None:
            log.warning("auth = \"none\": binding to 127.0.0.1 instead of %s; use tokens "
                        "to listen on other interfaces", asked)
        log.warning("AUTH IS OFF (auth = \"none\"): anything that can connect to %s:%d "
                    "may use the API without a token. Deciding approvals and changing "
                    "agents' settings still need the token (%s).", settings.host,
                    settings.port, settings.token_file if not settings.tokens
                    else "AGENTD_TOKEN / tokens")
    if not _sandbox_usable(settings):
        return 1
    ensure_home(settings.home)
    lock = _lock_home(settings)
    if lock is None:
        return 1
    load: Callable[[], Settings] = partial(_load, host, port, termo)
    # Before anything opens a database: SQLite's process-wide configuration.
    tune_sqlite()
    app = create_app(settings, reload_from=load)
    redactor.add(read_token(settings.home))  # (the bootstrap token create_app made)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        # uvicorn's loggers write through the root's handler (its format, its
        # redaction), not through handlers of their own.
        log_config=None,
        log_level=settings.log_level.lower(),
        access_log=False,
        timeout_graceful_shutdown=int(settings.shutdown_grace_s) + 5,
        lifespan="on",
    )
    server = GracefulServer(config, app.state)
    # The runtime stops the server when it must stop at once (store/nodes.py).
    app.state.fatal = False

    def exit_server() -> None:
        app.state.fatal = True
        server.request_exit()

    app.state.exit_server = exit_server
    tune_gc()
    settings.pid_file.write_text(str(os.getpid()))
    log.info("agentd %s: store %s, home %s, http://%s:%d", _version(), _redact(
        settings.database_url), settings.home, settings.host, settings.port)
    if settings.console:
        log.info("the console: http://%s:%d/ui/ (sign in with %s)", settings.host,
                 settings.port, "a token of AGENTD_TOKEN / tokens" if settings.named_tokens()
                 else f"the token in {settings.token_file}")
    try:
        server.run()
    finally:
        with contextlib.suppress(FileNotFoundError):
            if settings.pid_file.read_text().strip() == str(os.getpid()):
                settings.pid_file.unlink()
        lock.close()
    return 0 if server.started and not app.state.fatal else 1


def _sandbox_usable(settings: Settings) -> bool:
    """A configured sandbox backend this machine cannot run stops the daemon with one
    clear line, before anything starts (the probe's answer is kept for the runtime)."""
    from agentd.errors import InvalidInput
    from agentd.sandbox.backends import choose

    wanted = settings.sandbox.backend
    try:
        choose(None if wanted == "auto" else wanted)
    except InvalidInput as exc:
        log.error("sandbox.backend: %s", exc.message)
        return False
    return True


def _lock_home(settings: Settings) -> IO[str] | None:
    """Hold an exclusive lock on AGENTD_HOME for the life of the process.

    A second daemon on the same home would run start-up recovery over the first
    one's live runs and take over its pid file; it must not start at all.
    """
    handle = (settings.home / "agentd.lock").open("a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        owner = ""
        with contextlib.suppress(OSError):
            owner = f" (pid {settings.pid_file.read_text().strip()})"
        log.error("another agentd daemon%s is running with AGENTD_HOME=%s; stop it first "
                  "(agentd stop) or use another home", owner, settings.home)
        return None
    return handle


def _version() -> str:
    from agentd.version import __version__

    return __version__


def _redact(url: str) -> str:
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        return f"{scheme}://{creds.split(':', 1)[0]}:***@{host}"
    return url


def main() -> None:
    raise SystemExit(run())


if __name__ == "__main__":
    main()
