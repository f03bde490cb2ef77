"""Shared fixtures and helpers: settings under a temp home, stores on SQLite and
PostgreSQL, a runtime, an API client over ASGI, a free port, and the one way a test
waits for something (``wait_until`` / ``eventually``).

Test files import the helpers from here (``from tests.conftest import eventually``).
"""

from __future__ import annotations

import asyncio
import functools
import gc
import inspect
import ipaddress
import os
import re
import shutil
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
import psycopg
import pytest
import typer.testing

from agentd.assembly import Runtime
from agentd.config import SandboxConfig, Settings
from agentd.llm.scripted import clear_queue
from agentd.sandbox import prepare_workspace
from agentd.security.tls import tls_context
from agentd.security.tokens import read_token
from agentd.store import Store, _sqlite, open_store
from agentd.testing.live import LiveServer, free_port

#: The daemon launchers' fixtures (``home``, ``spawn``): tests/daemons.py.
pytest_plugins = ("tests.daemons",)

__all__ = [
    "PATIENCE_S",
    "TERMINAL",
    "LiveServer",
    "asgi_client",
    "bearer",
    "eventually",
    "free_port",
    "listening",
    "wait_for_port",
    "wait_for_run",
    "wait_until",
]

PG_URL = os.environ.get("AGENTD_TEST_POSTGRES_URL")


# Typer's CliRunner builds the click command of the whole CLI (every command's signature
# read and its type hints evaluated: about 40 ms) on every ``invoke``; the same app's
# command is the same, so the tests build it once per process (a click command holds
# no state between invocations).
typer.testing._get_command = functools.cache(typer.testing._get_command)

# httpx loads certifi's CA bundle into a new SSL context for every client it makes
# (about 15 ms of CPU), even one that only ever speaks plain HTTP to 127.0.0.1: the
# tests make thousands (a client per request in many helpers), about 10 % of their
# workers' CPU in a profile of tests/server, runtime, protocols, cli and autonomy.
# They share one per ``trust_env``, as the daemon's own clients do
# (agentd.security.tls); any other ``verify`` or a ``cert`` gets its own, as before.
_new_ssl_context = httpx._transports.default.create_ssl_context


def _shared_ssl_context(verify: Any = True, cert: Any = None,
                        trust_env: bool = True) -> Any:
    if verify is True and cert is None:
        return tls_context(trust_env=trust_env)
    return _new_ssl_context(verify=verify, cert=cert, trust_env=trust_env)


httpx._transports.default.create_ssl_context = _shared_ssl_context

#: How long a test waits for something that must happen. A liveness bound (a stuck
#: run fails the test instead of hanging it), never a timing check: a loaded machine
#: is slow, not wrong, so this is generous.
PATIENCE_S = 60.0

T = TypeVar("T")


def _describe(what: str | Callable[[], str]) -> str:
    return what if isinstance(what, str) else what()


def wait_until(check: Callable[[], T], *, what: str | Callable[[], str] = "the condition",
               within: float = PATIENCE_S, interval: float = 0.02) -> T:
    """Call ``check`` until it returns something truthy, and return that.

    Fails the test (naming ``what``, a string or a function giving one, and the last
    value seen) if it is still falsy after ``within`` seconds. Assertions raised by
    ``check`` fail at once.
    """
    deadline = time.monotonic() + within
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"{_describe(what)} did not happen within {within:g}s "
                        f"(last: {value!r})")
        time.sleep(interval)


async def eventually(check: Callable[[], T | Awaitable[T]], *,
                     what: str | Callable[[], str] = "the condition",
                     within: float = PATIENCE_S, interval: float = 0.02) -> T:
    """The async ``wait_until``: ``check`` may be a plain or a coroutine function."""
    deadline = time.monotonic() + within
    while True:
        value = check()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value  # type: ignore[return-value]
        if time.monotonic() > deadline:
            pytest.fail(f"{_describe(what)} did not happen within {within:g}s "
                        f"(last: {value!r})")
        await asyncio.sleep(interval)


