"""Workspace snapshots with the session: steps that change files are snapshotted in
the log; restoring or forking a session to a point puts the files back to that point."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agentd.runtime import Runtime


def _write(path: str, content: str) -> dict[str, Any]:
    return {"tool_calls": [{"name": "write_file",
                            "arguments": {"path": path, "content": content}}]}


def _files(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): p.read_text() for p in sorted(root.rglob("*"))
            if p.is_file()}


async def _turn(rt: Runtime, content: str, key: str = "k") -> None:
    sent = await rt.send("a", key, content)
    assert (await rt.wait(sent.run.id)).status == "completed"


async def test_restore_and_fork_bring_the_files_back(runtime: Runtime) -> None:
    await runtime.create_agent(name="a", model="scripted", tools=["write_file",
                                                                   "read_file"],
                               settings={"script": [
                                   _write("a.txt", "v1"), {"text": "one"},
                                   _write("a.txt", "v2"), _write("b/c.txt", "new"),
                                   {"text": "two"},
                                   {"tool_calls": [{"name": "read_file",
                                                    "arguments": {"path": "a.txt"}}]},
                                   {"text": "three"}]})
    agent = await runtime.get_agent("a")
    root = runtime.workspace_of(agent)
    await _turn(runtime, "first")
    first = await runtime.create_checkpoint("a", "k", "after-first")
    await _turn(runtime, "second")
    assert _files(root) == {"a.txt": "v2", "b/c.txt": "new"}
    await _turn(runtime, "third")  # read-only: no new snapshot
    _, session = await runtime.get_session("a", "k")
    events = await runtime.read_events(session.id)
    snaps = [e.data for e in events if e.kind == "workspace.snapshot"]
    # baseline (empty), after v1, after v2, after b/c.txt; nothing for the read step
    assert len(snaps) == 4 and len({s["ref"] for s in snaps}) == 4
    assert snaps[0]["files"] == 0 and snaps[-1]["files"] == 2

    await runtime.restore("a", "k", checkpoint=first.id)
    assert _files(root) == {"a.txt": "v1"}
    restored = (await runtime.read_events(session.id))[-1]
    assert restored.kind == "workspace.restored"
    assert restored.data["written"] == 1 and restored.data["removed"] >= 1

    # Fork from the log as it was before the restore's target moved on: seq of the
    # second run's end holds v2 and b/c.txt.
    end_of_second = max(e.seq for e in events if e.kind == "run.completed"
                        and e.seq < next(x.seq for x in events
                                         if x.kind == "message.user"
                                         and x.data["content"] == "third"))
    forked = await runtime.fork("a", "k", new_key="fork", seq=end_of_second)
    assert _files(root) == {"a.txt": "v2", "b/c.txt": "new"}
    fork_events = await runtime.read_events(forked.id)
    assert fork_events[-1].kind == "workspace.restored"

    # Back to the very start: before the first snapshot, the files were the baseline's.
    await runtime.restore("a", "k", seq=1)
    assert _files(root) == {}


async def test_agent_without_mutating_tools_takes_no_snapshots(runtime: Runtime) -> None:
    await runtime.create_agent(name="a", model="scripted", tools=["read_file"],
                               settings={"script": [
                                   {"tool_calls": [{"name": "read_file",
                                                    "arguments": {"path": "x"}}]},
                                   {"text": "ok"}]})
    await _turn(runtime, "go")
    _, session = await runtime.get_session("a", "k")
    kinds = {e.kind for e in await runtime.read_events(session.id)}
    assert "workspace.snapshot" not in kinds
    await runtime.restore("a", "k", seq=1)
    assert "workspace.restored" not in {e.kind for e in await runtime.read_events(
        session.id)}
