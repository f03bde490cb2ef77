"""Agents against each other: each runs as its own uid, and each sandbox has its own
memory and process caps (a cgroup). One agent cannot use up another's process count,
read its workspace or signal its processes; a command whose processes together pass
the memory cap is killed with a clear result, and the next command runs.

Real bubblewrap and real processes; the uid tests need a root daemon (as CI runs),
the memory tests a usable cgroup (skipped, saying why, elsewhere).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.conftest import eventually, worker_uid
from tests.sandbox.conftest import all_gone, backend_or_skip

from agentd.sandbox.backends import (
    Backend,
    BubblewrapBackend,
    Limits,
    ProcessBackend,
    prepare_workspace,
)
from agentd.sandbox.cgroups import support
from agentd.tools.commands import render

A = worker_uid(0)
B = worker_uid(1)

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="per-agent uids need a root "
                                "daemon (without root every sandbox keeps its uid)")


def needs_cgroup() -> None:
    found = support()
    if not found.usable:
        pytest.skip(f"no cgroup per sandbox here: {found.reason}")


@pytest.fixture(params=[BubblewrapBackend, ProcessBackend], ids=lambda cls: cls.name)
def kind(request: pytest.FixtureRequest) -> type[Backend]:
    backend_or_skip(request.param)
    cls: type[Backend] = request.param
    return cls


@pytest.fixture
def shared() -> Iterator[Path]:
    """A directory every uid may pass through (pytest's own temp dirs are ``0700``,
    which alone would hide one workspace from the other): only the workspaces' own
    owner and mode stand between the agents."""
    with tempfile.TemporaryDirectory(prefix="agentd-agents-") as tmp:
        os.chmod(tmp, 0o711)
        yield Path(tmp)


def workspace(parent: Path, name: str, user: tuple[int, int]) -> Path:
    path = parent / name
    path.mkdir(mode=0o700)
    prepare_workspace(path, user=user)
    return path


FORK_TO_LIMIT = """\
import os, time
n = 0
try:
    while n < 1000:
        if os.fork() == 0:
            time.sleep(120)
            os._exit(0)
        n += 1
except OSError:
    pass