async def under_way(runtime: Runtime, run_id: str, *, in_model: bool = False) -> None:
    """Wait until ``run_id`` is being driven on ``runtime`` (its executor exists and
    has started it, or taken it back: its lease taken; with ``in_model``, in a model
    call): the point "a run is under way" tests act at, instead of sleeping until it
    may be. (An executor built but not started yet still holds a queued run: a pause
    committed then keeps it queued.)"""
    await eventually(lambda: any(e.run.id == run_id and e.leased_at > 0
                                 and (e.in_model_call or not in_model)
                                 for e in runtime.supervisor.executors()),
                     what=f"run {run_id} under way" + (" in a model call" if in_model else ""))


def listening(port: int) -> bool:
    """Whether something accepts connections on 127.0.0.1:``port``: a bare connect,
    the cheap check to poll a starting server with (an httpx request that finds the
    port closed costs about 20 ms of CPU: a client, its SSL context, an exception
    chain; polled every 50 ms through a start on a loaded machine, up to a second)."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


def wait_for_port(port: int, proc: subprocess.Popen[Any] | None = None, *,
                  what: str = "the server", within: float = PATIENCE_S) -> None:
    """Wait until something accepts connections on 127.0.0.1:``port``; fail at once if
    ``proc`` (the process that should listen) exits first."""

    def up() -> bool:
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"{what} exited with {proc.returncode} before listening")
        return listening(port)

    wait_until(up, what=f"{what} listening on port {port}", within=within,
               interval=0.05)


#: The statuses a run ends in.
TERMINAL = frozenset({"completed", "failed", "cancelled", "interrupted"})


async def wait_for_run(api: httpx.AsyncClient, run_id: str,
                       *statuses: str) -> dict[str, Any]:
    """GET ``/v1/runs/{run_id}`` until its status is one of ``statuses`` (any terminal
    one when none are given); the run."""
    wanted = set(statuses or TERMINAL)
    last: dict[str, Any] = {}

    async def reached() -> dict[str, Any] | None:
        response = await api.get(f"/v1/runs/{run_id}")
        assert response.status_code == 200, response.text
        last.update(response.json())
        return dict(last) if last["status"] in wanted else None

    return await eventually(reached, what=lambda: f"run {run_id} ({last.get('status')}) "
                                                   f"reaching {sorted(wanted)}")


@asynccontextmanager
async def asgi_client(settings: Settings, runtime: Runtime, *,
                      base_url: str = "http://test",
                      **kwargs: Any) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client for ``create_app(settings, runtime)`` over ASGI, with the bootstrap
    token. The lifespan is entered the way a server enters it (create_app publishes the
    runtime only there)."""
    from agentd.server.app import create_app

    app = create_app(settings, runtime)
    async with app.router.lifespan_context(app), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url=base_url,
            headers=bearer(settings), **kwargs) as client:
        yield client


# -- no real network ---------------------------------------------------------------
#
# Every socket connection a test makes (in its own process: a daemon started as a
# subprocess is not covered) must stay on this machine. A connection to, or a name
# lookup of, anything else fails the test: it raises where it happens and, in case
# the code under test swallowed that error, the test fails at teardown as well.
# ``@pytest.mark.allow_network`` lifts the guard for a test that reaches beyond the
# loopback on purpose (the sandbox's egress checks); say why next to it.

_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex
_real_getaddrinfo = socket.getaddrinfo
_guard_on = True  # module-wide: server threads of a test are guarded too
_violations: list[str] = []


class RealNetworkCall(RuntimeError):
    """A test tried to reach a host that is not this machine."""


def _hosts_file_names() -> frozenset[str]:
    """Names /etc/hosts gives (resolved from the file: no lookup leaves the machine)."""
    try:
        lines = Path("/etc/hosts").read_text().splitlines()
    except OSError:
        return frozenset()
    return frozenset(name.lower() for line in lines
                     for name in line.split("#", 1)[0].split()[1:])


