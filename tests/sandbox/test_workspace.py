"""File tools confined to the agent's workspace: every escape a hostile model might
try is refused with a tool error, and nothing outside is read or changed."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest

from agentd.errors import ToolError
from agentd.sandbox import Workspace
from agentd.tools import FILE_TOOLS, ToolContext


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP SECRET\n")
    return secret


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    workspace = Workspace(tmp_path / "ws")
    workspace.ensure()
    return workspace


def _ctx(ws: Workspace) -> ToolContext:
    return ToolContext(agent="a", session="s", run_id="r", call_id="c", effect_id="e",
                       workspace=ws.root)


async def call(ws: Workspace, name: str, **arguments: Any) -> Any:
    return await FILE_TOOLS[name].call(arguments, _ctx(ws), 10.0)


async def test_write_read_edit_list_glob_grep_round_trip(ws: Workspace) -> None:
    assert await call(ws, "write_file", path="src/app.py", content="a = 1\nb = 2\n") \
        == "wrote 12 bytes to src/app.py"
    assert await call(ws, "read_file", path="src/app.py") == "a = 1\nb = 2\n"
    assert (await call(ws, "read_file", path="src/app.py", start_line=2)).startswith("b = 2")
    await call(ws, "edit_file", path="src/app.py", old="b = 2", new="b = 3")
    assert (ws.root / "src/app.py").read_text() == "a = 1\nb = 3\n"
    assert await call(ws, "list_files") == "src/"
    assert await call(ws, "list_files", path="src") == "app.py (12 bytes)"
    assert await call(ws, "glob", pattern="**/*.py") == "src/app.py"
    assert await call(ws, "grep", pattern=r"b = \d") == "src/app.py:2: b = 3"
    # No temporary file is left behind by the atomic writes.
    assert sorted(p.name for p in (ws.root / "src").iterdir()) == ["app.py"]


async def test_edit_refuses_missing_and_ambiguous_matches(ws: Workspace) -> None:
    await call(ws, "write_file", path="f.txt", content="x x")
    with pytest.raises(ToolError, match="occurs 2 times"):
        await call(ws, "edit_file", path="f.txt", old="x", new="y")
    with pytest.raises(ToolError, match="does not occur"):
        await call(ws, "edit_file", path="f.txt", old="z", new="y")
    assert (ws.root / "f.txt").read_text() == "x x"


@pytest.mark.parametrize("path", ["../secret.txt", "a/../../secret.txt", "/etc/passwd",
                                  "/etc/shadow", "./../secret.txt", "a/b/../../../secret.txt"])
async def test_paths_out_of_the_workspace_are_refused(ws: Workspace, outside: Path,
                                                      path: str) -> None:
    for tool, args in (("read_file", {}), ("write_file", {"content": "pwned"}),
                       ("edit_file", {"old": "TOP", "new": "PWN"})):
        with pytest.raises(ToolError) as info:
            await call(ws, tool, path=path, **args)
        assert info.value.code == "path_refused" or "does not exist" in info.value.message
    assert outside.read_text() == "TOP SECRET\n"
    assert not Path("/etc/passwd-pwned").exists()


async def test_symlinks_out_are_never_followed(ws: Workspace, outside: Path) -> None:
    (ws.root / "link.txt").symlink_to(outside)
    (ws.root / "dirlink").symlink_to(outside.parent)
    for path in ("link.txt", "dirlink/secret.txt"):
        with pytest.raises(ToolError, match="symbolic link"):
            await call(ws, "read_file", path=path)
        with pytest.raises(ToolError, match="symbolic link"):
            await call(ws, "write_file", path=path, content="pwned")
    with pytest.raises(ToolError, match="symbolic link"):
        await call(ws, "list_files", path="dirlink")
    # A search walks past links instead of through them.
    assert await call(ws, "grep", pattern="SECRET") == "(no match)"
    assert outside.read_text() == "TOP SECRET\n"


async def test_hard_links_to_outside_files_are_refused(ws: Workspace, outside: Path) -> None:
    os.link(outside, ws.root / "hard.txt")
    with pytest.raises(ToolError, match="hard links"):
        await call(ws, "read_file", path="hard.txt")
    with pytest.raises(ToolError, match="hard links"):
        await call(ws, "write_file", path="hard.txt", content="pwned")
    with pytest.raises(ToolError, match="hard links"):
        await call(ws, "edit_file", path="hard.txt", old="TOP", new="PWN")
    assert outside.read_text() == "TOP SECRET\n"


async def test_devices_and_fifos_are_refused_without_hanging(ws: Workspace) -> None:
    os.mkfifo(ws.root / "pipe")
    with pytest.raises(ToolError, match="not a regular file"):
        await asyncio.wait_for(call(ws, "read_file", path="pipe"), 5)
    with pytest.raises(ToolError, match="not a regular file"):
        await call(ws, "write_file", path="pipe", content="x")
    if Path("/dev/zero").exists():
        (ws.root / "zero").symlink_to("/dev/zero")
        with pytest.raises(ToolError, match="symbolic link"):
            await call(ws, "read_file", path="zero")


async def test_a_link_swapped_in_for_a_folder_is_not_followed(ws: Workspace,
                                                              outside: Path) -> None:
    """The classic race: a path checked as a folder, then replaced by a link. Nothing
    is checked and then opened again, so there is nothing to race."""
    (ws.root / "d").mkdir()
    (ws.root / "d").rmdir()
    (ws.root / "d").symlink_to(outside.parent)
    with pytest.raises(ToolError, match="symbolic link"):
        await call(ws, "write_file", path="d/secret.txt", content="pwned")
    assert outside.read_text() == "TOP SECRET\n"


async def test_big_files_are_cut_and_said_so(ws: Workspace) -> None:
    (ws.root / "big.txt").write_text("line\n" * 100_000)
    out = await call(ws, "read_file", path="big.txt", max_lines=3)
    assert out.startswith("line\nline\nline\n")
    assert "showed lines 1-3" in out and "first 262144 were read" in out


async def test_file_tools_run_inside_the_agent_s_workspace(tmp_path: Path) -> None:
    from agentd.assembly import Runtime
    from agentd.config import Settings

    rt = await Runtime.open(Settings(home=tmp_path / "home", demo_agent=False))
    try:
        await rt.create_agent(name="a", tools=["write_file", "read_file"], settings={
            "script": [{"tool_calls": [{"name": "write_file", "arguments": {
                "path": "notes/todo.txt", "content": "buy milk"}}]},
                {"tool_calls": [{"name": "read_file",
                                 "arguments": {"path": "../../agentd.db"}}]},
                {"text": "done"}]})
        sent = await rt.send("a", "k", "go")
        run = await rt.wait(sent.run.id)
        assert run.status == "completed"
        agent = await rt.get_agent("a")
        root = rt.workspace_of(agent)
        assert (root / "notes/todo.txt").read_text() == "buy milk"
        finished = [e.data for e in await rt.read_events(sent.session.id)
                    if e.kind == "tool.finished"]
        assert finished[1]["is_error"] is True and "out of the workspace" in \
            finished[1]["output"]
        await rt.delete_agent("a")
        assert not root.exists()
    finally:
        await rt.close()


# -- write_files: all or nothing -----------------------------------------------------


def _tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): p.read_text() for p in sorted(root.rglob("*"))
            if p.is_file()}


async def test_write_files_writes_and_edits_together(ws: Workspace) -> None:
    await call(ws, "write_file", path="a.txt", content="x = 1\n")
    out = await call(ws, "write_files", files=[
        {"path": "a.txt", "old": "x = 1", "new": "x = 2"},
        {"path": "pkg/b.txt", "content": "new\n"}])
    assert out.startswith("wrote 2 files")
    assert _tree(ws.root) == {"a.txt": "x = 2\n", "pkg/b.txt": "new\n"}


async def test_write_files_refused_path_changes_nothing(ws: Workspace, outside: Path) -> None:
    await call(ws, "write_file", path="a.txt", content="old\n")
    os.symlink(outside.parent, ws.root / "link")
    before = _tree(ws.root)
    with pytest.raises(ToolError) as caught:
        await call(ws, "write_files", files=[
            {"path": "a.txt", "content": "changed\n"},
            {"path": "link/evil.txt", "content": "pwned\n"}])
    assert caught.value.code == "path_refused"
    assert _tree(ws.root) == before  # a.txt untouched, no temporaries left
    assert not (outside.parent / "evil.txt").exists()
    assert sorted(os.listdir(ws.root)) == ["a.txt", "link"]


async def test_write_files_bad_edit_changes_nothing(ws: Workspace) -> None:
    await call(ws, "write_file", path="a.txt", content="same same\n")
    for files, code in (
            ([{"path": "b.txt", "content": "b"},
              {"path": "a.txt", "old": "same", "new": "x"}], "ambiguous_match"),
            ([{"path": "b.txt", "content": "b"},
              {"path": "a.txt", "old": "absent", "new": "x"}], "no_match"),
            ([{"path": "b.txt", "content": "b"}, {"path": "./b.txt", "content": "c"}],
             "tool_bad_arguments"),
            ([{"path": "b.txt"}], "tool_bad_arguments"),
            ([], "tool_bad_arguments")):
        with pytest.raises(ToolError) as caught:
            await call(ws, "write_files", files=files)
        assert caught.value.code == code, files
        assert _tree(ws.root) == {"a.txt": "same same\n"}


async def test_write_files_rolls_back_when_a_rename_fails(ws: Workspace,
                                                          monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    """Fault injection: the third rename of the commit phase fails (a full or
    read-only disk would); the files already swapped in are put back."""
    await call(ws, "write_files", files=[{"path": "a.txt", "content": "A\n"},
                                         {"path": "b.txt", "content": "B\n"}])
    real_rename = os.rename
    seen: list[str] = []

    def failing_rename(src: Any, dst: Any, **kwargs: Any) -> None:
        seen.append(str(dst))
        if len(seen) == 4:
            raise OSError(28, "No space left on device")
        real_rename(src, dst, **kwargs)

    monkeypatch.setattr(os, "rename", failing_rename)
    with pytest.raises(OSError):
        await call(ws, "write_files", files=[{"path": "a.txt", "content": "A2\n"},
                                             {"path": "b.txt", "content": "B2\n"},
                                             {"path": "c.txt", "content": "C2\n"}])
    monkeypatch.setattr(os, "rename", real_rename)
    assert _tree(ws.root) == {"a.txt": "A\n", "b.txt": "B\n"}
    assert sorted(os.listdir(ws.root)) == ["a.txt", "b.txt"]  # no temporaries, no backups
