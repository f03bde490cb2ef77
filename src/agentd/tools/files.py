"""File tools, confined to the agent's workspace (see :mod:`agentd.sandbox.workspace`).

Each takes paths relative to the workspace. Sizes are capped so that a tool result
never floods the model's context: reads return at most ``MAX_READ`` bytes (the result
says when a file was cut), listings and searches at most ``MAX_ENTRIES`` entries.

Paths the agent's policy protects (a deny rule with ``paths``, see
:mod:`agentd.tools.protect`) are refused by the tools that name a path, and left out,
unnamed, of what list_files, glob and grep return.
"""

from __future__ import annotations

import fnmatch
import re

from pydantic import BaseModel, ConfigDict, Field

from agentd.errors import ToolError
from agentd.sandbox import Workspace
from agentd.tools.base import Tool, ToolContext, tool
from agentd.tools.protect import check, is_protected

__all__ = ["FILE_TOOLS", "FileChange", "edit_file", "glob", "grep", "list_files",
           "read_file", "write_file", "write_files"]

MAX_READ = 256 * 1024
MAX_WRITE = 4 * 1024 * 1024
MAX_ENTRIES = 1000


def _workspace(ctx: ToolContext, *paths: str, what: str = "this tool") -> Workspace:
    """The workspace, after refusing any of ``paths`` the policy protects."""
    if ctx.workspace is None:
        raise ToolError("this agent has no workspace", code="no_workspace")
    for path in paths:
        check(path, ctx.protected, what)
    return Workspace(ctx.workspace)


