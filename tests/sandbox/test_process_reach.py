"""The process backend as root, with the workspace under a parent its uid cannot enter
(the default ``/root/.agentd`` as root): git and absolute paths still work, through a
private mount namespace, and nothing of the closed parent opens up."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest

from agentd.sandbox import ShellPool, prepare_workspace
from agentd.sandbox.backends import Limits, ProcessBackend
from agentd.sandbox.context import Sandbox
from agentd.tools import COMMAND_TOOLS, FILE_TOOLS, ToolContext

pytestmark = pytest.mark.skipif(os.geteuid() != 0,
                                reason="only root runs commands as another uid")

TOOLS = {**COMMAND_TOOLS, **FILE_TOOLS}
AGENT = (61234, 61234)  # an agent's own uid, as the daemon gives them


@pytest.fixture
def closed(tmp_path: Path) -> Path:
    """A root-owned 0700 folder, as ``/root`` is, with a file the agent must not see."""
    top = tmp_path / "root-home"
    top.mkdir(mode=0o700)
    (top / "secret").write_text("hunter2\n")
    return top


@pytest.fixture
def ws(closed: Path) -> Path:
    path = closed / ".agentd" / "workspaces" / "a1"
    path.mkdir(parents=True, mode=0o700)
    prepare_workspace(path, user=AGENT)
    return path


@pytest.fixture
async def sandbox() -> Any:
    pool = ShellPool()
    yield Sandbox(backend=ProcessBackend(user=AGENT), limits=Limits(wall_s=20),
                  shells=pool, shell_key="s1")
    await pool.close_all()


async def _run(sandbox: Sandbox, ws: Path, name: str, **arguments: Any) -> str:
    ctx = ToolContext(agent="a", session="s", run_id="r", call_id="c", effect_id="e",
                      workspace=ws, sandbox=sandbox)
    return str(await TOOLS[name].call(arguments, ctx, 60.0))


def _mounted(path: Path) -> bool:
    return any(f" {path}" in line for line in
               Path("/proc/self/mountinfo").read_text().splitlines())


async def test_git_works_in_a_workspace_under_a_closed_parent(sandbox: Sandbox, ws: Path,
                                                              closed: Path) -> None:
    out = await _run(sandbox, ws, "git", command="init")
    assert out.startswith("[exit code 0]"), out  # was: Invalid path ...: Permission denied
    await _run(sandbox, ws, "write_file", path="a.txt", content="one\n")
    assert (await _run(sandbox, ws, "git", command="add", args=["a.txt"])).startswith(
        "[exit code 0]")
    out = await _run(sandbox, ws, "git", command="commit", message="first")
    assert out.startswith("[exit code 0]"), out
    out = await _run(sandbox, ws, "git", command="log")
    assert "first" in out and "agentd agent" in out, out
    await _run(sandbox, ws, "write_file", path="a.txt", content="two\n")
    assert "+two" in await _run(sandbox, ws, "git", command="diff")
    assert "a.txt" in await _run(sandbox, ws, "git", command="status", args=["--short"])
    assert (ws / ".git").is_dir() and (ws / ".git").stat().st_uid == AGENT[0]


async def test_commands_see_the_workspace_at_its_own_path_and_nothing_else(
        sandbox: Sandbox, ws: Path, closed: Path) -> None:
    (ws / "sub").mkdir()
    os.chown(ws / "sub", *AGENT)
    out = await _run(sandbox, ws, "shell", command=f"pwd; cd {ws}/sub && pwd; echo $HOME",
                     persistent=False)
    assert out.split("\n")[1:4] == [str(ws), f"{ws}/sub", str(ws)], out
    # The rest of the closed parent stays out of reach (now hidden, not just refused).
    out = await _run(sandbox, ws, "shell", command=f"cat {closed}/secret; ls -a {closed}",
                     persistent=False)
    assert "hunter2" not in out and "secret" not in out.split("[stderr]")[0], out
    backend = sandbox.backend
    assert backend is not None
    here = await backend.run(["pwd"], workspace=ws, cwd="sub", limits=Limits(wall_s=20))
    assert here.stdout == f"{ws}/sub\n", here


async def test_the_persistent_shell_reaches_it_too(sandbox: Sandbox, ws: Path) -> None:
    out = await _run(sandbox, ws, "shell", command="pwd && git --version >/dev/null && "
                     "touch made-here", persistent=True)
    assert f"\n{ws}\n" in f"\n{out}\n", out
    assert (ws / "made-here").exists()


async def test_the_host_is_left_as_it_was(sandbox: Sandbox, ws: Path, closed: Path) -> None:
    await _run(sandbox, ws, "git", command="init")
    assert closed.stat().st_mode & 0o777 == 0o700
    assert sorted(p.name for p in closed.iterdir()) == [".agentd", "secret"]
    assert not _mounted(closed) and not _mounted(ws)


async def test_an_open_path_needs_no_namespace() -> None:
    """Where every parent is open to the uid, nothing is mounted to reach it (the
    workspace is seen through the host's own mount), unless the host is made read-only
    (a mount namespace of the command's own, the workspace at its path)."""
    top = Path(tempfile.mkdtemp(prefix="agentd-open-"))  # tmp_path's parents are closed
    try:
        top.chmod(0o755)
        ws = top / "ws"
        ws.mkdir(mode=0o700)
        prepare_workspace(ws, user=AGENT)
        for parent in ws.parents:
            if parent.stat().st_mode & 0o001 == 0:
                pytest.skip(f"{parent} is closed here")
        result = await ProcessBackend(user=AGENT).run(
            ["sh", "-c", "pwd; readlink /proc/self/ns/mnt"], workspace=ws,
            limits=Limits(wall_s=20))
        pwd, namespace = result.stdout.split("\n")[:2]
        assert pwd == str(ws)
        if ProcessBackend.host_sealed() is not None:
            assert namespace == os.readlink("/proc/self/ns/mnt")
    finally:
        shutil.rmtree(top)
