"""Daemon commands: serve, start, stop, status."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from agentd.cli._common import (
    connect,
    echo_json,
    err,
    fail,
    load_settings_or_fail,
    local_token,
    out,
    target,
)
from agentd.client import APIError, Client, ClientError, ConnectionFailed
from agentd.client.base import local_url
from agentd.security.tokens import ensure_home

if TYPE_CHECKING:
    from agentd.config import Settings

HostOption = Annotated[
    str | None,
    typer.Option("--host", help="Address to bind. [dim]\\[default: AGENTD_HOST or 127.0.0.1][/]"),
]
PortOption = Annotated[
    int | None,
    typer.Option(
        "--port",
        "-p",
        min=0,
        max=65535,
        help="Port to bind. [dim]\\[default: AGENTD_PORT or 8721][/]",
    ),
]

_LOG_TAIL_LINES = 20


# -- pid file helpers -------------------------------------------------------------


def read_pid(path: Path) -> int | None:
    """The pid in a pid file, or None when there is none or it is garbage."""
    try:
        text = path.read_text().strip()
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        fail(f"cannot read pid file {path}: {exc}")
    try:
        pid = int(text.split()[0]) if text else 0
    except ValueError:
        return None
    return pid if pid > 0 else None


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` is a live process that looks like agentd."""
    # Reap it first if it is our own exited child (tests, `start` failing early);
    # a zombie still answers signal 0.
    with contextlib.suppress(ChildProcessError, OSError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, owned by someone else
    proc = Path(f"/proc/{pid}")
    try:
        if proc.joinpath("stat").read_text().split(") ", 1)[1].startswith("Z"):
            return False
        cmdline = proc.joinpath("cmdline").read_bytes()
    except (OSError, IndexError):
        return True  # no /proc (macOS): trust the signal
    # The pid was reused by something else since agentd wrote the file.
    return not cmdline or b"agentd" in cmdline


def remove_pid_file(path: Path, pid: int | None = None) -> None:
    """Remove the pid file, only if it still names ``pid`` when one is given."""
    if pid is not None and read_pid(path) != pid:
        return
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def _log_tail(path: Path, start: int = 0, lines: int = _LOG_TAIL_LINES) -> str:
    try:
        with path.open("rb") as fh:
            fh.seek(start)
            data = fh.read()
    except OSError:
        return ""
    return "\n".join(data.decode("utf-8", "replace").splitlines()[-lines:])


def _print_log_tail(path: Path, start: int) -> None:
    tail = _log_tail(path, start)
    if tail:
        console = err()
        console.print(f"[dim]last lines of {escape(str(path))}:[/]")
        console.print(escape(tail), soft_wrap=True)


# -- commands ---------------------------------------------------------------------


def serve(
    host: HostOption = None,
    port: PortOption = None,
    adapter: Annotated[str | None, typer.Option(
        "--adapter", metavar="MODULE:OBJECT",
        help="Serve termo-agent's routes (/api/send, ...) for one agent backed by this "
             "adapter (MODULE alone: MODULE:Adapter). Naming it allows it.")] = None,
    native: Annotated[bool, typer.Option(
        "--termo", help="Serve termo-agent's routes for a native agentd agent (--agent; "
                        "its own model, tools and settings), without an adapter.")] = False,
    agent: Annotated[str | None, typer.Option(
        "--agent", help="The agent --adapter or --termo serves (created if missing). "
                        "[dim]\\[default: agent in agentd.toml's termo section, else "
                        "'agent'][/]")] = None,
    termo_token: Annotated[str | None, typer.Option(
        "--termo-token", envvar="TERMO_TOKEN", show_envvar=True,
        help="One more bearer token accepted on termo-agent's routes only "
             "(beside the daemon's tokens).")] = None,
    config: Annotated[str | None, typer.Option(
        "--config", envvar="TERMO_CONFIG", show_envvar=True,
        help="Passed to the --adapter's initialize(config_path=...), as termo-agent's "
             "--config.")] = None,
) -> None:
    """Run the daemon in the foreground (Ctrl-C stops it).

    Logs go to the terminal. Use [bold]agentd start[/] to run it in the background.
    With [bold]--adapter[/], termo-agent's HTTP routes serve one adapter-backed agent
    beside agentd's API; with [bold]--termo[/], one native agent (docs/termo.md).

    [bold]Examples[/]
      $ agentd serve
      $ agentd serve --host 0.0.0.0 --port 9000   [dim]# set AGENTD_TOKEN first[/]
      $ agentd serve --adapter my_agent:Adapter --port 8080
      $ agentd serve --termo --agent support --port 8080
    """
    settings = load_settings_or_fail()
    if (agent is not None and adapter is None and not native
            and not settings.termo.served):
        fail("--agent names the agent --adapter or --termo serves: give one of them too "
             "(or [termo] adapter / enabled in agentd.toml)", 2)
    if config is not None and native and adapter is None and settings.termo.adapter is None:
        fail("--config is passed to an adapter's initialize(): --termo serves a native "
             "agent, which has none")
    termo: dict[str, Any] | None = None
    if adapter is not None or agent is not None or native or (
            (termo_token or config) and settings.termo.served):
        termo = settings.termo.model_dump()
        if native:
            termo["enabled"] = True
        if adapter is not None:
            termo["adapter"] = adapter
        if agent is not None:
            termo["agent"] = agent
        if termo_token:
            termo["token"] = termo_token
        if config:
            termo["config"] = config
        from pydantic import ValidationError

        from agentd.config import TermoConfig

        try:
            TermoConfig.model_validate(termo)
        except ValidationError as exc:
            fail("invalid --adapter/--agent/--termo-token: " + "; ".join(
                f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()), 2)
    # Imported here: the CLI talks HTTP and loads the server only to become one.
    from agentd.server import daemon

    code = daemon.run(
        host=host if host is not None else settings.host,
        port=port if port is not None else settings.port,
        termo=termo,
    )
    raise typer.Exit(code)


def start(
    host: HostOption = None,
    port: PortOption = None,
    wait: Annotated[
        float, typer.Option("--wait", min=0.1, help="Seconds to wait for the daemon to answer.")
    ] = 15.0,
) -> None:
    """Start the daemon in the background.

    Output goes to [bold]$AGENTD_HOME/agentd.log[/]; the pid to [bold]$AGENTD_HOME/agentd.pid[/].
    Returns once GET /health answers, printing the pid and URL.

    [bold]Examples[/]
      $ agentd start
      $ AGENTD_HOME=/srv/agentd agentd start --port 9000
    """
    settings = load_settings_or_fail()
    host = host if host is not None else settings.host
    port = port if port is not None else settings.port
    pid_file, log_file = settings.pid_file, settings.log_file
    old = read_pid(pid_file)
    if old is not None:
        if pid_alive(old):
            fail(
                f"agentd is already running (pid {old}, pid file {pid_file}); "
                "stop it with `agentd stop`"
            )
        remove_pid_file(pid_file, old)

    url = local_url(host, port)
    token = local_token(settings)
    with Client(url, token, timeout=2.0) as client:
        try:
            client.health()
        except ConnectionFailed:
            pass
        except ClientError:
            fail(f"something else is already listening on {host}:{port}; pick another --port")
        else:
            fail(
                f"an agentd daemon is already answering at {url} (not started from "
                f"{settings.home}); stop it first or pick another --port"
            )

    try:
        ensure_home(settings.home)
        log_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        offset = log_file.stat().st_size if log_file.exists() else 0
        # The log may quote tool output and prompts: for the daemon's user only.
        with os.fdopen(os.open(log_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600),
                       "ab") as log:
            os.fchmod(log.fileno(), 0o600)
            stamp = datetime.now(UTC).isoformat(timespec="seconds")
            log.write(f"--- agentd start {stamp} {host}:{port} ---\n".encode())
            log.flush()
            proc = subprocess.Popen(
                [sys.executable, "-m", "agentd", "serve", "--host", host, "--port", str(port)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
            )
    except OSError as exc:
        fail(f"cannot start agentd: {exc}")

    health = _wait_until_up(proc, url, token, wait, log_file, offset)
    # The daemon writes its own pid file; write it if it did not so `stop` works.
    if read_pid(pid_file) != proc.pid:
        with contextlib.suppress(OSError):
            pid_file.write_text(f"{proc.pid}\n")
    # It runs on after we exit; tell Popen not to warn about a child left running.
    proc.returncode = 0
    version = health.get("version", "?")
    out().print(f"agentd {escape(str(version))} started (pid {proc.pid}) at {url}")
    out().print(f"[dim]logs: {escape(str(log_file))}[/]")


def _wait_until_up(
    proc: subprocess.Popen[bytes],
    url: str,
    token: str | None,
    wait: float,
    log_file: Path,
    offset: int,
) -> dict[str, Any]:
    deadline = time.monotonic() + wait
    with Client(url, token, timeout=2.0) as client:
        while True:
            code = proc.poll()
            if code is not None:
                err().print(f"[bold red]error:[/] agentd exited with code {code} while starting")
                _print_log_tail(log_file, offset)
                raise typer.Exit(1)
            try:
                return client.health()
            except APIError as exc:
                if exc.status not in (502, 503, 504):
                    return {}  # it answers; /health itself is the daemon's business
            except ClientError:
                pass
            if time.monotonic() >= deadline:
                err().print(
                    f"[bold red]error:[/] agentd (pid {proc.pid}) did not answer at {url} "
                    f"within {wait:g}s; it may still be starting. Stop it with `agentd stop`."
                )
                _print_log_tail(log_file, offset)
                # Don't warn about the child we leave to the user.
                proc.returncode = 0
                raise typer.Exit(1)
            time.sleep(0.1)


def stop(
    timeout: Annotated[
        float,
        typer.Option("--timeout", "-t", min=0, help="Seconds to wait for a graceful exit."),
    ] = 30.0,
    force: Annotated[
        bool, typer.Option("--force", "-f", help="SIGKILL the daemon if it has not exited in time.")
    ] = False,
) -> None:
    """Stop the background daemon (to stop one agent instead, use stop-agent).

    Sends SIGTERM and waits. The daemon stops taking messages, lets running
    steps finish for its grace period (AGENTD_SHUTDOWN_GRACE_S), then parks the
    runs still going: the next daemon resumes them from their last committed step,
    and starts the queued runs. With [bold]--force[/] a daemon still running after
    --timeout is killed (SIGKILL); its runs resume the same way.

    To stop a single agent and keep the daemon running, use
    [bold]agentd stop-agent NAME[/].

    [bold]Examples[/]
      $ agentd stop
      $ agentd stop --timeout 5 --force
    """
    settings = load_settings_or_fail()
    pid_file = settings.pid_file
    pid = read_pid(pid_file)
    if pid is None:
        out().print(f"agentd is not running (no pid file at {escape(str(pid_file))})")
        return
    if not pid_alive(pid):
        remove_pid_file(pid_file, pid)
        out().print(f"agentd is not running (removed stale pid file naming pid {pid})")
        return
    in_flight = _active_runs(settings)
    began = time.monotonic()
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        remove_pid_file(pid_file, pid)
        out().print("agentd is not running")
        return
    except PermissionError:
        fail(f"not allowed to signal agentd (pid {pid})")
    out().print(f"stopping agentd (pid {pid})…")
    if in_flight:
        grace = settings.shutdown_grace_s
        runs, steps = (("1 run is", "its current step") if in_flight == 1
                       else (f"{in_flight} runs are", "their current steps"))
        out().print(
            f"{runs} in flight: waiting up to {grace:g} s (AGENTD_SHUTDOWN_GRACE_S) for "
            f"{steps} to finish; what is left resumes at the next start",
            soft_wrap=True)
    if not _wait_exit(pid, timeout):
        if not force:
            fail(
                f"agentd (pid {pid}) is still running after {timeout:g}s; "
                "wait longer with --timeout or kill it with --force"
            )
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        if not _wait_exit(pid, 5.0):
            fail(f"agentd (pid {pid}) survived SIGKILL")
        remove_pid_file(pid_file, pid)
        out().print(f"agentd killed (pid {pid})")
        return
    remove_pid_file(pid_file, pid)
    out().print(f"agentd stopped (after {time.monotonic() - began:.1f} s)")


def _active_runs(settings: Settings) -> int:
    """Runs in flight in the local daemon, as /health says (0 when it does not answer:
    stopping goes ahead either way)."""
    with Client(local_url(settings.host, settings.port), local_token(settings),
                timeout=2.0) as client:
        try:
            health = client.health()
        except ClientError:
            return 0
    count = health.get("active_runs")
    return count if isinstance(count, int) and not isinstance(count, bool) else 0


def _wait_exit(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while pid_alive(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)
    return True


def status(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print the status as JSON.")] = False,
) -> None:
    """Show whether the daemon runs: its version, store, node, agents and active runs.

    Exits with code 1 when the daemon is not running or does not answer.

    [bold]Example[/]
      $ agentd status && echo up
    """
    settings = load_settings_or_fail()
    pid = read_pid(settings.pid_file)
    alive = pid is not None and pid_alive(pid)
    url, token = target(ctx)
    health: dict[str, Any] | None = None
    problem = ""
    with Client(url, token, timeout=5.0) as client:
        try:
            health = client.health()
        except APIError as exc:
            problem = f"{exc.message} [{exc.code}]"
        except ConnectionFailed:
            problem = "not reachable"
        except ClientError as exc:
            problem = str(exc)
    running = health is not None
    if as_json:
        echo_json(
            {
                "running": running,
                "pid": pid if alive else None,
                "url": url,
                "health": health,
                "problem": problem or None,
            }
        )
        raise typer.Exit(0 if running else 1)
    console = out()
    if health is None:
        if alive:
            console.print(
                f"agentd process {pid} is alive but {url} does not answer: {escape(problem)}"
            )
        else:
            console.print(f"agentd is not running ({url} {escape(problem)})")
        raise typer.Exit(1)
    where = f"pid {pid}" if alive else "pid unknown"
    console.print(f"agentd is running ({where}) at {url}")
    for key in ("version", "store", "sandbox", "node", "agents", "active_runs"):
        if key in health:
            value = agents_text(health) if key == "agents" else str(health[key])
            if key == "sandbox":
                value += sandbox_notes(health)
            console.print(f"  {key.replace('_', ' ')}: {escape(value)}")


def sandbox_notes(health: dict[str, Any]) -> str:
    """What /health says of the sandbox's walls beyond the backend's name."""
    notes = []
    if health.get("sandbox_isolated") is False:
        notes.append("NOT isolated: commands run as plain processes")
    uids = health.get("sandbox_uids")
    if uids is not None:
        notes.append("a uid per agent" if uids == "per-agent" else "the daemon's uid")
    memory = health.get("sandbox_memory")
    if memory is not None:
        notes.append("memory per sandbox" if memory == "cgroup" else "memory per process")
    network = health.get("sandbox_network")
    if network is not None and network != "confined":
        notes.append(f"process backend network NOT confined: {network}")
    return f" ({'; '.join(notes)})" if notes else ""


def agents_text(health: dict[str, Any]) -> str:
    """``12 (3 awake, 9 asleep)``; just the total from a daemon that does not say."""
    total = str(health.get("agents", "?"))
    awake, asleep = health.get("agents_awake"), health.get("agents_sleeping")
    if awake is None or asleep is None:
        return total
    return f"{total} ({awake} awake, {asleep} asleep)"


def console(
    ctx: typer.Context,
    open_browser: Annotated[bool, typer.Option(
        "--open", help="Open it in the default web browser too.")] = False,
) -> None:
    """Print the web console's address (and where its sign-in token is).

    The console is served by the daemon at /ui; it asks for a daemon token, which it
    keeps in that browser tab only (docs/console.md).

    [bold]Example[/]
      $ agentd console --open
    """
    import httpx

    url, _ = target(ctx)
    page = url.rstrip("/") + "/ui/"
    try:
        answer = httpx.get(page, timeout=5.0)
    except httpx.HTTPError as exc:
        fail(f"the daemon at {url} does not answer ({exc.__class__.__name__}): "
             "start it with 'agentd start'")
    if answer.status_code in (401, 404):
        fail(f"the daemon at {url} does not serve the console (console = false in its "
             "configuration)")
    if answer.status_code != 200:
        fail(f"{page} answered {answer.status_code}")
    console_out = out()
    console_out.print(page)
    settings = load_settings_or_fail()
    if state_url_given(ctx):
        hint = "the daemon's token (AGENTD_TOKEN or --token gave the CLI one)"
    elif settings.tokens or settings.token:
        hint = "one of the tokens in your configuration (token / tokens / AGENTD_TOKEN)"
    else:
        hint = f"the token in {settings.home / 'token'}"
    err().print(f"Sign in with {escape(hint)}; it stays in that browser tab.")
    if open_browser:
        import webbrowser

        if not webbrowser.open(page):
            err().print("No web browser could be opened here: open the address above.")


def state_url_given(ctx: typer.Context) -> bool:
    """Whether --url / AGENTD_URL named the daemon (not the local configuration)."""
    from agentd.cli._common import state

    return bool(state(ctx).url)


def reload(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print the answer as JSON.")] = False,
) -> None:
    """Have the daemon read agentd.toml again, without a restart (admins).

    What can change live is applied at once (tokens and their scopes, tenants,
    provider limits, named models, the policy, logging); what needs a restart is
    listed, and the daemon goes on with what it started with. A file that cannot be
    loaded changes nothing: the error names each field. SIGHUP does the same.

    [bold]Example[/]
      $ agentd reload
    """
    with connect(ctx) as client:
        result = client.reload()
    if as_json:
        echo_json(result)
        return
    console = out()
    if result["unchanged"]:
        console.print(f"nothing changed: {escape(result['file'])} holds what the daemon runs")
        return
    console.print(f"reloaded {escape(result['file'])}")
    console.print(f"  applied: {escape(', '.join(result['applied']) or 'nothing')}",
                  soft_wrap=True)
    if result["restart_required"]:
        console.print("  needs a restart (the daemon goes on with what it started with): "
                      f"{escape(', '.join(result['restart_required']))}", soft_wrap=True)
