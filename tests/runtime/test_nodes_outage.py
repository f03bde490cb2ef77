"""A node that loses its database (issue 33, "Bad input"): it stops acting on its runs
within its lease, and they are resumed (by it, once the database answers again, or by
another node) from their last committed step, each completed exactly once. And one
daemon per node id on a database (agentd.store.nodes).

Two runtimes share one PostgreSQL database in this process. Node A reaches it through
a TCP proxy the test can hold (a network that stops carrying packets: nothing is
refused, everything waits), or has its server connections ended
(``pg_terminate_backend``: a database restart, an operator's kill)."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from tests.conftest import eventually, under_way

from agentd.assembly import Runtime
from agentd.config import Settings
from agentd.store import Store
from agentd.store._postgres import PostgresEngine
from agentd.store.nodes import NodeClaim, NodeIdInUse, live_nodes
from agentd.store.records import EventRecord
from agentd.testing import FakeClock
from agentd.tools import tool

pytestmark = pytest.mark.postgres

#: In node ids: the tests end server connections by their application name, on a
#: server other test runs may share.
RUN = uuid.uuid4().hex[:8]


class HeldProxy:
    """A TCP proxy to PostgreSQL that forwards nothing while held (bytes wait, no
    connection is refused or closed), like a network cut that heals."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.flowing = asyncio.Event()
        self.flowing.set()
        self.server: asyncio.Server | None = None
        self.port = 0
        self._pumps: set[asyncio.Task[None]] = set()

    async def start(self) -> HeldProxy:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
        for pump in self._pumps:
            pump.cancel()
        await asyncio.gather(*self._pumps, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
                     ) -> None:
        await self.flowing.wait()
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        for pump in (self._pump(reader, up_writer), self._pump(up_reader, writer)):
            task = asyncio.create_task(pump)
            self._pumps.add(task)
            task.add_done_callback(self._pumps.discard)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
                    ) -> None:
        try:
            while data := await reader.read(65536):
                await self.flowing.wait()
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.close()


def _through(url: str, port: int) -> str:
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)
    host = f"127.0.0.1:{port}"
    return urlunsplit(parts._replace(netloc=f"{netloc[0]}@{host}" if len(netloc) == 2
                                     else host))


@pytest.fixture
async def proxy(pg_url: str) -> AsyncIterator[HeldProxy]:
    parts = urlsplit(pg_url)
    held = await HeldProxy(parts.hostname or "127.0.0.1", parts.port or 5432).start()
    try:
        yield held
    finally:
        held.flowing.set()
        await held.close()


async def _node(settings: Settings, url: str, node_id: str, tmp: Path, **more: object
                ) -> Runtime:
    return await Runtime.open(settings.model_copy(update={
        "home": tmp / node_id, "database_url": url, "node_id": node_id, **more}))


#: A tool step, then a model call long enough to cut the database off during it.
SLOW_SECOND_STEP = {"script": [
    {"tool_calls": [{"name": "calculator", "arguments": {"expression": "6*7"}}]},
    {"text": "done", "delay_ms": 2500}]}


def _steps(events: list[EventRecord]) -> list[str]:
    return [e.kind for e in events]


async def _tool_done(rt: Runtime, session_id: str) -> bool:
    return any(e.kind == "tool.finished" for e in await rt.read_events(session_id))