_HOSTS_FILE = _hosts_file_names()


def _numeric(host: str) -> bool:
    """An address written as numbers, in any form getaddrinfo reads without a lookup
    (``10.1.2.3``, ``::1``, ``2130706433``)."""
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        try:
            socket.inet_aton(host)
        except OSError:
            return False
    return True


def _local_host(host: object) -> bool:
    if not isinstance(host, str):
        return False
    if host.lower().rstrip(".") in ("localhost", "") or host.lower() in _HOSTS_FILE:
        return True
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    return address.is_loopback or address.is_unspecified


def _refuse(what: str) -> None:
    message = (f"a test made a real network call: {what}. Tests stay on the loopback "
               "(mark a test that must not with @pytest.mark.allow_network)")
    _violations.append(message)
    raise RealNetworkCall(message)


def _check_address(sock: socket.socket, address: Any) -> None:
    if not _guard_on or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return
    host = address[0] if isinstance(address, tuple) and address else address
    if not _local_host(host):
        _refuse(f"connect to {address!r}")


def _guarded_connect(self: socket.socket, address: Any) -> None:
    _check_address(self, address)
    _real_connect(self, address)


def _guarded_connect_ex(self: socket.socket, address: Any) -> int:
    _check_address(self, address)
    return _real_connect_ex(self, address)


def _guarded_getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
    if _guard_on and host is not None:
        name = host.decode(errors="replace") if isinstance(host, bytes) else str(host)
        # A numeric address needs no lookup (connect() judges it); a NUL is refused by
        # getaddrinfo itself.
        if not (_local_host(name) or _numeric(name) or "\x00" in name):
            _refuse(f"name lookup of {name!r}")
    return _real_getaddrinfo(host, *args, **kwargs)


socket.socket.connect = _guarded_connect  # type: ignore[method-assign]
socket.socket.connect_ex = _guarded_connect_ex  # type: ignore[method-assign]
socket.getaddrinfo = _guarded_getaddrinfo