open("full", "w").write(str(n))
time.sleep(120)
"""


@needs_root
async def test_one_agent_at_its_process_limit_does_not_stop_another(
        kind: type[Backend], shared: Path) -> None:
    limits = Limits(processes=24, wall_s=60)
    ws_a, ws_b = workspace(shared, "a", A), workspace(shared, "b", B)
    agent_a, agent_b = kind(user=A), kind(user=B)
    holding = asyncio.ensure_future(agent_a.run(["python3", "-c", FORK_TO_LIMIT],
                                                workspace=ws_a, limits=limits))
    try:
        # A holds every process it may have, sleeping.
        await eventually((ws_a / "full").exists, what="agent A at its process limit")
        other = await agent_b.run(["sh", "-c", "sleep 0 & wait; echo ran"],
                                  workspace=ws_b, limits=limits)
        assert other.exit_code == 0 and other.stdout == "ran\n", other
    finally:
        holding.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await holding


@needs_root
async def test_commands_run_as_the_agents_uid(kind: type[Backend], shared: Path) -> None:
    ws_a = workspace(shared, "a", A)
    result = await kind(user=A).run(["sh", "-c", "id -u; id -g; id -G"], workspace=ws_a,
                                    limits=Limits(wall_s=20))
    assert result.stdout.split() == [str(A[0]), str(A[1]), str(A[1])], result
    info = ws_a.stat()
    assert (info.st_uid, info.st_gid, info.st_mode & 0o777) == (*A, 0o700)


@needs_root
async def test_an_agent_cannot_read_anothers_workspace(shared: Path) -> None:
    backend_or_skip(ProcessBackend)  # the one backend that shows the host's files
    ws_a, ws_b = workspace(shared, "a", A), workspace(shared, "b", B)
    (ws_b / "secret.txt").write_text("b's secret\n")
    prepare_workspace(ws_b, user=B)
    own = await ProcessBackend(user=B).run(["cat", str(ws_b / "secret.txt")],
                                           workspace=ws_b, limits=Limits(wall_s=20))
    assert own.stdout == "b's secret\n", own
    theirs = await ProcessBackend(user=A).run(
        ["sh", "-c", f"cat {ws_b}/secret.txt; ls {ws_b}; touch {ws_b}/planted"],
        workspace=ws_a, limits=Limits(wall_s=20))
    assert "secret" not in theirs.stdout, theirs
    # (closed to A's uid; or, where the host is read-only to A's commands with a /tmp
    # of their own, not there at all: this test's workspaces are in the host's /tmp)
    assert ("Permission denied" in theirs.stderr or "No such file" in theirs.stderr
            ), theirs
    assert not (ws_b / "planted").exists()


@needs_root
async def test_an_agent_cannot_signal_anothers_processes(shared: Path) -> None:
    backend_or_skip(ProcessBackend)  # bubblewrap's pid namespace hides them anyway
    ws_a, ws_b = workspace(shared, "a", A), workspace(shared, "b", B)
    victim = asyncio.ensure_future(ProcessBackend(user=B).run(
        ["sh", "-c", "sleep 120 & echo $! > pid.tmp && mv pid.tmp pid; wait"],
        workspace=ws_b, limits=Limits(wall_s=60)))
    try:
        await eventually((ws_b / "pid").exists, what="agent B's pid file")
        pid = int((ws_b / "pid").read_text())
        attack = await ProcessBackend(user=A).run(
            ["sh", "-c", f"kill -9 {pid}; kill -STOP {pid}"], workspace=ws_a,
            limits=Limits(wall_s=20))
        assert attack.exit_code != 0 and "not permitted" in attack.stderr, attack
        await asyncio.sleep(0.2)
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        assert state == "S", state  # still there, still sleeping (not stopped)
    finally:
        victim.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await victim


# Four processes of ~150 MB each (written, so the pages are real): together twice the
# cap of 300 MB, each well under it (RLIMIT_AS alone lets every one of them through).
HOG = """\
import subprocess, sys
code = "import time; x = b'x' * (150 << 20); time.sleep(3)"
procs = [subprocess.Popen([sys.executable, "-c", code]) for _ in range(4)]
print([p.wait() for p in procs])
"""
CAP = Limits(memory_mb=300, wall_s=60)


async def test_memory_over_several_processes_is_killed_at_the_sandbox_cap(
        kind: type[Backend], shared: Path) -> None:
    needs_cgroup()
    ws = workspace(shared, "a", A)
    backend = kind(user=A if os.geteuid() == 0 else None)
    (ws / "hog.py").write_text(HOG)
    prepare_workspace(ws, user=backend.user)
    result = await backend.run(["python3", "hog.py"], workspace=ws, limits=CAP)
    assert result.killed == "memory" and not result.timed_out, result
    assert render(result, CAP).startswith("[killed: memory limit of 300 MB]")
    after = await backend.run(["echo", "alive"], workspace=ws, limits=CAP)
    assert after.stdout == "alive\n" and after.killed is None, after


async def test_memory_cap_in_a_persistent_shell(kind: type[Backend], shared: Path) -> None:
    needs_cgroup()
    ws = workspace(shared, "a", A)
    backend = kind(user=A if os.geteuid() == 0 else None)
    (ws / "hog.py").write_text(HOG)
    prepare_workspace(ws, user=backend.user)
    shell = await backend.shell(workspace=ws, limits=CAP)
    try:
        result = await shell.run("python3 hog.py")
        assert result.killed == "memory", result
        after = await shell.run("echo alive")
        assert after.stdout == "alive\n" and after.killed is None, after
    finally:
        await shell.close()


async def test_no_cgroup_is_left_behind(kind: type[Backend], shared: Path) -> None:
    needs_cgroup()
    ws = workspace(shared, "a", A)
    backend = kind(user=A if os.geteuid() == 0 else None)
    def ours() -> set[Path]:  # (other processes may share the parent)
        return {entry for parent in support().parents.values()
                for entry in parent.iterdir() if entry.name.startswith(f"s{os.getpid()}-")}

    before = ours()
    marker = secrets.token_hex(8)
    await backend.run(["sh", "-c", "sleep 100 & setsid sleep 100 & echo started"],
                      workspace=ws, env={"AGENTD_MARK": marker},
                      limits=Limits(wall_s=20))
    shell = await backend.shell(workspace=ws, env={"AGENTD_MARK": marker},
                                limits=Limits(wall_s=20))
    await shell.run("setsid sleep 100 &")
    await shell.close()
    assert ours() == before == set()
    # Even what left its process group (setsid) went with the cgroup.
    await all_gone(marker)


@needs_root
async def test_a_workspace_of_the_shared_uid_becomes_the_agents(
        kind: type[Backend], shared: Path) -> None:
    """An agent's workspace from before (every agent ran as ``nobody``) is given to
    its own uid at its first command; nothing outside is touched."""
    ws = workspace(shared, "a", (65534, 65534))
    (ws / "notes.txt").write_text("old\n")
    prepare_workspace(ws)  # as the old daemon did: nobody's
    outside = shared / "outside.txt"
    outside.write_text("host\n")
    os.chown(outside, 65534, 65534)
    os.link(outside, ws / "hardlink.txt")  # planted: more than one link, left alone
    result = await kind(user=A).run(["sh", "-c", "echo new >> notes.txt; cat notes.txt"],
                                    workspace=ws, limits=Limits(wall_s=20))
    assert result.stdout == "old\nnew\n", result
    assert (ws.stat().st_uid, (ws / "notes.txt").stat().st_uid) == (A[0], A[0])
    assert outside.stat().st_uid == 65534
