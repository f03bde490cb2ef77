"""The workspace repository's git configuration, checked before every git call.

The model can write ``.git/config`` with the file tools; git then runs whatever that
file names: a ``filter.*.clean`` driver on ``git add``, ``gpg.program`` on commit, a
textconv driver on ``git log -p``, ``core.fsmonitor`` on ``git status``, an
``include.path`` pulling in a file with more of the same. ``-c`` overrides on the
command line cannot switch all of that off (a filter driver's name is the model's
choice), so the config is read here first and checked against an allow-list of keys
known to run nothing; anything else, and anything this parser does not read exactly as
git would, refuses the call (``git_config_refused``, naming the key).

The parser follows git's own (``config.c``: ``git_parse_source``, ``get_base_var``,
``get_value``, ``parse_value``) byte for byte on what it accepts, and refuses the rest,
so a file cannot mean one thing here and another to git. The files are read through the
workspace's no-follow readers (a link in place of ``.git`` or its config is refused).
"""

from __future__ import annotations

from agentd.errors import ToolError
from agentd.sandbox import Workspace

__all__ = ["check_repository", "parse_config"]

MAX_CONFIG = 64 * 1024
_BOM = b"\xef\xbb\xbf"

#: Keys (section -> names) that run nothing and reach nothing; ``*``: any name.
_PLAIN: dict[str, frozenset[str]] = {
    "core": frozenset({
        "repositoryformatversion", "filemode", "bare", "logallrefupdates", "ignorecase",
        "precomposeunicode", "symlinks", "autocrlf", "eol", "safecrlf", "quotepath",
        "checkstat", "trustctime", "abbrev", "compression", "loosecompression",
        "untrackedcache", "preloadindex", "warnambiguousrefs", "commentchar",
        "whitespace", "sharedrepository", "fsync", "fsyncmethod", "splitindex"}),
    "user": frozenset({"name", "email", "useconfigonly"}),
    "init": frozenset({"defaultbranch"}),
    "extensions": frozenset({"objectformat"}),
    "status": frozenset({"showuntrackedfiles", "short", "branch", "relativepaths",
                         "renames", "renamelimit", "aheadbehind"}),
    "diff": frozenset({"renames", "algorithm", "mnemonicprefix", "noprefix", "context",
                       "interhunkcontext", "indentheuristic", "renamelimit"}),
    "log": frozenset({"date", "decorate", "abbrevcommit", "showroot", "follow"}),
    "pull": frozenset({"rebase", "ff"}),
    "push": frozenset({"default"}),
    "merge": frozenset({"conflictstyle", "ff"}),
    "commit": frozenset({"verbose", "status", "cleanup"}),
    "advice": frozenset({"*"}),
    "color": frozenset({"*"}),
}
#: Keys of sections with a subsection (``[branch "main"]``).
_NAMED: dict[str, frozenset[str]] = {
    "branch": frozenset({"remote", "merge", "rebase", "description", "pushremote"}),
    "remote": frozenset({"url", "fetch", "pushurl", "tagopt", "prune"}),
    "color": frozenset({"*"}),
}


def _refuse(message: str) -> ToolError:
    return ToolError(message + "; git is not run with this repository configuration "
                     "(it could make git run programs)", code="git_config_refused")


def _isspace(c: int) -> bool:
    return c in b" \t\n\r"  # git's own isspace: no \v or \f


def _isalpha(c: int) -> bool:
    return 65 <= c <= 90 or 97 <= c <= 122


def _iskeychar(c: int) -> bool:
    return _isalpha(c) or 48 <= c <= 57 or c == 45  # alnum or '-'


def _lower(c: int) -> int:
    return c + 32 if 65 <= c <= 90 else c


class _Source:
    """git's ``get_next_char``: CRLF is LF, the end of the file is a final LF."""

    def __init__(self, data: bytes) -> None:
        self.data, self.pos, self.eof = data, 0, False

    def next(self) -> int:
        if self.pos >= len(self.data):
            self.eof = True
            return 10
        c = self.data[self.pos]
        self.pos += 1
        if c == 13 and self.pos < len(self.data) and self.data[self.pos] == 10:
            self.pos += 1
            return 10
        return c


def parse_config(data: bytes, where: str) -> list[tuple[str, str | None]]:
    """(name, value) of every entry, names as git keys them (``filter.x.clean``);
    raises ``git_config_refused`` on anything git would not read the same way."""
    if len(data) > MAX_CONFIG:
        raise _refuse(f"{where} is bigger than {MAX_CONFIG} bytes")
    if data[:1] == _BOM[:1]:
        if not data.startswith(_BOM):
            raise _refuse(f"{where}: a partial byte-order mark")
        data = data[3:]
    src = _Source(data)
    entries: list[tuple[str, str | None]] = []
    base: bytearray | None = None
    comment = False
    while True:
        c = src.next()
        if c == 10:
            if src.eof:
                return entries
            comment = False
            continue
        if comment or _isspace(c):
            continue
        if c in b"#;":
            comment = True
            continue
        if c == 91:  # '['
            base = _section(src, where)
            continue
        if not _isalpha(c) or base is None:
            raise _refuse(f"{where}: a line git's parser would not read as written "
                          f"(near byte {src.pos})")
        name = bytearray(base + b"." + bytes([_lower(c)]))
        entries.append(_entry(src, name, where))