#: Folders whose tests drive Chromium: marked ``browser`` (and ``e2e``: each starts a
#: daemon or a browser process), so that ``-m "not browser"`` leaves them out.
_BROWSER_DIRS = ("tests/web/", "tests/tools/browser/")
_KILL = re.compile(r"(?:^|_)kill")
#: Tests that take seconds alone by design (marked ``slow``; the quick loop of
#: docs/contributing.md leaves them out, CI runs them). Each took 1.5 s or more alone
#: on the machine of docs/benchmarks.md ("Test suite", sixth session), for what it must
#: do. Every test of the gVisor backend is slow too (gVisor boots its own kernel for
#: each sandbox): see pytest_collection_modifyitems.
_SLOW = (
    # Official suites run whole against a daemon (the A2A TCK waits 5 s on each of
    # 17 tests for a state A2A forbids: tests/conformance/test_a2a_tck.py).
    "tests/conformance/test_a2a_tck.py",
    # The MCP conformance suite's 21 client auth scenarios, each with its own servers.
    "tests/oauth/test_mcp_conformance_auth.py",
    # Property and load tests, the schema fuzzer.
    "tests/runtime/test_modes_under_load.py",
    # Three nodes' schedulers through a minute of fake time, every exchange with the
    # store waited for.
    "tests/runtime/test_cluster_limits.py::test_a_concurrency_limit_holds_across_nodes",
    "tests/runtime/test_cluster_limits.py::test_the_interactive_reserve_and_priority_hold",
    "tests/runtime/test_cluster_limits.py::test_interactive_work_on_one_node_is_not_starved",
    "tests/isolation/test_isolation_property.py",
    "tests/server/test_fuzz.py",
    "tests/sandbox/test_snapshots.py::test_random_trees_round_trip_exactly",
    "tests/runtime/test_agent_settings_model.py::test_any_json_gets_a_model_or_named_problems",
    # Time limits and resource caps waited out, sandboxes killed at them.
    "tests/security/test_stall.py",
    "tests/sandbox/test_backends.py::test_memory_hog_fails",
    "tests/sandbox/test_backends.py::test_cpu_limit",
    "tests/sandbox/test_backends.py::test_fork_bomb_is_contained",
    "tests/sandbox/test_backends.py::test_wall_time_kills_everything",
    "tests/sandbox/test_agent_isolation.py::test_memory_over_several_processes_is_killed",
    "tests/sandbox/test_agent_isolation.py::test_memory_cap_in_a_persistent_shell",
    "tests/sandbox/test_agent_isolation.py::test_no_cgroup_is_left_behind",
    "tests/runtime/test_agent_uids.py::test_a_command_over_the_memory_cap_is_a_clear_tool",
    "tests/security/test_hostile.py::test_attacks_are_contained",
    "tests/security/test_hostile.py::test_a_background_loop_dies_when_the_session_is",
    # Fresh interpreters: importing every module, resolving a provider's SDK.
    "tests/protocols/test_lazy_doors.py",
    "tests/test_public_api.py::test_importing_agentd_has_no_side_effects",
    "tests/llm/test_registry.py::test_resolving_anthropic_imports_its_sdk_and_not_openais",
    "tests/llm/test_registry.py::test_resolving_an_openai_provider_imports_it_then",
    # termo-agent's bundled adapters under a daemon: each imports its framework
    # (LiteLLM alone takes seconds) or starts the Claude Code CLI.
    "tests/protocols/termo/test_termo_bundled_adapters.py",
    # CLI processes following a daemon.
    "tests/cli/test_cli_live.py::test_tail_",
    "tests/cli/test_cli_waits.py::test_a_steer_restarts_the_answer_in_chat_instead_of",
    # MCP servers started, crashed, timed out and restarted.
    "tests/tools/test_mcp.py::test_http_server_restarted_or_down",
    "tests/tools/test_mcp.py::test_a_timeout_lets_other_calls_in_flight_finish",
    "tests/tools/test_mcp.py::test_a_timed_out_call_restarts_the_server",
    "tests/tools/test_mcp.py::test_too_many_crashes_leave_the_server_dead",
    "tests/tools/test_mcp.py::test_a_crash_mid_call_and_the_retry_of_idempotent_tools",
    "tests/tools/test_mcp.py::test_a_killed_server_fails_the_call_in_flight_and_is",
    "tests/tools/test_mcp.py::test_connections_are_reused_per_owner_and_closed",
    # Whole documents built and checked: the code's layers and complexity, the
    # OpenAPI document, the event catalogue.
    "tests/test_layers.py",
    "tests/test_complexity.py",
    "tests/server/test_openapi_contract.py",
    "tests/runtime/test_events_catalogue.py",
    "tests/server/test_waiting.py::test_the_event_catalogue_is_published",
    "tests/server/test_agent_settings.py::test_the_openapi_schema_documents_every_setting",
    # 2,000 real embeddings.
    "tests/memory/test_embed.py::test_embedding_2000_texts",
    # The docs' examples run literally: about 100 CLI and Python processes.
    "tests/docs/test_docs_examples.py::test_page_examples_run",
)


#: Modules whose module-scoped fixture starts daemon processes (two, for a2a_call),
#: run on one worker each, so the daemons start once rather than once per worker that
#: takes one of their tests: each started 3 or 4 times in a run of the eighth session
#: (their setups summed 151 s there, 104 s of them repeats; docs/benchmarks.md).
_ONE_WORKER = (
    "tests/protocols/test_a2a_call_e2e.py",
    "tests/protocols/test_a2a_e2e.py",
    "tests/protocols/test_access_doors_e2e.py",
    "tests/protocols/test_langgraph_e2e.py",
    "tests/protocols/test_mcp_e2e.py",
    "tests/protocols/test_openai_e2e.py",
    "tests/protocols/test_websocket_e2e.py",
    "tests/e2e/test_send_waits_e2e.py",
    "tests/docs/test_docs_examples.py",
)