async def test_a_node_cut_off_from_the_database_stops_and_another_finishes_its_run(
        settings: Settings, pg_url: str, proxy: HeldProxy, tmp_path: Path) -> None:
    """Node A's database stops answering mid-run (held, not refused). Before its
    lease can expire A stops the run (writing nothing); B takes it over once it has
    expired and completes it. When the network heals, what A had under way lands
    nowhere: the run has one end, its steps once each, its last owner B."""
    name_a, name_b = f"cut-A-{RUN}", f"cut-B-{RUN}"
    a = await _node(settings, _through(pg_url, proxy.port), name_a, tmp_path,
                    lease_ttl_s=2.0)
    b = await _node(settings, pg_url, name_b, tmp_path, lease_ttl_s=2.0)
    try:
        await a.create_agent(name="w", tools=["calculator"], settings=SLOW_SECOND_STEP)
        sent = await a.send("w", "k", "go")
        await eventually(lambda: _tool_done(a, sent.session.id),
                         what="the tool step committed on A")
        await under_way(a, sent.run.id, in_model=True)
        proxy.flowing.clear()  # the cut
        await eventually(lambda: a.leases.stopped_cut_off == 1,
                         what="A stopping its run, cut off", within=30)
        run = await asyncio.wait_for(b.wait(sent.run.id), 60)
        assert (run.status, run.output, run.lease_owner) == ("completed", "done", name_b)
        proxy.flowing.set()  # healed
        await a.supervisor.idle()
        await a.housekeeper.run("renew")  # A renews nothing of B's
        events = [e for e in await b.read_events(sent.session.id)
                  if e.run_id == sent.run.id]
        kinds = _steps(events)
        assert kinds.count("run.completed") == 1 and kinds[-1] == "run.completed"
        assert kinds.count("tool.finished") == 1
        assert [e.data["previous_owner"] for e in events
                if e.kind == "run.resumed"] == [name_a]
        assert [e.seq for e in events] == sorted({e.seq for e in events})
        stored = await b.store.get_run(sent.run.id)
        assert (stored.status, stored.lease_owner) == ("completed", name_b)
    finally:
        proxy.flowing.set()
        await a.close()
        await b.close()


async def test_a_node_whose_connections_are_ended_resumes_its_run(
        settings: Settings, pg_url: str, tmp_path: Path) -> None:
    """Every server connection of node A is ended by the server in the very
    transaction that commits a tool's outcome (a database restart at the worst moment),
    so that commit fails. The run is not failed for it: A stops it, having written
    nothing, and resumes it from its last committed step once the store answers (the
    tool, idempotent, runs again), completing once.

    The connections are ended from inside that transaction (a trigger on the log,
    armed once by a sequence, which no rollback undoes) rather than by the tool: A's
    background work (its lease and liveness keepers) could otherwise meet the ended
    connection first and have the pool replace it, and the commit would succeed."""
    runs: list[int] = []

    @tool(idempotent=True)
    def restart_database() -> str:
        """Counts its runs (the database restarts as its outcome is committed)."""
        runs.append(1)
        return "restarted"

    name = f"end-A-{RUN}"
    store = Store(PostgresEngine(pg_url, pool_max=1, application_name=f"agentd {name}"))
    await store.open()
    with psycopg.connect(pg_url, autocommit=True) as admin:
        admin.execute("CREATE SEQUENCE ended_once")
        admin.execute(f"""
            CREATE FUNCTION end_node_a() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                IF NEW.kind = 'tool.finished' AND nextval('ended_once') = 1 THEN
                    PERFORM pg_terminate_backend(pid) FROM pg_stat_activity
                     WHERE application_name = 'agentd {name}'
                       AND pid <> pg_backend_pid();
                    PERFORM pg_terminate_backend(pg_backend_pid());
                    PERFORM pg_sleep(5);  -- (ended while it waits)
                END IF;
                RETURN NEW;
            END $$""")
        admin.execute("CREATE TRIGGER end_node_a BEFORE INSERT ON events "
                      "FOR EACH ROW EXECUTE FUNCTION end_node_a()")
    a = Runtime(settings.model_copy(update={"home": tmp_path / "A", "database_url": pg_url,
                                            "node_id": name, "lease_ttl_s": 1.0}), store)
    a.tools.register(restart_database)
    await a.start()
    try:
        await a.create_agent(name="w", tools=["restart_database"], settings={"script": [
            {"tool_calls": [{"name": "restart_database", "arguments": {}}]},
            {"text": "done"}]})
        sent = await a.send("w", "k", "go")
        run = await asyncio.wait_for(a.wait(sent.run.id), 60)
        with psycopg.connect(pg_url, autocommit=True) as admin:
            row = admin.execute("SELECT last_value FROM ended_once").fetchone()
        assert row is not None and row[0] >= 1  # (the trigger fired: the commit failed)
        assert (run.status, run.output) == ("completed", "done"), run.error
        assert len(runs) == 2  # (once before the failed commit, once on resume)
        events = [e for e in await a.read_events(sent.session.id)
                  if e.run_id == sent.run.id]
        kinds = _steps(events)
        assert kinds.count("run.completed") == 1 and "run.failed" not in kinds
        assert kinds.count("tool.finished") == 1 and "run.resumed" in kinds
    finally:
        await a.close()


