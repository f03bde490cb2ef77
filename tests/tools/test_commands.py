"""The shell and git tools in the real sandbox (the strongest backend here)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agentd.errors import ToolError
from agentd.sandbox import prepare_workspace
from agentd.sandbox.context import Sandbox
from agentd.tools import COMMAND_TOOLS, ToolContext


async def run(sandbox: Sandbox, workspace: Path, name: str, **arguments: Any) -> str:
    ctx = ToolContext(agent="a", session="s", run_id="r", call_id="c", effect_id="e",
                      workspace=workspace, sandbox=sandbox)
    return str(await COMMAND_TOOLS[name].call(arguments, ctx, 60.0))


async def test_shell_one_off(sandbox: Sandbox, workspace: Path) -> None:
    out = await run(sandbox, workspace, "shell", command="echo hi; echo oops >&2; exit 3")
    assert out.startswith("[exit code 3]") and "hi" in out and "[stderr]\noops" in out
    await run(sandbox, workspace, "shell", command="mkdir sub && cd sub && echo x > f")
    assert (workspace / "sub" / "f").read_text() == "x\n"
    # A one-off shell does not keep the cwd.
    assert "sub" not in (await run(sandbox, workspace, "shell", command="pwd")).split(
        "\n", 1)[1]


async def test_persistent_shell_keeps_cwd_and_env(sandbox: Sandbox, workspace: Path
                                                  ) -> None:
    await run(sandbox, workspace, "shell", command="mkdir -p d && cd d && export X=42",
              persistent=True)
    out = await run(sandbox, workspace, "shell", command="pwd; echo $X", persistent=True)
    assert out.splitlines()[1:] == ["/workspace/d" if sandbox.backend
                                    and sandbox.backend.isolated else str(workspace / "d"),
                                    "42"]
    slow = await run(sandbox, workspace, "shell", command="sleep 30", persistent=True,
                     timeout_s=1)
    assert "no result within 1s" in slow
    after = await run(sandbox, workspace, "shell", command="echo $X", persistent=True)
    assert "42" not in after  # the killed shell was replaced by a fresh one


async def test_shell_bad_input(sandbox: Sandbox, workspace: Path) -> None:
    for arguments, code in (({"command": "   "}, "tool_bad_arguments"),
                            ({"command": "ls", "timeout_s": 0}, "tool_bad_arguments"),
                            ({"command": "ls", "timeout_s": 1e9}, "tool_bad_arguments")):
        with pytest.raises(ToolError) as caught:
            await run(sandbox, workspace, "shell", **arguments)
        assert caught.value.code == code
    ctx = ToolContext(agent="a", session="s", run_id="r", call_id="c", effect_id="e",
                      workspace=workspace, sandbox=None)
    with pytest.raises(ToolError) as none:
        await COMMAND_TOOLS["shell"].call({"command": "ls"}, ctx, 10.0)
    assert none.value.code == "sandbox_unavailable"


async def test_git_status_add_commit_log_diff(sandbox: Sandbox, workspace: Path) -> None:
    assert (await run(sandbox, workspace, "git", command="init")).startswith("[exit code 0]")
    (workspace / "a.txt").write_text("one\n")
    prepare_workspace(workspace)
    assert "a.txt" in await run(sandbox, workspace, "git", command="status",
                                args=["--short"])
    await run(sandbox, workspace, "git", command="add", args=["a.txt"])
    committed = await run(sandbox, workspace, "git", command="commit", message="first")
    assert committed.startswith("[exit code 0]"), committed
    (workspace / "a.txt").write_text("two\n")
    assert "+two" in await run(sandbox, workspace, "git", command="diff")
    assert "first" in await run(sandbox, workspace, "git", command="log",
                                args=["--oneline"])
    for arguments in ({"command": "commit"},                        # no message
                      {"command": "log", "message": "x"},           # message not for log
                      {"command": "log", "args": ["-c", "core.pager=sh"]},
                      {"command": "diff", "args": ["--ext-diff"]},
                      {"command": "push"}):                          # not offered
        with pytest.raises(ToolError):
            await run(sandbox, workspace, "git", **arguments)