def pytest_collection_finish(session: pytest.Session) -> None:
    """Move what collection made (agentd and every test module imported: about 200,000
    objects) out of the garbage collector's reach: a worker's full collections then
    scan only what its tests make. They took 5-7 s of a worker's CPU in four minutes
    of tests/server, runtime and autonomy, about a third less with this."""
    gc.collect()
    gc.freeze()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        path = item.path.as_posix()
        if item.nodeid.startswith(_ONE_WORKER):
            item.add_marker(pytest.mark.xdist_group(item.nodeid.partition("::")[0]))
        if "image" in getattr(item, "fixturenames", ()) and "/tests/deploy/" in path:
            # The tests of agentd's container image run on one worker: the first builds
            # the image (minutes, on a machine that has none) while the other workers
            # go on with other tests, instead of each worker that took one of them
            # waiting for the build's lock (tests/deploy/_podman.py).
            item.add_marker(pytest.mark.xdist_group("tests/deploy:image"))
        if any(f"/{d}" in path for d in _BROWSER_DIRS):
            item.add_marker(pytest.mark.browser)
            item.add_marker(pytest.mark.e2e)
            # A module of browser tests runs on one worker (``--dist loadgroup``, as
            # scripts/test.sh runs them), so its Chromium and servers start once, not
            # once per worker (docs/benchmarks.md, "Test suite": grouping every module
            # with a module fixture measured no better).
            item.add_marker(pytest.mark.xdist_group(path))
        if item.nodeid.startswith(_SLOW) or "[gvisor" in item.name:
            item.add_marker(pytest.mark.slow)
        # Tests that kill the daemon or a server to prove nothing acknowledged is lost:
        # test_*kill*.py, and tests named for a SIGKILL.
        if (_KILL.search(item.path.name) or "sigkill" in item.name.lower()
                or item.name.startswith("test_kill")):
            item.add_marker(pytest.mark.kill)
    # The long tests first: xdist hands tests out in this order as workers ask for
    # them, so the many short ones fill in at the end instead of a few long ones
    # keeping one worker busy after the others are done (stable: each part keeps its
    # order, and every worker collects the same).
    items.sort(key=_weight)


def _weight(item: pytest.Item) -> int:
    marks = {m.name for m in item.iter_markers()}
    if "slow" in marks:
        return 0
    if marks & {"browser", "kill"}:
        return 1
    return 2 if "e2e" in marks else 3


@pytest.fixture(autouse=True)
def _no_real_network(request: pytest.FixtureRequest) -> Iterator[None]:
    global _guard_on
    _guard_on = request.node.get_closest_marker("allow_network") is None
    _violations.clear()
    try:
        yield
    finally:
        seen, _guard_on = list(_violations), True
        _violations.clear()
        if seen:
            pytest.fail(seen[0], pytrace=False)