def _section(src: _Source, where: str) -> bytearray:
    name = bytearray()
    while True:
        c = src.next()
        if src.eof:
            raise _refuse(f"{where}: an unfinished section header")
        if c == 93:  # ']'
            break
        if _isspace(c):
            # [section "subsection"]: the subsection keeps its case and escapes.
            while _isspace(c):
                if c == 10:
                    raise _refuse(f"{where}: an unfinished section header")
                c = src.next()
            if c != 34:
                raise _refuse(f"{where}: a section header git would not read")
            name.append(46)
            while True:
                c = src.next()
                if c == 10:
                    raise _refuse(f"{where}: an unfinished section header")
                if c == 34:
                    break
                if c == 92:
                    c = src.next()
                    if c == 10:
                        raise _refuse(f"{where}: an unfinished section header")
                name.append(c)
            if src.next() != 93:
                raise _refuse(f"{where}: a section header git would not read")
            break
        if not _iskeychar(c) and c != 46:
            raise _refuse(f"{where}: a section header git would not read")
        name.append(_lower(c))
    if not name:
        raise _refuse(f"{where}: an empty section header")
    return name


def _entry(src: _Source, name: bytearray, where: str) -> tuple[str, str | None]:
    while True:
        c = src.next()
        if src.eof or not _iskeychar(c):
            break
        name.append(_lower(c))
    while c in b" \t":
        c = src.next()
    value: str | None = None
    if c != 10:
        if c != 61:  # '='
            raise _refuse(f"{where}: {name.decode('latin-1')!r} is not followed by '='")
        value = _value(src, name, where)
    return name.decode("utf-8", "replace"), value


def _value(src: _Source, name: bytearray, where: str) -> str:
    out = bytearray()
    quote = comment = False
    while True:
        c = src.next()
        if c == 10:
            if quote:
                raise _refuse(f"{where}: an unclosed quote in {name.decode('latin-1')!r}")
            return out.decode("utf-8", "replace").rstrip(" \t\r")
        if comment:
            continue
        if _isspace(c) and not quote:
            if out:
                out.append(c)
            continue
        if not quote and c in b"#;":
            comment = True
            continue
        if c == 92:  # backslash
            c = src.next()
            if c == 10:
                continue  # a continuation line
            escaped = {116: 9, 98: 8, 110: 10, 92: 92, 34: 34}.get(c)
            if escaped is None:
                raise _refuse(f"{where}: an unknown escape in {name.decode('latin-1')!r}")
            out.append(escaped)
            continue
        if c == 34:
            quote = not quote
            continue
        out.append(c)


def _allowed(name: str) -> bool:
    section, _, rest = name.partition(".")
    if "." in rest:
        _, _, key = rest.rpartition(".")
        keys = _NAMED.get(section)
    else:
        key, keys = rest, _PLAIN.get(section)
    return keys is not None and ("*" in keys or key in keys)


def _file(workspace: Workspace, path: str) -> bytes | None:
    """A regular file of the workspace, None if there is nothing of that name."""
    try:
        kind = workspace.kind(path)
    except ToolError as exc:
        if "does not exist" in exc.message:
            return None
        raise _refuse(f"{path}: {exc.message}") from None
    if kind != "file":
        raise _refuse(f"{path} is a {kind}, not a regular file")
    data, size = workspace.read_bytes(path, limit=MAX_CONFIG + 1)
    if size > MAX_CONFIG:
        raise _refuse(f"{path} is bigger than {MAX_CONFIG} bytes")
    return data


def check_repository(workspace: Workspace) -> None:
    """Refuse (``git_config_refused``) a repository whose configuration could make git
    run a program or read another repository."""
    try:
        kind = workspace.kind(".git")
    except ToolError:
        return  # no repository yet (git init), or nothing git would find either
    if kind != "dir":
        # A ``gitdir:`` file (or a link) sends git to a repository elsewhere, whose
        # config this check would not see.
        raise _refuse(f".git is a {kind}, not a directory")
    for path in (".git/commondir", ".git/objects/info/alternates"):
        if _file(workspace, path) is not None:
            raise _refuse(f"{path} points git at another repository")
    for path in (".git/config", ".git/config.worktree"):
        data = _file(workspace, path)
        if data is None:
            continue
        for name, _ in parse_config(data, path):
            if not _allowed(name):
                raise _refuse(f"{path} sets {name!r}, which is not on the list of "
                              "settings known to run nothing")