# -- one daemon per node id ---------------------------------------------------------------


async def test_a_second_daemon_under_a_node_id_in_use_is_refused(
        settings: Settings, pg_url: str, tmp_path: Path) -> None:
    first = await _node(settings, pg_url, "same", tmp_path)
    try:
        with pytest.raises(NodeIdInUse) as refused:
            await _node(settings, pg_url, "same", tmp_path / "elsewhere")
        assert "node id 'same' is in use by another agentd daemon" in refused.value.message
        assert "agentd node same" in refused.value.message  # (who holds it)
        assert await live_nodes(first.store.engine, ["same", "other"]) == {"same"}
        # The first daemon works on.
        await first.create_agent(name="a", model="scripted")
        assert (await first.wait((await first.send("a", "k", "hi")).run.id)).output
    finally:
        await first.close()
    # Its name is free once it stops.
    again = await _node(settings, pg_url, "same", tmp_path / "elsewhere")
    await again.close()


async def test_a_node_whose_id_was_taken_while_it_was_cut_off_stops(
        settings: Settings, pg_url: str, tmp_path: Path) -> None:
    """Node A loses its connection; another daemon starts under its id meanwhile.
    When A notices, it must not go on under a name another daemon's runs carry: it
    stops accepting, stops its runs without writing, and shuts down."""
    clock = FakeClock()  # (A checks its node id only when the test moves time)
    a = await Runtime.open(settings.model_copy(update={
        "home": tmp_path / "A", "database_url": pg_url, "node_id": f"taken-A-{RUN}",
        "lease_ttl_s": 3.0}), clock=clock)
    stopped = asyncio.Event()
    a.on_fatal = stopped.set
    usurper = NodeClaim(pg_url, f"taken-A-{RUN}")
    try:
        await a.create_agent(name="w", settings={"script": [{"text": "x",
                                                             "delay_ms": 60_000}]})
        sent = await a.send("w", "k", "go")
        await under_way(a, sent.run.id, in_model=True)
        with psycopg.connect(pg_url, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE "
                          f"application_name = 'agentd node taken-A-{RUN}'")
        await usurper.acquire()
        await clock.advance(1.0)  # A's next check
        await asyncio.wait_for(stopped.wait(), 30)
        assert not a.accepting
        await a.supervisor.idle()
        assert a.supervisor.executors() == []
        # Nothing of the run was written by A after that: it is still under way in the
        # store, its lease A's (the other daemon's now), and its log ends at its start.
        run = await a.store.get_run(sent.run.id)
        assert run.status == "running"
        kinds = _steps(await a.read_events(sent.session.id))
        assert kinds[-1] == "run.started" and "run.parked" not in kinds
    finally:
        await usurper.release()
        await a.close()


async def test_a_node_takes_its_id_back_from_its_own_lost_connection(pg_url: str) -> None:
    """A node cut off long enough to drop its connection, while the server still holds
    it (and the lock): when it reconnects it ends that connection and takes its id
    back, rather than refusing itself. Another daemon's connection is never ended."""
    name = f"back-{RUN}"
    before = NodeClaim(pg_url, name)
    await before.acquire()
    other = NodeClaim(pg_url, name)  # another daemon: refused, the holder untouched
    with pytest.raises(NodeIdInUse):
        await other.acquire()
    same = NodeClaim(pg_url, name)
    same._pid = before._pid  # (the same daemon, after losing that connection)
    try:
        await same.acquire()
        assert same.held
        # The old connection was ended: as a holder, it finds the id taken.
        assert not await before.keep()
    finally:
        await before.release()
        await same.release()
