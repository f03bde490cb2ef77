"""The allow-list: whether a shell line can be shown to do only known-safe things.

The deny-list walk in :mod:`agentd.security.commands` looks for what is dangerous and
so misses what it does not know (``bash x.sh``, ``awk 'BEGIN{system(...)}'``,
``trap ... EXIT``). This module answers the opposite question, for sessions where the
sandbox is not the wall: is *every* simple command a program from a known-safe set,
with arguments that cannot make it run code or write outside the workspace, and is the
line free of every construct that runs code (substitutions, ``eval``, functions,
traps, assignments, backgrounding...)? Anything it cannot parse or classify is "no".

It is deliberately narrow and reads the line three times: a search for ``$(``,
backticks, ``<(`` and ANSI-C quoting whatever the quoting seems to be; a quote-aware
scan for ``${...}`` with operators; then the bashlex tree. The first two refuse, before
parsing, what the parser might read differently from bash. Every argument is judged
as bash will hand it to the program, after brace expansion, quote removal and loop
variables (:mod:`agentd.security._expand`): ``cat {/etc/passwd,x}`` reads
``/etc/passwd``, and a file-name pattern is judged by what it can match.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from agentd.security._expand import (
    Pattern,
    can_be_dotdot,
    expand,
    is_literal,
    may_be_option,
    may_start,
    option_hazard,
    render,
)
from agentd.security._expand import Unsafe as _Unsafe
from agentd.security._vocab import _PERSIST_PATH_RE, _SECRET_RE

__all__: list[str] = []

logger = logging.getLogger(__name__)


def parse_bash(text: str) -> Any:
    """``bashlex.parse(text)``, importing bashlex on first use: bashlex builds its parser
    tables whenever it is imported (about 0.1 s of CPU), which every process that
    imports :mod:`agentd.security` would pay (the CLI does, through the client). The
    tool-worker zygote imports it when the first shell command is judged, for every
    worker it forks after (``WorkerPool.ready("bashlex")``)."""
    import bashlex  # type: ignore[import-untyped]

    return bashlex.parse(text)


#: Longer lines are asked about unparsed: bashlex takes ~0.1 s per 1,000 characters
#: here, and everyday read-only work fits well within this.
_MAX_CHARS = 8_000
_MAX_NODES = 2_000
_MAX_DEPTH = 40
#: Words (and their characters) all the line's words may expand to, counted over
#: every loop value.
_LINE_WORDS = 4_096
_LINE_CHARS = 262_144

#: Programs that only read and print: no option makes them run a program or write. An
#: option naming a file to read is judged like any path (a glob that could become such
#: an option too); where a file lists more files to read, a check below refuses it.
_PLAIN = frozenset({
    "ls", "cat", "head", "tail", "wc", "grep", "egrep", "fgrep", "cut", "tr", "nl", "tac",
    "rev", "fold", "paste", "expand", "unexpand", "od", "hexdump", "stat", "file", "du",
    "df", "cmp", "comm", "diff", "md5sum", "sha1sum", "sha224sum", "sha256sum",
    "sha384sum", "sha512sum", "b2sum", "cksum", "basename", "dirname", "realpath",
    "readlink", "pwd", "echo", "true", "false", "whoami", "id", "uname", "seq", "sleep",
    "column", "join", "jq", "which", "strings", "numfmt", "fmt", "nproc", "arch", "tty",
    "groups", "locale", "type",
})
#: Programs none of whose options names a file or directory: a glob matching a
#: workspace name like ``-f..`` or ``--from-file=..`` changes only what they print.
_NO_FILE_OPTIONS = frozenset({
    "ls", "cat", "head", "tail", "nl", "tac", "rev", "fold", "paste", "expand",
    "unexpand", "cut", "tr", "od", "stat", "df", "cmp", "comm", "join", "basename",
    "dirname", "readlink", "pwd", "echo", "printf", "true", "false", "whoami", "id",
    "uname", "seq", "sleep", "numfmt", "fmt", "nproc", "arch", "tty", "groups", "locale",
    "type", "which", "test", "[",
})

#: Builtins and programs that run other code or change how later commands resolve;
#: never allowed, not even by a user rule naming them by pattern.
CODE_RUNNERS = frozenset({
    "eval", "source", ".", "exec", "env", "command", "builtin", "trap", "alias", "enable",
    "declare", "typeset", "export", "local", "readonly", "let", "read", "mapfile",
    "readarray", "hash", "shopt", "fc", "bind", "complete", "compgen", "coproc", "xargs",
    "nohup", "setsid", "timeout", "nice", "ionice", "stdbuf", "sudo", "doas", "su",
    "runuser", "chroot", "watch", "strace", "ltrace", "busybox", "flock", "unbuffer",
    "time", "script", "parallel", "caffeinate", "torsocks", "proxychains",
    "proxychains4", "ld.so", "unalias", "wait", "disown", "jobs", "fg", "bg", "select",
})

_GIT_READ = frozenset({"status", "diff", "log", "show", "rev-parse", "ls-files", "blame",
                       "shortlog", "describe", "ls-tree", "rev-list", "whatchanged",
                       "merge-base", "name-rev", "show-ref", "count-objects", "grep",
                       "branch", "tag", "reflog", "version", "cat-file", "annotate"})
#: What the git tool may write in the workspace (it runs git with hooks, editors,
#: pagers, fsmonitor and the network switched off).
_GIT_TOOL_WRITE = frozenset({"add", "commit", "init", "checkout", "restore", "reset",
                             "rm", "mv"})
#: Subcommand options that run programs, write files or leave the repository.
_GIT_BAD_OPTS = ("--exec", "--output", "--ext-diff", "--textconv", "--upload-pack",
                 "--receive-pack", "--config", "--no-index", "--open-files-in-pager",
                 "--show-signature", "--filters", "--git-dir", "--work-tree",
                 "--exec-path", "--template", "--separate-git-dir", "--pathspec-from-file")
_GIT_LISTING = {"branch": frozenset({"-a", "-r", "-v", "-vv", "--list", "-l", "--all",
                                     "--remotes", "--show-current", "--verbose"}),
                "tag": frozenset({"-l", "--list", "-n"})}
#: Git's own commands, which no alias can shadow; config-touching ones left out.
_GIT_BUILTIN = _GIT_READ | _GIT_TOOL_WRITE | frozenset({
    "am", "apply", "archive", "bisect", "bundle", "cherry", "cherry-pick", "clean",
    "clone", "fetch", "format-patch", "fsck", "gc", "merge", "notes", "prune", "pull",
    "push", "range-diff", "rebase", "remote", "repack", "revert", "stash", "switch",
    "worktree", "ls-remote", "sparse-checkout", "restore"})

_TEST_UNARY = frozenset({"-a", "-b", "-c", "-d", "-e", "-f", "-g", "-h", "-k", "-L", "-n",
                         "-N", "-O", "-G", "-p", "-r", "-s", "-S", "-t", "-u", "-w", "-x",
                         "-z", "!"})
_TEST_BINARY = frozenset({"=", "==", "!=", "-eq", "-ne", "-lt", "-le", "-gt", "-ge", "-nt",
                          "-ot", "-ef", "<", ">"})
_SED_ADDR = r"(?:\d+|\$|/(?:[^/\\]|\\.)*/)"
_SED_CMD = re.compile(
    rf"\s*(?:{_SED_ADDR}(?:\s*,\s*{_SED_ADDR})?)?\s*!?\s*"
    r"(?:[pdqQ=nN]|s/(?:[^/\\\n]|\\.)*/(?:[^/\\\n]|\\.)*/[gpiI0-9]*)\s*")
_LOOP_VAR = re.compile(r"[a-z_][a-z0-9_]*")
_PROXY_VARS = frozenset({"http_proxy", "https_proxy", "ftp_proxy", "no_proxy",
                         "all_proxy"})
_COMMAND_WORD = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]*|\[")
#: Where a user's rule names the program: a path (``./build.sh``) as written, but still
#: nothing quoted, escaped or expanded.
_RULE_COMMAND_WORD = re.compile(r"[A-Za-z0-9_./][A-Za-z0-9_./+-]*|\[")


_ANYWHERE = re.compile(r"`|\$[(\['\"]|[<>]\(")


@dataclass(frozen=True, slots=True)
class _Arg:
    text: str  # after expansion and quote removal (a pattern as written)
    dynamic: bool  # a glob or a loop variable: its value is not one known string
    quoted: bool  # every expansion in it is inside double quotes (no splitting)
    variants: tuple[Pattern, ...] = ()  # every form it takes (see _expand.Word)


def check(command: str, *, require_known: bool, git_tool: bool = False) -> str | None:
    """Why ``command`` is not provably safe, or None when it is.

    Args:
        command: The shell line.
        require_known: Every program must be in the safe set (the built-in policy). When
            False (a user's ``commands`` allow rule already named the programs), any
            program passes except the code runners, but the constructs and the options
            the per-program checks forbid are still refused.
        git_tool: The line is a call of the git tool (``git <command> <args>``), which
            may also write the workspace's repository.
    """
    if len(command) > _MAX_CHARS:
        return f"the line is longer than {_MAX_CHARS} characters (not checked)"
    try:
        if not git_tool:
            # Whatever the quoting seems to be: a here-document body with a stray quote
            # would otherwise hide what follows it from the quote-aware scan.
            found = _ANYWHERE.search(command)
            if found:
                raise _Unsafe(f"{found.group(0)!r} (substitution, arithmetic or ANSI-C "
                              "quoting) in the line")
        _raw_scan(command)
        text = re.sub(r"<<(-?)\s*(['\"])(\w+)\2", r"<<\1\3", command)
        if not text.strip():
            return None
        try:
            nodes = parse_bash(text)
        except Exception as exc:  # bashlex raises several types, including bare ones
            raise _Unsafe(f"the line does not parse ({type(exc).__name__})") from None
        walker = _Walker(text, require_known=require_known, git_tool=git_tool)
        for node in nodes:
            walker.node(node, 0)
    except _Unsafe as exc:
        return str(exc)
    except RecursionError:
        return "the line is nested too deeply"
    except Exception as exc:  # a policy check must answer, whatever the input
        logger.warning("allow-list check error: %r", exc)
        return f"the allow-list could not check this line ({type(exc).__name__})"
    return None


def _raw_scan(line: str) -> None:
    """Refuse, before parsing, every construct that runs code through expansion."""
    if re.search(r"[\x00-\x08\x0b-\x1f\x7f]", line):
        raise _Unsafe("control characters in the line")
    if "\\\n" in line:
        raise _Unsafe("a line continuation")
    i, n, quote = 0, len(line), ""
    while i < n:
        c = line[i]
        if quote == "'":
            if c == "'":
                quote = ""
        elif c == "\\":
            i += 1
        elif c == "`":
            raise _Unsafe("command substitution (backticks)")
        elif c == "$":
            nxt = line[i + 1:i + 2]
            if nxt in ("(", "["):
                raise _Unsafe("command substitution or arithmetic ($(...))")
            if nxt in ("'", '"') and not quote:
                raise _Unsafe("$'...' or $\"...\" quoting")
            if nxt == "{":
                m = re.match(r"\{[A-Za-z_][A-Za-z0-9_]*\}", line[i + 1:])
                if m is None:
                    raise _Unsafe("a ${...} expansion with operators")
                i += m.end()
        elif quote == '"':
            if c == '"':
                quote = ""
        elif c in "'\"":
            quote = c
        elif c in "<>" and line[i + 1:i + 2] == "(":
            raise _Unsafe("process substitution")
        i += 1


class _Walker:
    def __init__(self, text: str, *, require_known: bool, git_tool: bool) -> None:
        self.text = text
        self.require_known = require_known
        self.git_tool = git_tool
        self.count = 0
        self.words = 0
        self.chars = 0
        # A loop variable is known only inside its loop's body: after the loop (or
        # when the list was empty) it holds whatever the shell had before.
        self.loop_vars: dict[str, tuple[Pattern, ...]] = {}

    def node(self, node: Any, depth: int) -> None:
        self.count += 1
        if self.count > _MAX_NODES or depth > _MAX_DEPTH:
            raise _Unsafe("the line is too large or nested too deeply to check")
        kind = node.kind
        if kind == "list":
            for part in node.parts:
                if part.kind == "operator" and part.op == "&":
                    raise _Unsafe("a command is sent to the background (&)")
                self.node(part, depth + 1)
        elif kind == "pipeline":
            for part in node.parts:
                if part.kind not in ("pipe", "reservedword"):
                    self.node(part, depth + 1)
        elif kind == "compound":
            for part in node.list:
                if part.kind != "reservedword":
                    self.node(part, depth + 1)
            for redirect in getattr(node, "redirects", ()):
                self.redirect(redirect)
        elif kind in ("if", "while", "until"):
            for part in node.parts:
                if part.kind != "reservedword":
                    self.node(part, depth + 1)
        elif kind == "for":
            self.for_loop(node, depth)
        elif kind == "command":
            self.command(node)
        elif kind in ("operator", "reservedword", "pipe"):
            return
        elif kind == "function":
            raise _Unsafe("a function definition")
        else:
            raise _Unsafe(f"a {kind} construct")

    def for_loop(self, node: Any, depth: int) -> None:
        parts = [p for p in node.parts if not (p.kind == "reservedword"
                                               and p.word in ("for", "do", "done"))]
        if (len(parts) < 3 or parts[0].kind != "word" or parts[1].kind != "reservedword"
                or parts[1].word != "in"):
            # `for f; do` walks the positional parameters: not known here.
            raise _Unsafe("a for loop of an unusual form (only `for name in words`)")
        var = parts[0].word
        if not _LOOP_VAR.fullmatch(var) or var in _PROXY_VARS:
            raise _Unsafe(f"a for loop assigning {var!r} (only lower-case names)")
        values: list[Pattern] = []
        body: list[Any] = []
        for part in parts[2:]:
            if part.kind == "word" and not body:
                # Before the variable is bound: `for f in $f` is not known.
                values += [v for a in self.args(part) for v in a.variants]
            elif part.kind != "reservedword":
                body.append(part)
        if not values:
            raise _Unsafe("a for loop over no words")
        outer = self.loop_vars.get(var)
        self.loop_vars[var] = tuple(values)
        try:
            for part in body:
                self.node(part, depth + 1)
        finally:
            if outer is None:
                del self.loop_vars[var]
            else:
                self.loop_vars[var] = outer

    def args(self, word: Any) -> list[_Arg]:
        """The arguments bash makes of one word, each judged in every form it takes."""
        source = self.text[word.pos[0]:word.pos[1]]
        out = []
        for expanded in expand(source, self.loop_vars):
            self.words += len(expanded.variants)
            self.chars += sum(len(v) for v in expanded.variants)
            if self.words > _LINE_WORDS or self.chars > _LINE_CHARS:
                raise _Unsafe(f"the line expands to more than {_LINE_WORDS} words or "
                              f"{_LINE_CHARS} characters")
            for variant in expanded.variants:
                self.path(variant)
            out.append(_Arg(text=expanded.text, dynamic=expanded.dynamic,
                            quoted=expanded.quoted and not expanded.glob,
                            variants=expanded.variants))
        return out

    def path(self, pattern: Pattern) -> None:
        """Refuse an argument that names, or can match, a path out of the workspace."""
        text = render(pattern)
        if not is_literal(pattern) and (text.startswith("/") or ".." in text.split("/")
                                        or can_be_dotdot(pattern)):
            raise _Unsafe(f"a glob that can reach outside the workspace ({text})")
        if self.require_known and _outside(text):
            # On a backend that does not isolate, the host's files and the other
            # agents' workspaces (siblings of this one) are there to read.
            raise _Unsafe(f"{text} is outside the workspace")
        if _SECRET_RE.search(text) or any(_SECRET_RE.search(p)
                                          for p in text.split("=", 1)[1:]):
            raise _Unsafe(f"{text} names a secret")
        if re.search(r"/dev/(tcp|udp)/", text):
            raise _Unsafe(f"{text} is a network socket")

    def command(self, node: Any) -> None:
        words: list[Any] = []
        for part in node.parts:
            if part.kind == "assignment":
                raise _Unsafe(f"an assignment ({part.word.split('=', 1)[0]}=...)")
            if part.kind == "redirect":
                self.redirect(part)
            elif part.kind == "word":
                words.append(part)
            else:
                raise _Unsafe(f"a {part.kind} in a command")
        if not words:
            return
        head = self.text[words[0].pos[0]:words[0].pos[1]]
        if not (_COMMAND_WORD if self.require_known else _RULE_COMMAND_WORD).fullmatch(head):
            raise _Unsafe(f"the command name {head!r} is quoted, built or a path")
        name = words[0].word
        args = [a for w in words[1:] for a in self.args(w)]
        if name in CODE_RUNNERS:
            raise _Unsafe(f"{name} runs other commands or changes how they run")
        if self.require_known and name not in _NO_FILE_OPTIONS:
            for a in args:
                if any(option_hazard(v) for v in a.variants):
                    # A name the pattern matches can be an option with a path glued
                    # on: a directory named -f makes */etc/passwd `-f/etc/passwd`.
                    raise _Unsafe(f"{name} {a.text}: a name this pattern matches could "
                                  "be an option naming a path (write ./ before it)")
        checker = _CHECKS.get(name)
        if checker is not None:
            checker(self, args)
        elif self.require_known and name not in _PLAIN:
            raise _Unsafe(f"{name} is not in the known-safe set")

    def redirect(self, node: Any) -> None:
        rtype = node.type
        if rtype == "<<-":
            raise _Unsafe("a <<- here-document (its end is found differently by bash)")
        if rtype == "<<":
            delimiter = self.text[node.output.pos[0]:node.output.pos[1]]
            if not re.fullmatch(r"\w+", delimiter):
                # bash ends `<<E\OF` at a line "EOF"; the parser would not.
                raise _Unsafe(f"the here-document delimiter {delimiter!r}")
            body = node.heredoc.value if getattr(node, "heredoc", None) else ""
            if "$" in body or "`" in body:
                raise _Unsafe("a here-document with expansions")
            return
        target = node.output
        if isinstance(target, int):
            if rtype in (">&", "<&") and target in (0, 1, 2):
                return
            raise _Unsafe(f"a redirection to file descriptor {target}")
        if not hasattr(target, "pos"):
            raise _Unsafe(f"the redirection {rtype}{target}")
        if rtype == "<<<":
            self.args(target)
            return
        source = self.text[target.pos[0]:target.pos[1]]
        # bash expands the target too, and drops an empty word: `< {/etc/passwd,}`
        # reads /etc/passwd.
        expanded = self.args(target)
        if len(expanded) != 1 or expanded[0].dynamic or expanded[0].text == "-":
            raise _Unsafe(f"a redirection to a computed name ({source})")
        path = expanded[0].text
        if re.match(r"/dev/(tcp|udp)/|/proc/", path):
            raise _Unsafe(f"a redirection to {path}")
        if _SECRET_RE.search(path):
            raise _Unsafe(f"a redirection from or to a secret ({path})")
        if rtype in ("<", "<&"):
            if self.require_known and _outside(path):
                raise _Unsafe(f"reads {path}, outside the workspace")
            return
        if rtype not in (">", ">>", ">|", "&>", "&>>", ">&"):
            raise _Unsafe(f"the redirection {rtype}")
        if self.require_known and path not in _SINKS:
            # Known-safe means read-only: which directory a relative name lands in
            # depends on the (persistent) shell's cwd, and a file written there can be
            # a config that names programs (.git/config, $HOME/.gitconfig: HOME is the
            # workspace).
            raise _Unsafe(f"writes the file {path} (the allow-list covers reads only)")
        _write_target(path)


_SINKS = ("/dev/null", "/dev/stdout", "/dev/stderr")


def _outside(text: str) -> bool:
    """Whether an argument names a path outside the workspace: absolute, ``~`` or with
    a ``..`` step, alone, after ``=`` (``--file=/x``) or glued to short flags: the
    value can start after any of them (``-f/x``, ``-rnf../x``)."""
    if ".." in re.split(r"[/=]", text):
        return True
    if re.match(r"-[A-Za-z0-9]", text) and re.search(r"[/~]|\.\.(?![^/=])", text[2:]):
        return True
    return any(value.startswith(("/", "~")) and value not in _SINKS
               for value in (text, *text.split("=", 1)[1:]))


def _write_target(path: str) -> None:
    if path in _SINKS:
        return
    parts = path.split("/")
    if path.startswith(("/", "~")) or ".." in parts:
        raise _Unsafe(f"writes outside the workspace ({path})")
    if any(p.startswith(".") and p != "." for p in parts) or _PERSIST_PATH_RE.search(path):
        # Dot files and directories are where configs live (.git/config, .gitconfig,
        # .config/git/config, .bashrc): a config can name programs to run.
        raise _Unsafe(f"writes {path}, which can make later commands run code")


# --- per-program checks: options that run code or write ---------------------------

#: A program's check, looked up by its name; it raises `_Unsafe` to refuse. Adding a
#: program is one decorated function.
_CHECKS: dict[str, Callable[[_Walker, Sequence[_Arg]], None]] = {}


def _check(*programs: str) -> Callable[[Callable[[_Walker, Sequence[_Arg]], None]],
                                       Callable[[_Walker, Sequence[_Arg]], None]]:
    def register(fn: Callable[[_Walker, Sequence[_Arg]], None]
                 ) -> Callable[[_Walker, Sequence[_Arg]], None]:
        for program in programs:
            _CHECKS[program] = fn
        return fn
    return register


def _literal(name: str, args: Sequence[_Arg]) -> list[str]:
    if any(a.dynamic for a in args):
        raise _Unsafe(f"{name} with a glob or variable argument (it could become an "
                      "option)")
    return [a.text for a in args]


def _long(arg: str, forbidden: Sequence[str]) -> bool:
    """Whether ``arg`` is one of the long options, or an abbreviation getopt accepts."""
    if not arg.startswith("--") or len(arg) < 3:
        return False
    opt = arg.split("=", 1)[0]
    return any(f.startswith(opt) for f in forbidden)


#: Options with which a program reads the files another file lists (``md5sum -c
#: sums.txt`` reads each file sums.txt names, /etc/shadow included).
#: Each: the long options, the short one, and whether it takes a (glued) value.
_NAME_LISTS: dict[str, tuple[tuple[str, ...], str, bool]] = {
    **{p: (("--check",), "c", False) for p in (
        "md5sum", "sha1sum", "sha224sum", "sha256sum", "sha384sum", "sha512sum", "b2sum",
        "cksum")},
    "wc": (("--files0-from",), "", True), "du": (("--files0-from",), "", True),
    "file": (("--files-from",), "f", True),
}


def _name_list_check(name: str, long_opts: tuple[str, ...], short: str, glued: bool
                     ) -> Callable[[_Walker, Sequence[_Arg]], None]:
    def check(w: _Walker, args: Sequence[_Arg]) -> None:
        for a in args:
            if a.dynamic:
                # A workspace name the pattern matches could be that option (a file
                # named --files0-from=x.py among *.py).
                if any(may_be_option(v, glued=glued) for v in a.variants):
                    raise _Unsafe(f"{name} {a.text}: a name this pattern matches could "
                                  "be an option that reads a list of files (write ./ "
                                  "before it)")
            elif _long(a.text, long_opts) or (short and re.match(rf"-[^-]*{short}",
                                                                  a.text)):
                raise _Unsafe(f"{name} {a.text} reads the files another file names")
    return check


for _name, _spec in _NAME_LISTS.items():
    _check(_name)(_name_list_check(_name, *_spec))


@_check("strings")
def _strings(w: _Walker, args: Sequence[_Arg]) -> None:
    for a in args:
        # binutils reads more options, and file names, from @FILE.
        if a.text.startswith("@") or (a.dynamic and any(may_start(v, "@")
                                                        for v in a.variants)):
            raise _Unsafe(f"strings {a.text}: @FILE reads options and names from a file")


@_check("find")
def _find(w: _Walker, args: Sequence[_Arg]) -> None:
    for a in _literal("find", args):
        if a in ("-exec", "-execdir", "-ok", "-okdir", "-delete", "-fprint", "-fprint0",
                 "-fprintf", "-fls"):
            raise _Unsafe(f"find {a} runs commands or writes files")


@_check("sort")
def _sort(w: _Walker, args: Sequence[_Arg]) -> None:
    for a in _literal("sort", args):
        if _long(a, ("--output", "--compress-program")) or (
                a.startswith("-") and not a.startswith("--") and "o" in a):
            raise _Unsafe(f"sort {a} writes a file or runs a program")


@_check("uniq")
def _uniq(w: _Walker, args: Sequence[_Arg]) -> None:
    texts = _literal("uniq", args)
    operands, skip = [], False
    for a in texts:
        if skip:
            skip = False
        elif a in ("-f", "-s", "-w"):
            skip = True
        elif not a.startswith("-") or a == "-":
            operands.append(a)
    if len(operands) > 1:
        raise _Unsafe("uniq with two operands writes the second")


@_check("date")
def _date(w: _Walker, args: Sequence[_Arg]) -> None:
    for a in _literal("date", args):
        if _long(a, ("--set",)) or (a.startswith("-") and not a.startswith("--")
                                    and "s" in a):
            raise _Unsafe("date -s sets the clock")


@_check("printf")
def _printf(w: _Walker, args: Sequence[_Arg]) -> None:
    if args and (args[0].dynamic or args[0].text == "-v"):
        raise _Unsafe("printf -v assigns a variable")


@_check("tree")
def _tree(w: _Walker, args: Sequence[_Arg]) -> None:
    for a in _literal("tree", args):
        if a.startswith(("-o", "-R")) or _long(a, ("--output",)):
            raise _Unsafe(f"tree {a} writes files")


@_check("test", "[")
def _test(w: _Walker, args: Sequence[_Arg]) -> None:
    body = list(args)
    if body and body[-1].text == "]" and not body[-1].dynamic:
        body = body[:-1]
    if any(a.text in ("-v", "-R") and not a.dynamic for a in body):
        raise _Unsafe("test -v / -R evaluate array subscripts")
    if not any(a.dynamic for a in body):
        return
    if any(a.dynamic and not a.quoted for a in body):
        raise _Unsafe("test with an unquoted variable or glob")
    ok = (len(body) == 1 or (len(body) == 2 and not body[0].dynamic
                             and body[0].text in _TEST_UNARY)
          or (len(body) == 3 and not body[1].dynamic and body[1].text in _TEST_BINARY))
    if not ok:
        raise _Unsafe("test with variables in an unusual form")


@_check("cd")
def _cd(w: _Walker, args: Sequence[_Arg]) -> None:
    texts = _literal("cd", args)
    parts = texts[0].split("/") if len(texts) == 1 else [""]
    if len(texts) != 1 or texts[0].startswith(("-", "/")) or ".." in parts:
        raise _Unsafe("cd out of the workspace (only to a relative directory)")
    if any(p.startswith(".") and p != "." for p in parts):
        raise _Unsafe("cd into a dot directory (where configs live, as in .git)")


@_check("sed")
def _sed(w: _Walker, args: Sequence[_Arg]) -> None:
    scripts: list[str] = []
    take = False
    operands: list[str] = []
    for a in _literal("sed", args):
        if take:
            scripts.append(a)
            take = False
        elif a in ("-e", "--expression"):
            take = True
        elif a.startswith("-") and a != "-":
            if a not in ("-n", "-E", "-r", "--quiet", "--silent", "-s", "-u", "-z",
                         "--posix", "--regexp-extended", "--debug", "--sandbox"):
                raise _Unsafe(f"sed {a} (only reading options are known safe)")
        else:
            operands.append(a)
    if not scripts:
        if not operands:
            raise _Unsafe("sed without a script")
        scripts = operands[:1]
    for script in scripts:
        for part in script.split(";") if "s/" not in script else [script]:
            if part.strip() and not _SED_CMD.fullmatch(part):
                raise _Unsafe("a sed script beyond p, d, q and plain s///")


# complexity: one branch per git subcommand and option family the allow-list accepts;
# the table is the security boundary and reads best whole.
@_check("git")
def _git(w: _Walker, args: Sequence[_Arg]) -> None:
    texts = _literal("git", args)
    if w.require_known and not w.git_tool:
        # git reads config from the workspace ($HOME is the workspace, and .git/config),
        # which the agent can write, and config names programs: core.fsmonitor runs
        # on `git status`, core.pager, diff.external, textconv, aliases. The git tool
        # runs git with those switched off.
        raise _Unsafe("git in the shell runs programs its config in the workspace names "
                      "(core.fsmonitor, pager, diff drivers); the git tool does not")
    i = 0
    while i < len(texts) and texts[i].startswith("-"):
        if texts[i] not in ("--no-pager", "--version", "--no-replace-objects"):
            raise _Unsafe(f"the git option {texts[i]} (it can run programs or read "
                          "another repository)")
        i += 1
    if i == len(texts):
        return
    sub, rest = texts[i], texts[i + 1:]
    allowed = _GIT_READ | (_GIT_TOOL_WRITE if w.git_tool else frozenset())
    if w.require_known and sub not in allowed:
        raise _Unsafe(f"git {sub} is not a read-only git command")
    if not w.require_known and sub not in _GIT_BUILTIN:
        # An unknown name may be an alias from the repository's config ("!sh ...").
        raise _Unsafe(f"git {sub} is not a git command this policy knows (an alias?)")
    for a in rest:
        if _long(a, _GIT_BAD_OPTS) or re.match(r"-O|-c$|--config-env", a):
            raise _Unsafe(f"git {sub} {a} runs a program or writes outside the repository")
    if w.require_known and not w.git_tool:
        if sub == "reflog" and set(rest) & {"expire", "delete"}:
            raise _Unsafe("git reflog that deletes entries")
        if sub in ("branch", "tag") and not set(rest) & {"-l", "--list"} and any(
                a not in _GIT_LISTING[sub] for a in rest):
            raise _Unsafe(f"git {sub} that changes refs")
    if sub == "cat-file" and any(a.startswith("--") for a in rest):
        raise _Unsafe("git cat-file with filters")
