"""Each agent's own sandbox uid, as the runtime gives it: unique, stored (the same after
a restart, on SQLite and PostgreSQL), not given to a later agent while the range has
uids never used, refused clearly when the range is used up; and a command over the
memory cap is a clear tool result, not a failed run. (Reclaiming a deleted agent's
uid: test_uid_reclaim.py.)"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from agentd.assembly import Runtime
from agentd.config import Settings
from agentd.errors import Conflict
from agentd.sandbox.cgroups import support
from agentd.store import open_store

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="per-agent uids need a root "
                                "daemon (without root every sandbox keeps its uid)")

ALLOW = {"policy": {"rules": [{"tool": "shell", "action": "allow"}]}}


def shell(command: str) -> dict[str, Any]:
    return {"tool_calls": [{"name": "shell", "arguments": {"command": command}}]}


async def outputs(runtime: Runtime, agent: str, script: list[dict[str, Any]],
                  settings: dict[str, Any] | None = None) -> list[str]:
    await runtime.create_agent(name=agent, model="scripted", tools=["shell"],
                               settings={**ALLOW, **(settings or {}),
                                         "script": [*script, {"text": "done"}]})
    sent = await runtime.send(agent, "k", "go")
    assert (await runtime.wait(sent.run.id)).status == "completed"
    return [e.data["output"] for e in await runtime.read_events(sent.session.id)
            if e.kind == "tool.finished"]


@needs_root
async def test_each_agent_runs_as_its_own_uid_kept_across_a_restart(
        settings: Settings, store_url: str) -> None:
    settings.database_url = store_url
    base = settings.sandbox.uid_base
    runtime = await Runtime.open(settings)
    try:
        [a_out] = await outputs(runtime, "a", [shell("id -u; stat -c %u:%a .")])
        [b_out] = await outputs(runtime, "b", [shell("id -u")])
        a_id = (await runtime.get_agent("a")).id
        assert (await runtime.health())["sandbox_uids"] == "per-agent"
    finally:
        await runtime.close()
    a_uid, b_uid = int(a_out.splitlines()[1]), int(b_out.splitlines()[1])
    assert a_uid != b_uid and {a_uid, b_uid} <= set(range(base, base + 100_000))
    assert a_out.splitlines()[2] == f"{a_uid}:700"  # its workspace: its own, closed
    workspace = settings.workspaces_dir / a_id
    assert workspace.stat().st_uid == a_uid

    runtime = await Runtime.open(settings)  # a restart: same store, fresh memory
    try:
        [again] = await outputs(runtime, "a2", [shell("id -u")])
        await runtime.send("a", "k", "again")
        assert await runtime.sandboxes.user(a_id) == (a_uid, a_uid)
        assert int(again.splitlines()[1]) not in (a_uid, b_uid)
    finally:
        await runtime.close()


@needs_root
async def test_a_deleted_agents_uid_is_not_given_while_fresh_ones_remain(
        runtime: Runtime) -> None:
    first = await runtime.create_agent(name="a", model="scripted")
    uid = await runtime.sandboxes.user(first.id)
    await runtime.delete_agent("a")
    second = await runtime.create_agent(name="a", model="scripted")  # same name, too
    assert await runtime.sandboxes.user(second.id) != uid


@needs_root
async def test_a_used_up_range_refuses_the_agent_clearly(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home", demo_agent=False,
                        sandbox={"uid_base": 300_000, "uid_count": 1})
    runtime = await Runtime.open(settings)
    try:
        await runtime.create_agent(name="a", model="scripted")
        with pytest.raises(Conflict) as caught:
            await runtime.create_agent(name="b", model="scripted")
        assert caught.value.code == "sandbox_uids_exhausted"
        assert "sandbox.uid_count" in caught.value.message
        assert [a.name for a in await runtime.list_agents()] == ["a"]  # b not stored
    finally:
        await runtime.close()


async def test_uids_are_unique_under_concurrent_assignment(store_url: str) -> None:
    import asyncio

    store = await open_store(store_url)
    try:
        ids = [(await store.create_agent(name=f"agent{i}", model="scripted",
                                         instructions="", tools=[], settings={})).id
               for i in range(20)]
        got = await asyncio.gather(*(store.sandbox_uid(agent_id, base=400_000,
                                                       count=1000) for agent_id in ids))
        assert sorted(got) == list(range(400_000, 400_020))
        again = await store.sandbox_uid(ids[3], base=400_000, count=1000)
        assert again == got[3]
    finally:
        await store.close()


@needs_root
async def test_a_command_over_the_memory_cap_is_a_clear_tool_result(
        runtime: Runtime, tmp_path: Path) -> None:
    if not support().usable:
        pytest.skip(f"no cgroup per sandbox here: {support().reason}")
    hog = ("python3 -c 'import subprocess, sys; code = \"import time; x = b\\\"x\\\" * "
           "(100 << 20); time.sleep(3)\"; ps = [subprocess.Popen([sys.executable, \"-c\", "
           "code]) for _ in range(4)]; [p.wait() for p in ps]'")
    out = await outputs(runtime, "a", [shell(hog), shell("echo alive")],
                        {"sandbox": {"limits": {"memory_mb": 200}}})
    assert out[0].startswith("[killed: memory limit of 200 MB]"), out
    assert out[1] == "[exit code 0]\nalive"
    assert (await runtime.health())["sandbox_memory"] == "cgroup"


def test_a_uid_range_holding_nobody_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="65534"):
        Settings(home=tmp_path, sandbox={"uid_base": 60_000, "uid_count": 10_000})


async def test_health_says_who_commands_run_as(runtime: Runtime) -> None:
    """Root: a uid per agent. Not root: none is given, the daemon's uid is kept."""
    if os.geteuid() == 0:
        assert (await runtime.health())["sandbox_uids"] == "per-agent"
        return
    agent = await runtime.create_agent(name="a", model="scripted")
    assert await runtime.sandboxes.user(agent.id) is None
    assert (await runtime.health())["sandbox_uids"] == "daemon"
