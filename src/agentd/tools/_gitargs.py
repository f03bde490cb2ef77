"""The git tool's arguments: a strict reading of what the model passes after the
subcommand, and the pathspecs that keep protected paths out of git's output.

Options are refused by name, also when abbreviated (git accepts ``--outp`` for
``--output``) or given as ``--opt=value``, and short ones anywhere in a cluster
(``-pS``). Refused are those that run programs (``--ext-diff``, ``--textconv``,
``--gpg-sign``, ``--show-signature``), read or write files git would not otherwise
touch (``--output``, ``--no-index``, ``-O<orderfile>``, ``commit -F``, ``--template``,
``--pathspec-from-file``), reach other repositories (``--git-dir``, ``--work-tree``,
``--recurse-submodules``, ``--separate-git-dir``), or wait for a terminal (``add -p``).

Paths: every argument that names a protected path is refused, also inside a
``REV:path`` form; ``diff``, ``log``, ``show`` and ``status`` get one
``:(exclude,icase)`` pathspec a protected pattern, so that their output never holds a
protected file; ``mv``, ``rm``, ``checkout``, ``restore`` and ``reset`` refuse a folder
holding a protected file, and glob patterns.
"""

from __future__ import annotations

import posixpath

from agentd.errors import ToolError
from agentd.sandbox import Workspace
from agentd.tools.protect import is_protected, normalise_patterns

__all__ = ["plan_args"]

_READS = frozenset({"diff", "log", "show", "status"})
_WRITES = frozenset({"mv", "rm", "checkout", "restore", "reset"})

_LONG = ("--exec-path", "--exec", "--upload-pack", "--receive-pack", "--config",
         "--config-env", "--git-dir", "--work-tree", "--namespace", "--super-prefix",
         "--output", "--output-directory", "--ext-diff", "--textconv", "--no-index",
         "--template", "--separate-git-dir", "--pathspec-from-file", "--file",
         "--recurse-submodules", "--ignore-submodules", "--submodule", "--gpg-sign",
         "--show-signature", "--open-files-in-pager", "--stdin", "--contents",
         "--orderfile", "--attr-source")
_LONG_BY_COMMAND = {"add": ("--patch", "--interactive", "--edit"),
                    "commit": ("--patch", "--interactive", "--edit"),
                    "checkout": ("--patch",), "restore": ("--patch",),
                    "reset": ("--patch",)}
#: Exact options that are an abbreviation of a refused one in name only.
_EXACT_OK = frozenset({"--text"})
_SHORT_BY_COMMAND = {"diff": "O", "log": "O", "show": "O", "add": "pie",
                     "commit": "FtSp", "checkout": "p", "restore": "p", "reset": "p"}


def _bad(message: str) -> ToolError:
    return ToolError(message, code="tool_bad_arguments")


def _check_long(command: str, arg: str) -> None:
    name = arg.split("=", 1)[0].lower()
    if name in _EXACT_OK or len(name) < 3:
        return
    for refused in (*_LONG, *_LONG_BY_COMMAND.get(command, ())):
        if refused.startswith(name):  # the option or an abbreviation of it
            raise _bad(f"git option {arg!r} is not allowed ({refused} can run programs, "
                       "touch files outside the repository, or wait for a terminal)")


def _check_short(command: str, arg: str) -> None:
    letters = arg[1:]
    refused = _SHORT_BY_COMMAND.get(command, "")
    if letters[:1] in ("c", "C") or any(c in refused for c in letters):
        raise _bad(f"git option {arg!r} is not allowed for git {command}")


def _check_path(arg: str, protected: tuple[str, ...], *, word: bool = True) -> None:
    """``word``: a word of its own (a path or a revision), not an option's value."""
    if word and arg.startswith((":(", ":!", ":^")):
        raise _bad(f"pathspec magic ({arg!r}) is not allowed")
    norm = posixpath.normpath(arg)
    if word and (arg.startswith("/") or norm == ".." or norm.startswith("../")):
        # ``git diff /etc/passwd x`` diffs files outside the repository (an implicit
        # --no-index); git's paths stay in the workspace, as the file tools' do.
        raise ToolError(f"{arg!r} is outside the workspace: git's paths are relative "
                        "to it", code="path_refused")
    # ``HEAD:.env``, ``:0:.env``, ``HEAD^{/msg}:.env``: each part after a colon may
    # be a path in a tree.
    candidates = [arg, *(arg[i + 1:] for i, c in enumerate(arg) if c == ":")]
    for candidate in candidates:
        if candidate and is_protected(candidate, protected):
            raise ToolError(f"git argument {arg!r} names a path protected by this "
                            "agent's policy (a deny rule with paths)",
                            code="path_protected")


def _exists(workspace: Workspace, path: str) -> str | None:
    try:
        return workspace.kind(path)
    except ToolError:
        return None


def _holds_protected(workspace: Workspace, path: str, protected: tuple[str, ...]) -> bool:
    if _exists(workspace, path) != "dir":
        return False
    return any(is_protected(f, protected) for f in workspace.walk(path))


# complexity: one pass over git's arguments with one branch per option the tool accepts
# or refuses; the whole list is the boundary between the model and git, and reads best
# in one place.
def plan_args(command: str, args: list[str], workspace: Workspace,
              protected: tuple[str, ...]) -> list[str]:
    """The arguments to give git after ``command``; raises ToolError for a refused
    option or a protected path."""
    before: list[str] = []
    paths: list[str] = []
    dashdash = False
    for arg in args:
        if dashdash:
            _check_path(arg, protected)
            paths.append(arg)
        elif arg == "--":
            dashdash = True
        elif arg.startswith("--"):
            _check_long(command, arg)
            if "=" in arg:
                _check_path(arg.split("=", 1)[1], protected, word=False)
            before.append(arg)
        elif arg.startswith("-") and len(arg) > 1:
            _check_short(command, arg)
            before.append(arg)
        else:
            _check_path(arg, protected)
            before.append(arg)
    if command == "init" and (paths or any(not a.startswith("-") for a in before)):
        raise _bad("git init takes no directory: the repository is the workspace's")
    if not protected:
        return [*before, "--", *paths] if dashdash else before
    if command in _WRITES:
        for arg in [*paths, *(a for a in before if not a.startswith("-"))]:
            if any(c in arg for c in "*?["):
                raise _bad(f"{arg!r}: with protected paths, git {command} takes literal "
                           "paths, not patterns")
            if _holds_protected(workspace, arg, protected):
                raise ToolError(f"{arg!r} holds a path protected by this agent's policy;"
                                f" name the files for git {command} one by one",
                                code="path_protected")
    if command not in _READS:
        return [*before, "--", *paths] if dashdash else before
    excludes = [f":(exclude,icase){p}" for p in normalise_patterns(protected)]
    if not dashdash:
        # Without ``--`` git tells revisions from paths by what exists; trailing
        # arguments that name workspace files become paths after ``--``.
        positional = [i for i, a in enumerate(before) if not a.startswith("-")]
        if command == "status":
            paths = [before[i] for i in positional]
            before = [a for a in before if a.startswith("-")]
        else:
            existing = [i for i in positional if _exists(workspace, before[i])]
            if existing:
                first = existing[0]
                if any(not _exists(workspace, a) for a in before[first:]):
                    raise _bad("put paths after '--' (git " + command + " with "
                               "protected paths)")
                before, paths = before[:first], before[first:]
    return [*before, "--", *paths, *excludes]