@pytest.fixture(autouse=True)
def _replay_every_run(request: pytest.FixtureRequest,
                      monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """With ``AGENTD_TEST_REPLAY`` (``1``, or the paths of the tests it is for): every
    run a test's runtimes finished is replayed when the runtime closes, and a replay
    that differs fails the test (tests/replay_mode.py). Not for a test that writes a
    run's events by hand (``@pytest.mark.no_replay``)."""
    from tests import replay_mode

    if (not replay_mode.replays(request.node.nodeid)
            or request.node.get_closest_marker("no_replay")):
        yield
        return
    found: list[str] = []
    monkeypatch.setattr(Runtime, "close", replay_mode.wrap_close(found))
    yield
    if found:
        pytest.fail("replays differ from their runs:\n" + "\n".join(found), pytrace=False)


@pytest.fixture(autouse=True)
def _isolate(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    # No test reads the developer's ~/.agentd or real provider keys.
    monkeypatch.setenv("AGENTD_HOME", str(tmp_path / "home"))
    # SQLite stores made in this process skip the fsync per commit of the default
    # (FULL): no test is a power loss, and those fsyncs doubled the time of the
    # runtime's tests on a shared machine. Tests of the level name it; a daemon
    # process runs the real default (tests/store/test_synchronous.py).
    monkeypatch.setattr(_sqlite, "DEFAULT_SYNCHRONOUS", "NORMAL")
    for var in ("AGENTD_TOKEN", "AGENTD_DATABASE_URL", "AGENTD_URL", "OPENAI_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    clear_queue()
    yield
    clear_queue()


def bearer(settings: Settings) -> dict[str, str]:
    """The Authorization header with the bootstrap token ``create_app`` made in the
    settings' home (call it after building the app); none when the settings name
    tokens of their own (the test sends them itself)."""
    if settings.tokens:
        return {}
    token = read_token(settings.home)
    assert token, "no bootstrap token: build the app first"
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    """An empty workspace, the sandbox's own (given to its uid under root)."""
    root = tmp_path / "ws"
    root.mkdir(mode=0o700)
    prepare_workspace(root)
    return root


def settings_in(base: Path) -> Settings:
    """A test's daemon settings: a home under ``base``, no demo agent, this worker's
    own range of sandbox uids (the ``settings`` fixture; a module-scoped runtime's)."""
    return Settings(home=base / "home", demo_agent=False, shutdown_grace_s=2.0,
                    sandbox=SandboxConfig(uid_base=WORKER_UID_BASE, uid_count=20_000))


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return settings_in(tmp_path)


def _worker_uid_base() -> int:
    """Each xdist worker's own range of sandbox uids. Every test's store gives uids
    from the range's start, and deleting an agent sweeps its uid on the host (kills
    its processes: agentd.sandbox.reclaim): two workers sharing a range killed each
    other's shells and browsers (a flake seen twice in CI)."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    index = int(worker[2:]) if worker.startswith("gw") and worker[2:].isdigit() else 0
    return 700_000 + index * 20_000  # (above the fixed ranges some tests choose)


WORKER_UID_BASE = _worker_uid_base()


def worker_uid(n: int) -> tuple[int, int]:
    """A fixed sandbox (uid, gid) of this worker's own for tests that choose one (``n``
    from 0 to 9), at the end of its range where no test's store gives one: a uid two
    workers share shares its process limit (a holder on one worker let another's
    sandbox start, or starved it)."""
    assert 0 <= n < 10
    uid = WORKER_UID_BASE + 19_980 + n
    return uid, uid


def _schema_url(schema: str) -> str:
    assert PG_URL
    sep = "&" if "?" in PG_URL else "?"
    return f"{PG_URL}{sep}options={quote(f'-csearch_path={schema}')}"


#: This worker's migrated schema as SQL (tables, indexes, functions and the rows the
#: migrations write), its name replaced by :data:`_MARK`; "" when pg_dump cannot make
#: it (then each test's schema is migrated by the store, as it would be anyway).
_template: str | None = None
_MARK = "agentd_template_schema_name"


def _migrated_schema_sql() -> str:
    """Migrate one schema with the store (in a thread: a fixture may be set up while
    an event loop runs), dump it with pg_dump, drop it."""
    global _template
    if _template is not None:
        return _template
    schema = f"tmpl_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_URL or "", autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")

    async def migrate() -> None:
        await (await open_store(_schema_url(schema))).close()

    failed: list[BaseException] = []

    def work() -> None:
        try:
            asyncio.run(migrate())
        except BaseException as exc:  # (reported by the test that needs the schema)
            failed.append(exc)

    try:
        thread = threading.Thread(target=work)
        thread.start()
        thread.join()
        dumped = subprocess.run(
            ["pg_dump", f"--dbname={PG_URL}", f"--schema={schema}", "--no-owner",
             "--no-privileges", "--inserts"], capture_output=True, text=True, timeout=120)
        # (Lines starting with a backslash are psql meta-commands: \restrict.)
        _template = ("" if dumped.returncode or failed else "\n".join(
            line for line in dumped.stdout.replace(schema, _MARK).splitlines()
            if not line.startswith("\\")))
    except (OSError, subprocess.SubprocessError):
        _template = ""
    finally:
        with psycopg.connect(PG_URL or "", autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")
    return _template


def pgvector_available(url: str) -> bool:
    """Whether the PostgreSQL server at ``url`` has the pgvector extension to create
    (scripts/install-pgvector.sh, which .ci/run runs; optional elsewhere)."""
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'vector'"
                            ).fetchone() is not None


@pytest.fixture
def pg_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh PostgreSQL schema per test (skipped without AGENTD_TEST_POSTGRES_URL),
    already migrated: a copy of a schema the store migrated once per worker (about 0.1 s
    instead of 0.4-1 s). A test that builds an older schema itself asks for an empty
    one with ``@pytest.mark.empty_schema``."""
    if not PG_URL:
        pytest.skip("AGENTD_TEST_POSTGRES_URL is not set")
    schema = f"t_{uuid.uuid4().hex[:12]}"
    empty = request.node.get_closest_marker("empty_schema") is not None
    template = "" if empty else _migrated_schema_sql()
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        if template:
            conn.execute(template.replace(_MARK, schema))  # (CREATE SCHEMA is in it)
        else:
            conn.execute(f"CREATE SCHEMA {schema}")
    yield _schema_url(schema)
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA {schema} CASCADE")


#: This worker's migrated SQLite database, copied for each test (see store_url).
_sqlite_template: Path | None = None


def _migrated_sqlite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A database the store migrated, once per worker (in a thread: a fixture may be
    set up while an event loop runs)."""
    global _sqlite_template
    if _sqlite_template is None:
        path = tmp_path_factory.mktemp("sqlite-template") / "agentd.db"

        async def migrate() -> None:
            await (await open_store(f"sqlite:///{path}")).close()

        thread = threading.Thread(target=asyncio.run, args=(migrate(),))
        thread.start()
        thread.join()
        assert path.exists(), "the template database was not made"
        _sqlite_template = path
    return _sqlite_template


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh database per test, already migrated: on SQLite a copy of a file the store
    migrated once per worker (migrating each took about 10 ms of CPU, in most tests of
    the suite), on PostgreSQL a copy of a schema (pg_url). ``@pytest.mark.empty_schema``
    asks for an empty one."""
    if request.param == "sqlite":
        path = tmp_path / "agentd.db"
        if request.node.get_closest_marker("empty_schema") is None:
            shutil.copyfile(_migrated_sqlite(request.getfixturevalue("tmp_path_factory")),
                            path)
        return f"sqlite:///{path}"
    url: str = request.getfixturevalue("pg_url")
    return url


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[Store]:
    st = await open_store(store_url)
    yield st
    await st.close()


@pytest.fixture
async def runtime(settings: Settings, store_url: str) -> AsyncIterator[Runtime]:
    settings.database_url = store_url
    rt = await Runtime.open(settings)
    yield rt
    await rt.close()


@pytest.fixture
def systems(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The system prompt of every scripted model call, in order."""
    from agentd.llm.scripted import ScriptedModel

    seen: list[str] = []
    original = ScriptedModel.stream

    async def stream(self: ScriptedModel, request: Any) -> Any:
        seen.append(request.system)
        async for event in original(self, request):
            yield event

    monkeypatch.setattr(ScriptedModel, "stream", stream)
    return seen
