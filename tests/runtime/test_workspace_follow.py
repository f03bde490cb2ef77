"""Workspaces that follow their runs: two nodes (two runtimes in this process, each with
its own home, so its own workspaces and snapshot store) on one PostgreSQL. A run on
either node finds the agent's files as last committed on any node, with their taint;
a damaged or missing snapshot fails the run and changes nothing; and a run accepted
by a node that does not hold the agent's files is offered to the one that does.

(tests/e2e/test_workspace_failover.py kills a real node process mid-run.)"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import eventually

from agentd.assembly import Runtime
from agentd.config import SandboxConfig, Settings
from agentd.store import open_store
from agentd.store.records import RunRecord

pytestmark = pytest.mark.postgres


def _write(path: str, content: str) -> dict[str, Any]:
    return {"tool_calls": [{"name": "write_file",
                            "arguments": {"path": path, "content": content}}]}


def _read(path: str) -> dict[str, Any]:
    return {"tool_calls": [{"name": "read_file", "arguments": {"path": path}}]}


def _files(root: Path) -> dict[str, str]:
    if not root.is_dir():
        return {}
    return {str(p.relative_to(root)): p.read_text() for p in sorted(root.rglob("*"))
            if p.is_file()}


@asynccontextmanager
async def _node(settings: Settings, tmp_path: Path, pg_url: str, name: str,
                **sandbox: Any) -> AsyncIterator[Runtime]:
    config = settings.sandbox.model_copy(update=sandbox)
    rt = await Runtime.open(settings.model_copy(update={
        "home": tmp_path / name, "database_url": pg_url, "node_id": name,
        "sandbox": SandboxConfig.model_validate(config.model_dump())}))
    try:
        yield rt
    finally:
        await rt.close()


async def _turn(rt: Runtime, content: str, key: str = "k") -> RunRecord:
    sent = await rt.send("a", key, content)
    return await rt.wait(sent.run.id)


async def _workspace(rt: Runtime) -> Path:
    return rt.workspace_of(await rt.get_agent("a"))


async def _events(rt: Runtime, key: str = "k") -> list[Any]:
    _, session = await rt.get_session("a", key)
    return await rt.read_events(session.id)


SCRIPT = [_write("a.txt", "one"), {"text": "wrote a"},
          _read("a.txt"), _write("b.txt", "two"), {"text": "wrote b"},
          _read("b.txt"), {"text": "read b"}]


async def test_a_run_on_another_node_finds_the_files_where_they_were_committed(
        settings: Settings, tmp_path: Path, pg_url: str) -> None:
    async with _node(settings, tmp_path, pg_url, "n1", affinity_s=0.0) as n1, \
            _node(settings, tmp_path, pg_url, "n2", affinity_s=0.0) as n2:
        assert n1.workspaces is not None and n1.workspaces.shared is not None
        assert n1.workspaces.shared.kind == "store"  # (auto, on PostgreSQL)
        await n1.create_agent(name="a", model="scripted",
                              tools=["write_file", "read_file"],
                              settings={"script": SCRIPT})
        assert (await _turn(n1, "first")).status == "completed"
        assert _files(await _workspace(n1)) == {"a.txt": "one"}
        assert _files(await _workspace(n2)) == {}

        # Node 2 runs the next turn: the files come with it before its first step.
        run = await _turn(n2, "second")
        assert (run.status, run.lease_owner) == ("completed", "n2")
        assert _files(await _workspace(n2)) == {"a.txt": "one", "b.txt": "two"}
        events = await _events(n2)
        mine = [e for e in events if e.run_id == run.id]
        restored = [e for e in mine if e.kind == "workspace.restored"]
        assert len(restored) == 1 and restored[0].data["reason"] == "followed"
        assert restored[0].data["node"] == "n1" and restored[0].data["written"] == 1
        # The read of a.txt in that run saw the content node 1 committed.
        reads = [e for e in mine if e.kind == "tool.finished" and e.data["name"] == "read_file"]
        assert "one" in reads[0].data["output"]
        # Committed before the run's steps: nothing was tainted by the move.
        assert not any(e.data.get("tainted") for e in mine if e.kind == "workspace.snapshot")

        # Back on node 1: its copy is behind (no b.txt) until its next run.
        assert _files(await _workspace(n1)) == {"a.txt": "one"}
        run = await _turn(n1, "third")
        assert run.status == "completed"
        assert _files(await _workspace(n1)) == {"a.txt": "one", "b.txt": "two"}
        assert n1.workspaces.followed == 1 and n2.workspaces is not None
        assert n2.workspaces.followed == 1

        # The collector (every node's, hourly) keeps what the logs refer to.
        assert await n2.workspaces.collect(await n2.store.snapshot_refs()) == 0

        # A run on the node that committed last restores nothing.
        await n1.update_agent("a", {"settings": {"script": [_read("a.txt"),
                                                            {"text": "same"}]}})
        run = await _turn(n1, "fourth")
        assert not [e for e in await _events(n1) if e.run_id == run.id
                    and e.kind == "workspace.restored"]
        assert n1.workspaces.followed == 1


async def test_the_taint_of_the_files_follows_them_to_another_node(
        settings: Settings, tmp_path: Path, pg_url: str) -> None:
    async with _node(settings, tmp_path, pg_url, "n1", affinity_s=0.0) as n1, \
            _node(settings, tmp_path, pg_url, "n2", affinity_s=0.0) as n2:
        await n1.create_agent(name="a", model="scripted",
                              tools=["write_file", "read_file"],
                              settings={"script": [_write("a.txt", "one"), {"text": "ok"},
                                                   _read("x.txt"), {"text": "ok"}]})
        assert (await _turn(n1, "first")).status == "completed"
        # Someone writes into node 1's copy behind the agent's back: the next check
        # there taints the session and the files.
        (await _workspace(n1) / "x.txt").write_text("from outside")
        assert (await _turn(n1, "second")).status == "completed"
        tainted = [e for e in await _events(n1) if e.kind == "workspace.snapshot"
                   and e.data.get("tainted")]
        assert tainted, "node 1 did not see the change from outside"

        # A clean session on node 2: its files come from node 1 and so does their
        # taint; the session is tainted before any of its calls is judged.
        await n2.update_agent("a", {"settings": {"script": [_read("x.txt"),
                                                            {"text": "read"}]}})
        run = await _turn(n2, "third", key="other")
        assert run.status == "completed"
        assert _files(await _workspace(n2))["x.txt"] == "from outside"
        events = await _events(n2, "other")
        assert [e.data["reason"] for e in events if e.kind == "workspace.restored"] == [
            "followed"]
        marked = [e for e in events if e.kind == "workspace.snapshot"]
        assert marked and "outside the agent's tools" in marked[0].data["tainted"]


async def _break(pg_url: str, what: str) -> str:
    """Damage (or remove) the largest file content the agent's last snapshot holds in
    the shared store; its digest."""
    store = await open_store(pg_url)
    try:
        def op(tx: Any) -> str:
            digest = str(tx.one("SELECT digest FROM snapshot_objects WHERE manifest = 0 "
                                "ORDER BY size DESC LIMIT 1")[0])
            if what == "missing":
                tx.execute("DELETE FROM snapshot_objects WHERE digest = ?", (digest,))
                tx.execute("DELETE FROM snapshot_chunks WHERE digest = ?", (digest,))
            else:
                tx.execute("UPDATE snapshot_chunks SET data = ? WHERE digest = ? AND n = 0",
                           (b"not what was stored", digest))
            return digest

        return await store.engine.write(op)
    finally:
        await store.close()


@pytest.mark.parametrize("what", ["missing", "damaged"])
async def test_a_broken_snapshot_fails_the_run_and_changes_nothing(
        settings: Settings, tmp_path: Path, pg_url: str, what: str) -> None:
    async with _node(settings, tmp_path, pg_url, "n1", affinity_s=0.0) as n1, \
            _node(settings, tmp_path, pg_url, "n2", affinity_s=0.0) as n2:
        await n1.create_agent(name="a", model="scripted",
                              tools=["write_file", "read_file"],
                              settings={"script": [_write("a.txt", "x" * 5000),
                                                   {"text": "ok"}]})
        assert (await _turn(n1, "first")).status == "completed"
        ws2 = await _workspace(n2)
        ws2.mkdir(parents=True)
        (ws2 / "mine.txt").write_text("node 2's copy")
        digest = await _break(pg_url, what)
        before = await _events(n2)

        run = await _turn(n2, "second")
        assert run.status == "failed"
        assert run.error is not None and run.error["code"] == "workspace_unavailable"
        assert run.error["details"]["cause"] == "snapshot_corrupt"
        assert digest in run.error["message"]
        # Nothing of node 2's copy was touched; nothing in the log was lost.
        assert _files(ws2) == {"mine.txt": "node 2's copy"}
        after = await _events(n2)
        assert [(e.seq, e.kind) for e in after[:len(before)]] == [
            (e.seq, e.kind) for e in before]
        assert [e.kind for e in after[len(before):]] == [
            "message.user", "run.queued", "run.failed"]
        # Node 1 holds the files: its runs go on, and its next snapshot of them puts
        # back in the shared store what was missing or damaged (a damaged blob was
        # removed when found); then node 2 can run the agent.
        assert (await _turn(n1, "third")).status == "completed"
        run = await _turn(n2, "fourth")
        assert run.status == "completed", run.error
        assert _files(ws2) == {"a.txt": "x" * 5000}


async def test_a_run_goes_to_the_node_holding_the_files(
        settings: Settings, tmp_path: Path, pg_url: str) -> None:
    async with _node(settings, tmp_path, pg_url, "n1", affinity_s=30.0) as n1, \
            _node(settings, tmp_path, pg_url, "n2", affinity_s=30.0) as n2:
        await n1.create_agent(name="a", model="scripted",
                              tools=["write_file", "read_file"],
                              settings={"script": [_write("a.txt", "one"),
                                                   {"text": "ok"}]})
        assert (await _turn(n1, "first")).status == "completed"
        # Sent to node 2, run by node 1 (offered at once: no need to wait the window).
        for key in ("k", "new session"):
            run = await _turn(n2, "again", key=key)
            assert (run.status, run.lease_owner) == ("completed", "n1")
        assert n1.affinity.taken == 2 and n2.affinity.offered == 2
        assert _files(await _workspace(n2)) == {}
        assert n2.workspaces is not None and n2.workspaces.followed == 0
        # A run started with its message (a caller waiting on it) is not started on
        # node 2 either.
        sent = await n2.send("a", "k", "waited", start=True)
        run = await n2.wait(sent.run.id)
        assert (run.status, run.lease_owner) == ("completed", "n1")


async def test_an_offer_nobody_takes_runs_where_it_was_accepted(
        settings: Settings, tmp_path: Path, pg_url: str) -> None:
    async with _node(settings, tmp_path, pg_url, "n2", affinity_s=0.2) as n2:
        async with _node(settings, tmp_path, pg_url, "n1", affinity_s=0.2) as n1:
            await n1.create_agent(name="a", model="scripted",
                                  tools=["write_file", "read_file"],
                                  settings={"script": [_write("a.txt", "one"),
                                                       {"text": "ok"}]})
            assert (await _turn(n1, "first")).status == "completed"
        # Node 1 is gone: node 2 offers the run to it, hears nothing, runs it itself.
        run = await _turn(n2, "second")
        assert (run.status, run.lease_owner) == ("completed", "n2")
        assert n2.affinity.offered == 1 and n2.affinity.fell_back == 1
        assert _files(await _workspace(n2)) == {"a.txt": "one"}
        # Now node 2 holds them: it does not offer the next run away.
        assert (await _turn(n2, "third")).status == "completed"
        assert n2.affinity.offered == 1
        await eventually(lambda: not n2.supervisor.busy)


async def test_tenants_neither_share_nor_read_each_others_snapshots(
        settings: Settings, tmp_path: Path, pg_url: str) -> None:
    """The same bytes written by two tenants' agents are stored once per tenant (a
    tenant uploading what another holds is charged the upload, and so learns nothing
    of it), and an agent cannot list another agent's snapshot, even one another node
    took, whose manifest this node never held."""
    import hashlib

    from agentd.errors import NotFound

    async with _node(settings, tmp_path, pg_url, "n1", affinity_s=0.0) as n1, \
            _node(settings, tmp_path, pg_url, "n2", affinity_s=0.0) as n2:
        for name, tenant in (("one-a", "one"), ("two-b", "two")):
            # The same content under another name: one object, two snapshots.
            await n1.create_agent(name=name, model="scripted", tools=["write_file"],
                                  settings={"tenant": tenant, "script": [
                                      _write(f"{name}.txt", "the same secret"),
                                      {"text": "ok"}]})
            sent = await n1.send(name, "k", "write")
            assert (await n1.wait(sent.run.id)).status == "completed"
        digest = hashlib.sha256(b"the same secret").hexdigest()
        rows = await n1.store.engine.read(lambda tx: tx.all(
            "SELECT scope FROM snapshot_objects WHERE digest = ? ORDER BY scope", (digest,)))
        assert [r[0] for r in rows] == ["one", "two"]

        refs = {}
        for name in ("one-a", "two-b"):
            _, session = await n1.get_session(name, "k")
            refs[name] = [e.data["ref"] for e in await n1.read_events(session.id)
                          if e.kind == "workspace.snapshot"][-1]
        # Its own snapshot, listed on the node that never held it.
        assert n2.workspaces is not None
        assert not n2.workspaces.store.has_object(refs["one-a"])
        found = await n2.snapshot_changes("one-a", refs["one-a"])
        assert [c["path"] for c in found["changes"]] == ["one-a.txt"]
        # Another agent's (another tenant's): not found, on either node.
        for rt in (n1, n2):
            with pytest.raises(NotFound) as caught:
                await rt.snapshot_changes("two-b", refs["one-a"])
            assert caught.value.code == "snapshot_not_found"
