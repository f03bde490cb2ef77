"""Isolation across every door, as a property (issue 27, item 5).

Hypothesis draws a world (tests/isolation/_world.py: 2-4 tenants made through
``/v1/tenants``, 1-3 agents each made by the admin or by a token bound to the tenant,
each with one of every object; named tokens of every role bound to a tenant, to agent
patterns or both, beside the configuration's ``[access]`` tokens), then, for every
operation of the OpenAPI document and of the doors (tests/isolation/_ops.py), a
caller and a target (an agent, an id, a tenant, a token, or a ghost of one). Each
call's answer is checked against what the world says the caller may get
(tests/isolation/_oracle.py): a hidden target answers exactly as a missing one, and
nothing is written; a viewer's write and a call above the caller's role are 403; an
allowed read answers what the admin's does; a list holds exactly the admin's items the
caller may get. Then the live feed and the WebSocket door are driven the same way.

One app serves every example (FastAPI builds a route's machinery on its first
request: an app per example would cost a second); each example gets a runtime of its
own on a new database, put in the app's state where every route and door reads it.

``ISOLATION_EXAMPLES`` sets the number of examples (CI runs the default, derandomized:
a failure reproduces); ``ISOLATION_EXAMPLES=500`` runs it longer.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from tests.conftest import PG_URL, eventually
from tests.isolation._asgi import stream, websocket
from tests.isolation._ops import A2A_HEADERS, catalogue
from tests.isolation._oracle import Checker, calls_of, verdict
from tests.isolation._world import SETTINGS, Caller, WorldSpec, build, worlds
from tests.server._scopes import deploy, settings_for, snapshot, unchanged

from agentd.assembly import Runtime
from agentd.config import Settings
from agentd.server.app import create_app
from agentd.store import open_store

#: A store URL of its own for one example (made, then dropped).
UrlOf = contextlib.AbstractAsyncContextManager[str]
EXAMPLES = int(os.environ.get("ISOLATION_EXAMPLES", "25"))
#: Callers and targets are drawn as numbers from this seed, taken modulo what the world
#: has (one number: hypothesis shrinks the world, not 400 picks, each try a whole walk).
SEEDS = st.integers(0, 2**32 - 1)


class Daemons:
    """One app; a fresh runtime (and database) per example."""

    def __init__(self, tmp_path: Path, url: Callable[[Path], UrlOf]) -> None:
        self.tmp_path = tmp_path
        self.url = url
        self.count = 0
        self.settings = settings_for(tmp_path, f"sqlite:///{tmp_path / 'first.db'}",
                                     **SETTINGS)
        self.app: Any = None
        self.document: dict[str, Any] = {}

    @contextlib.asynccontextmanager
    async def serving(self) -> AsyncIterator[None]:
        first = await self._runtime(self.settings)
        self.app = create_app(self.settings, first)
        try:
            async with self.app.router.lifespan_context(self.app):
                async with self.client() as api:
                    admin = {"Authorization": f"Bearer {SETTINGS['tokens'][2]}"}
                    self.document = (await api.get("/openapi.json", headers=admin)).json()
                yield
        finally:
            self.app.state.runtime = first
            await first.close()

    @staticmethod
    async def _runtime(settings: Settings) -> Runtime:
        runtime = Runtime(settings, await open_store(settings.database_url))
        runtime.tools.register(deploy)
        await runtime.start()
        return runtime

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app),
                                 base_url="http://test", timeout=60)

    @contextlib.asynccontextmanager
    async def example(self) -> AsyncIterator[tuple[Runtime, httpx.AsyncClient]]:
        self.count += 1
        root = self.tmp_path / f"example-{self.count}"
        async with self.url(root) as url:
            settings = self.settings.model_copy(update={"home": root / "home",
                                                        "database_url": url})
            runtime = await self._runtime(settings)
            runtime.identity.configure_tokens(self.app.state.principals)
            self.app.state.runtime = runtime
            try:
                async with self.client() as api:
                    yield runtime, api
            finally:
                await runtime.close()


@contextlib.asynccontextmanager
async def sqlite_url(root: Path) -> AsyncIterator[str]:
    root.mkdir(parents=True)
    yield f"sqlite:///{root / 'agentd.db'}"


@contextlib.asynccontextmanager
async def postgres_url(root: Path) -> AsyncIterator[str]:
    """A schema of its own on the test server, dropped after."""
    assert PG_URL
    schema = f"iso_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    try:
        root.mkdir(parents=True)
        sep = "&" if "?" in PG_URL else "?"
        yield f"{PG_URL}{sep}options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(PG_URL, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


async def check_world(daemons: Daemons, spec: WorldSpec, seed: int) -> dict[str, int]:
    """Make the world, make every call, check every answer; how many calls got each
    verdict. A failure names the world and the seed (run it again with them)."""
    try:
        return await _check_world(daemons, spec, seed)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n-- in the world {spec}, seed {seed}") from None


async def _check_world(daemons: Daemons, spec: WorldSpec, seed: int) -> dict[str, int]:
    draw = random.Random(seed)
    async with daemons.example() as (runtime, api):
        built = await build(api, spec)
        checker = Checker(api, built)
        await checker.refresh()
        ops = catalogue(daemons.document)
        picks = [(draw.randrange(64), draw.randrange(64)) for _ in ops]
        calls = calls_of(ops, picks, built, checker.tokens)
        refused = [c for c in calls if verdict(c, built, checker.tokens) != "allowed"]
        before = await quiet(runtime)
        for call in refused:
            await checker.check(call)
        # (the answers first: a failure that names the call says more than the rows)
        assert not checker.failures, "\n".join(checker.failures)
        await unchanged(runtime, before)
        allowed = sorted((c for c in calls if c not in refused),
                         key=lambda c: (c.op.late, c.op.write))
        for call in allowed:
            await checker.check(call)
            if call.op.write and call.op.changes_world:
                await checker.refresh()
        await feed(daemons, checker)
        await sockets(daemons, checker, picks)
        await session_streams(daemons, checker, picks)
        assert not checker.failures, "\n".join(checker.failures)
        return checker.seen


async def quiet(runtime: Runtime) -> dict[str, list[str]]:
    """The store once the daemon's own work on the world is done: what it writes by
    itself after the requests that made the world is each memory entry's vector (the
    embedder loads on its first use; the seeded webhooks are disabled, their pings
    wait)."""
    async def done() -> bool:
        rows = await runtime.store.engine.read(lambda tx: tx.all(
            "SELECT count(*) FROM memory_entries WHERE embedded_with IS NULL"))
        return rows[0][0] == 0

    await eventually(done, what="the daemon's own writes")
    return await snapshot(runtime)


async def feed(daemons: Daemons, checker: Checker) -> None:
    """Every caller's live feed (``GET /v1/events``) carries the frames of exactly the
    agents it may use: each agent gets a message twice; a reader is done once it has
    seen the second run of each of its agents end (the feed is in order: everything of
    the first round reached it before)."""
    built = checker.built
    agents = sorted(built.agents)
    admin = {"Authorization": f"Bearer {built.admin.text}"}
    for agent in agents:  # (an allowed call may have paused or stopped one)
        resumed = await checker.api.post(f"/v1/agents/{agent}/resume", headers=admin)
        assert resumed.status_code == 200, resumed.text
    async with contextlib.AsyncExitStack() as stack:
        readers: list[tuple[Caller, Any, list[str]]] = []
        for caller in built.callers:
            mine = [a for a in agents if caller.may(a, built.agents[a])]
            opened = await stack.enter_async_context(stream(
                daemons.app, "/v1/events", {"Authorization": f"Bearer {caller.text}"}))
            assert opened.status == 200, (caller.label, opened.status)
            readers.append((caller, opened, mine))
        runs: dict[str, list[str]] = {a: [] for a in agents}
        for _ in range(2):
            for agent in agents:
                sent = await checker.api.post(f"/v1/agents/{agent}/sessions/feed/messages",
                                              headers=admin, json={"content": "x",
                                                                   "wait": True})
                assert sent.status_code == 200, sent.text
                runs[agent].append(sent.json()["id"])
        for caller, opened, mine in readers:
            last = {runs[a][-1] for a in mine}

            def seen_all(s: Any, last: set[str] = last) -> bool:
                ended = {f.get("run_id") for f in s.frames() if f.get("kind") ==
                         "run.completed"}
                return last <= ended

            if mine:
                await opened.read_until(seen_all)
            others = {f.get("agent") for f in opened.frames()} - set(mine)
            if others:
                checker.failures.append(f"the feed of {caller.label} carries {others}")


async def _session_stream(daemons: Daemons, name: str, token: str) -> tuple[int, Any]:
    """A session's SSE stream as ``token`` gets it: its first two events, or the
    refusal (made the same for any agent's name)."""
    async with stream(daemons.app, f"/v1/agents/{name}/sessions/chat/events",
                      {"Authorization": f"Bearer {token}"}, {"after": "0"}) as opened:
        if opened.status == 200:
            await opened.read_until(lambda s: len(s.frames()) >= 2)
        else:
            await opened.read_until(lambda s: False)  # (to its end)
    if opened.status == 200:
        return opened.status, opened.frames()[:2]
    return opened.status, opened.text.replace(name, "<X>")


async def session_streams(daemons: Daemons, checker: Checker,
                          picks: list[tuple[int, int]]) -> None:
    """A session's SSE stream (``GET .../events`` with ``Accept: text/event-stream``):
    for an agent the caller may not use, the answer for a missing agent; for one it
    may, the admin's."""
    built = checker.built
    agents = sorted(built.seeded)
    for n, caller in enumerate(built.callers):
        c, t = picks[(n * 7) % len(picks)]
        target = agents[(c + t + n) % len(agents)]
        out = await _session_stream(daemons, target, caller.text)
        may = target in built.agents and caller.may(target, built.agents[target])
        expected = await _session_stream(daemons, target if may else "nobody",
                                          built.admin.text if may else caller.text)
        if out != expected:
            checker.failures.append(f"SSE: {caller.label} on {target} (may use it: "
                                    f"{may}): {out} vs {expected}")


async def sockets(daemons: Daemons, checker: Checker, picks: list[tuple[int, int]]
                  ) -> None:
    """The WebSocket door: a socket to a session of an agent the caller may not use
    closes as one to a missing agent; on a socket of its own agent, ``decide`` and
    ``cancel`` of another agent's approval or run answer as for missing ones."""
    built = checker.built
    agents = sorted(built.seeded)
    for n, caller in enumerate(built.callers):
        c, t = picks[n % len(picks)]
        target = agents[(c + t) % len(agents)]
        answers = []
        for name in (target, "nobody"):
            async with websocket(daemons.app, f"/v1/agents/{name}/sessions/chat/ws",
                                 {"Authorization": f"Bearer {caller.text}"}) as socket:
                first = None
                if socket.accepted:
                    # A refused socket says why first; an open one answers the ping.
                    await socket.send({"type": "ping", "id": "p"})
                    first = await socket.receive()
                answers.append((socket.accepted, socket.close_code, str(first).replace(
                    name, "<X>") if first and first.get("type") == "error" else None))
        may = target in built.agents and caller.may(target, built.agents[target])
        if caller.role == "viewer":
            if answers[0][0] or answers[0][1] is None:
                checker.failures.append(f"WS: a viewer {caller.label}'s socket opened")
            continue
        if not may and answers[0] != answers[1]:
            checker.failures.append(f"WS: {caller.label} on {target}: {answers[0]} vs "
                                    f"a missing agent: {answers[1]}")
        if may and answers[0][2] is not None:
            checker.failures.append(f"WS: {caller.label} refused on its {target}: "
                                    f"{answers[0]}")
        if may and target in built.seeded:
            await _frames(daemons, checker, caller, target, t)


async def _frames(daemons: Daemons, checker: Checker, caller: Caller, own: str,
                  drawn: int) -> None:
    built = checker.built
    others = sorted(set(built.seeded) - {own})
    if not others:
        return
    other = built.seeded[others[drawn % len(others)]]
    hidden = not caller.may(other.name, built.agents.get(other.name))
    frames = [("decide", {"approval_id": other.ids["approval_id"]},
               {"approval_id": "ap_0ghost000000"}),
              ("cancel", {"run_id": other.ids["run_id"]}, {"run_id": "r_0ghost00000000"})]
    async with websocket(daemons.app, f"/v1/agents/{own}/sessions/ws-own/ws",
                         {"Authorization": f"Bearer {caller.text}"}) as socket:
        assert socket.accepted
        for kind, theirs, ghost in frames:
            answers = []
            for body in (theirs, ghost):
                await socket.send({"type": kind, "id": "f", "action": "deny", **body}
                                  if kind == "decide" else {"type": kind, "id": "f", **body})
                answer = await socket.receive()
                text = str(answer)
                for value in (*theirs.values(), *ghost.values()):
                    text = text.replace(value, "<X>")
                answers.append(text)
            if answers[0] != answers[1] and hidden:
                checker.failures.append(f"WS {kind} on {own} by {caller.label} about "
                                        f"{other.name}'s: {answers[0]} vs {answers[1]}")
            if kind == "decide" and not hidden:
                break  # (a decision of its own scope is a real one)
    if not hidden:
        return
    # Another agent's run named through an agent of the caller's own: an A2A task, an
    # OpenAI response to continue.
    headers = {"Authorization": f"Bearer {caller.text}", **A2A_HEADERS}
    asks = (("A2A GetTask", f"/a2a/{own}", lambda run: {
                "jsonrpc": "2.0", "id": 3, "method": "GetTask", "params": {"id": run}}),
            ("OpenAI previous_response_id", "/v1/responses", lambda run: {
                "model": own, "input": "hi", "previous_response_id": "resp_" + run}))
    for kind, path, body in asks:
        answers = []
        for run in (other.ids["run_id"], "r_0ghost00000000"):
            out = await checker.api.post(path, headers=headers, json=body(run))
            answers.append((out.status_code, out.text.replace(run, "<X>")))
        if answers[0] != answers[1]:
            checker.failures.append(f"{kind} through {own} by {caller.label} about "
                                    f"{other.name}'s run: {answers[0]} vs {answers[1]}")


#: ``ISOLATION_SHRINK=0``: report the first failing example as found (while working
#: on a fix: a world is quick to shrink, but each try runs the whole walk).
PHASES = [p for p in Phase if p != Phase.shrink or os.environ.get("ISOLATION_SHRINK")
          != "0"]


def run_property(tmp_path: Path, url: Callable[[Path], Any], examples: int) -> None:
    """Draw ``examples`` worlds and check each (on a loop of its own: hypothesis calls
    the example as a plain function, the loop runs the daemon and the calls)."""
    daemons = Daemons(tmp_path, url)
    seen: dict[str, int] = {}
    with asyncio.Runner() as runner:
        stack = contextlib.AsyncExitStack()
        runner.run(stack.enter_async_context(daemons.serving()))
        try:
            @settings(max_examples=examples, deadline=None, derandomize=True,
                      database=None, suppress_health_check=list(HealthCheck),
                      phases=PHASES, report_multiple_bugs=False)
            @given(spec=worlds(), seed=SEEDS)
            def example(spec: WorldSpec, seed: int) -> None:
                for kind, n in runner.run(check_world(daemons, spec, seed)).items():
                    seen[kind] = seen.get(kind, 0) + n

            example()
        finally:
            runner.run(stack.aclose())
    # Every kind of answer came up (a walk that only met allowed calls proves nothing).
    assert set(seen) == {"viewer", "hidden", "role", "allowed"}, seen


def test_no_call_crosses_a_tenant_or_a_scope(tmp_path: Path) -> None:
    run_property(tmp_path, sqlite_url, EXAMPLES)


@pytest.mark.postgres
@pytest.mark.skipif(not PG_URL, reason="AGENTD_TEST_POSTGRES_URL is not set")
def test_no_call_crosses_a_tenant_or_a_scope_postgres(tmp_path: Path) -> None:
    run_property(tmp_path, postgres_url, max(3, EXAMPLES // 5))
