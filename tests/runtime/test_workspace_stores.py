"""Where snapshots are kept (``[sandbox] snapshot_store``): the settings and what each
choice means for a run on another node. A shared directory through a real runtime on
SQLite (two daemons' homes, one after the other on the same database); the database
store across live nodes is tests/runtime/test_workspace_follow.py's (PostgreSQL)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from agentd.assembly import Runtime
from agentd.config import SandboxConfig, Settings
from agentd.sandbox.snapshot_objects import DirObjects


def test_the_snapshot_store_settings_are_checked() -> None:
    assert SandboxConfig().snapshots_shared("postgresql") == "store"
    assert SandboxConfig().snapshots_shared("sqlite") == "local"
    assert SandboxConfig(snapshot_store="local").snapshots_shared("postgresql") == "local"
    assert SandboxConfig(snapshot_store="path", snapshot_path=Path("/mnt/snapshots")
                         ).snapshots_shared("postgresql") == "path"
    with pytest.raises(ValidationError, match=r"needs sandbox\.snapshot_path"):
        SandboxConfig(snapshot_store="path")
    with pytest.raises(ValidationError, match="absolute path"):
        SandboxConfig(snapshot_store="path", snapshot_path=Path("relative/dir"))
    with pytest.raises(ValidationError, match='read only with snapshot_store = "path"'):
        SandboxConfig(snapshot_store="store", snapshot_path=Path("/mnt/snapshots"))
    with pytest.raises(ValidationError):
        SandboxConfig(snapshot_store="s3")  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        SandboxConfig(affinity_s=-1)


def _write(path: str, content: str) -> dict[str, Any]:
    return {"tool_calls": [{"name": "write_file",
                            "arguments": {"path": path, "content": content}}]}


async def test_a_shared_directory_carries_the_files_to_another_nodes_home(
        settings: Settings, tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    db = f"sqlite:///{tmp_path / 'agentd.db'}"

    def node(name: str) -> Settings:
        sandbox = settings.sandbox.model_dump()
        sandbox.update(snapshot_store="path", snapshot_path=shared)
        return settings.model_copy(update={
            "home": tmp_path / name, "database_url": db, "node_id": name,
            "sandbox": SandboxConfig.model_validate(sandbox)})

    first = await Runtime.open(node("n1"))
    try:
        assert first.workspaces is not None
        assert isinstance(first.workspaces.shared, DirObjects)
        await first.create_agent(name="a", model="scripted", tools=["write_file"],
                                 settings={"script": [_write("a.txt", "one"),
                                                      {"text": "ok"}]})
        sent = await first.send("a", "k", "write")
        assert (await first.wait(sent.run.id)).status == "completed"
    finally:
        await first.close()
    # The objects are under the agent's tenant, the marks under the agent.
    assert sorted(p.name for p in shared.iterdir()) == ["default", "marks"]

    second = await Runtime.open(node("n2"))
    try:
        agent = await second.get_agent("a")
        root = second.workspace_of(agent)
        assert not root.exists()
        await second.update_agent("a", {"settings": {"script": [
            {"tool_calls": [{"name": "write_file", "arguments": {
                "path": "b.txt", "content": "two"}}]}, {"text": "ok"}]}})
        sent = await second.send("a", "k", "again")
        assert (await second.wait(sent.run.id)).status == "completed"
        assert sorted(p.name for p in root.iterdir()) == ["a.txt", "b.txt"]
        assert (root / "a.txt").read_text() == "one"
        assert second.affinity.offered == 0  # (SQLite: one node at a time, no offers)
    finally:
        await second.close()


def test_an_offer_is_read_only_from_a_note_that_is_one() -> None:
    from agentd.runtime.affinity import RunOffer
    from agentd.store.records import AgentChange

    offer = RunOffer(origin="o_1", node="n1", run_id="r_1", session_id="s_1",
                     agent_id="a_1")
    back = RunOffer.from_note(offer.to_note())
    assert back is not None
    assert (back.origin, back.node, back.run_id, back.session_id, back.agent_id) == (
        "o_1", "n1", "r_1", "s_1", "a_1")
    for note in ('["offer", 1, 2]', '["offer","o","n","r","s",5]', '["offer",', "",
                 '["other","o","n","r","s","a"]'):
        assert RunOffer.from_note(note) is None
    # An agent's change is never taken for an offer, nor the other way round.
    with pytest.raises(ValueError):
        AgentChange.from_note(offer.to_note())