def _text(data: bytes, path: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ToolError(f"{path!r} is not UTF-8 text", code="not_text") from None


@tool(read_only=True, idempotent=True, isolated=True)
def read_file(ctx: ToolContext, path: str, start_line: int = 1, max_lines: int = 2000) -> str:
    """Read a text file of the workspace, from a line on.

    Args:
        path: the file, relative to the workspace.
        start_line: the first line to return (1-based).
        max_lines: how many lines at most.
    """
    if start_line < 1 or max_lines < 1:
        raise ToolError("start_line and max_lines must be at least 1",
                        code="tool_bad_arguments")
    data, size = _workspace(ctx, path, what="read_file").read_bytes(path, limit=MAX_READ)
    lines = _text(data, path).splitlines(keepends=True)
    chosen = lines[start_line - 1:start_line - 1 + max_lines]
    out = "".join(chosen)
    shown_end = start_line - 1 + len(chosen)
    if size > MAX_READ or shown_end < len(lines):
        cut = "" if size <= MAX_READ else f", of which the first {MAX_READ} were read"
        out += (f"\n[{path}: showed lines {start_line}-{shown_end}; the file has "
                f"{size} bytes{cut}]")
    return out


@tool(idempotent=True, isolated=True)
def write_file(ctx: ToolContext, path: str, content: str) -> str:
    """Create or replace a text file of the workspace (parent folders are created).

    Args:
        path: the file, relative to the workspace.
        content: the whole new content.
    """
    data = content.encode("utf-8")
    if len(data) > MAX_WRITE:
        raise ToolError(f"content is {len(data)} bytes; the limit is {MAX_WRITE}",
                        code="tool_bad_arguments")
    _workspace(ctx, path, what="write_file").write_bytes(path, data)
    return f"wrote {len(data)} bytes to {path}"


@tool(idempotent=True, isolated=True)
def edit_file(ctx: ToolContext, path: str, old: str, new: str) -> str:
    """Replace one exact occurrence of ``old`` with ``new`` in a text file.

    Args:
        path: the file, relative to the workspace.
        old: the exact text to replace; it must occur exactly once.
        new: the text to put in its place.
    """
    if not old:
        raise ToolError("old must not be empty", code="tool_bad_arguments")
    workspace = _workspace(ctx, path, what="edit_file")
    data, size = workspace.read_bytes(path, limit=MAX_WRITE + 1)
    if size > MAX_WRITE:
        raise ToolError(f"{path!r} is too big to edit ({size} bytes)", code="too_big")
    text = _text(data, path)
    count = text.count(old)
    if count == 0:
        raise ToolError(f"the text to replace does not occur in {path!r}", code="no_match")
    if count > 1:
        raise ToolError(f"the text to replace occurs {count} times in {path!r}; give "
                        "more context so that it occurs once", code="ambiguous_match")
    workspace.write_bytes(path, text.replace(old, new, 1).encode("utf-8"))
    return f"edited {path}"


class FileChange(BaseModel):
    """One file of a ``write_files`` call: its whole ``content``, or one exact
    replacement (``old`` → ``new``)."""

    model_config = ConfigDict(extra="forbid")

    path: str = Field(description="the file, relative to the workspace")
    content: str | None = Field(None, description="the whole new content")
    old: str | None = Field(None, description="exact text to replace (occurs once)")
    new: str | None = Field(None, description="the text to put in its place")


MAX_FILES = 100


@tool(idempotent=True, isolated=True)
def write_files(ctx: ToolContext, files: list[FileChange]) -> str:
    """Change several files at once, all or nothing: if one cannot be written (or one
    edit does not match), none is changed.

    Args:
        files: each with ``path`` and either ``content`` (the whole file) or ``old``
            and ``new`` (replace one exact occurrence).
    """
    if not files or len(files) > MAX_FILES:
        raise ToolError(f"give 1 to {MAX_FILES} files", code="tool_bad_arguments")
    workspace = _workspace(ctx, *(f.path for f in files), what="write_files")
    planned: list[tuple[str, bytes]] = []
    total = 0
    for index, change in enumerate(files):
        if (change.content is None) == (change.old is None or change.new is None):
            raise ToolError(f"files[{index}] ({change.path}): give content, or old and "
                            "new", code="tool_bad_arguments")
        if change.content is not None:
            data = change.content.encode("utf-8")
        else:
            current, size = workspace.read_bytes(change.path, limit=MAX_WRITE + 1)
            if size > MAX_WRITE:
                raise ToolError(f"{change.path!r} is too big to edit ({size} bytes)",
                                code="too_big")
            text = _text(current, change.path)
            count = text.count(change.old or "")
            if not change.old or count != 1:
                raise ToolError(
                    f"files[{index}]: the text to replace occurs {count} times in "
                    f"{change.path!r}; it must occur exactly once (nothing was written)",
                    code="no_match" if count == 0 else "ambiguous_match")
            data = text.replace(change.old, change.new or "", 1).encode("utf-8")
        total += len(data)
        planned.append((change.path, data))
    if total > MAX_WRITE:
        raise ToolError(f"the files come to {total} bytes; the limit is {MAX_WRITE}",
                        code="tool_bad_arguments")
    workspace.write_many(planned)
    return f"wrote {len(planned)} files ({total} bytes): " + ", ".join(p for p, _ in planned)


@tool(read_only=True, idempotent=True, isolated=True)
def list_files(ctx: ToolContext, path: str = ".") -> str:
    """List a folder of the workspace: one entry a line, folders ending in "/".

    Args:
        path: the folder, relative to the workspace.
    """
    workspace = _workspace(ctx, path, what="list_files")
    prefix = "/".join(Workspace.parts(path))
    entries = [e for e in workspace.listdir(path)
               if not is_protected(f"{prefix}/{e[0]}" if prefix else e[0], ctx.protected)]
    lines = [f"{name}/" if kind == "dir" else f"{name} ({size} bytes)" if kind == "file"
             else f"{name} ({kind})" for name, kind, size in entries[:MAX_ENTRIES]]
    if len(entries) > MAX_ENTRIES:
        lines.append(f"[{len(entries) - MAX_ENTRIES} more entries not shown]")
    return "\n".join(lines) or "(empty)"


@tool(read_only=True, idempotent=True, isolated=True)
def glob(ctx: ToolContext, pattern: str) -> str:
    """Files of the workspace whose path matches a glob pattern ("**/*.py", "src/*.txt").

    Args:
        pattern: a glob pattern, relative to the workspace.
    """
    Workspace.parts(pattern)  # an absolute pattern or one climbing out is refused
    files = [f for f in _workspace(ctx).walk(".") if not is_protected(f, ctx.protected)]
    matched = [f for f in files if fnmatch.fnmatchcase(f, pattern)
               or (pattern.startswith("**/") and fnmatch.fnmatchcase(f, pattern[3:]))]
    return "\n".join(matched[:MAX_ENTRIES]) or "(no match)"


@tool(read_only=True, idempotent=True, isolated=True)
def grep(ctx: ToolContext, pattern: str, path: str = ".") -> str:
    """Lines of the workspace's text files that match a regular expression.

    Args:
        pattern: a Python regular expression.
        path: a folder or file, relative to the workspace.
    """
    try:
        regex = re.compile(pattern)
    except re.error as exc:
        raise ToolError(f"invalid regular expression: {exc}", code="tool_bad_arguments") from None
    workspace = _workspace(ctx, path, what="grep")
    files = workspace.walk(path) if workspace.kind(path) == "dir" else [path]
    # A protected file is skipped, not named: grep over "." shows nothing of it.
    files = [f for f in files if not is_protected(f, ctx.protected)]
    hits: list[str] = []
    for name in files:
        data, _ = workspace.read_bytes(name, limit=MAX_READ)
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            continue
        for number, line in enumerate(text.splitlines(), 1):
            if regex.search(line):
                hits.append(f"{name}:{number}: {line[:500]}")
                if len(hits) >= MAX_ENTRIES:
                    return "\n".join(hits) + "\n[more matches not shown]"
    return "\n".join(hits) or "(no match)"


FILE_TOOLS: dict[str, Tool] = {t.name: t for t in (read_file, write_file, write_files,
                                                   edit_file, list_files, glob, grep)}
