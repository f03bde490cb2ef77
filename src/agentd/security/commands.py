"""Classify a shell command line for policy, assuming whoever wrote it is hostile.

The line is parsed with bashlex, so a word inside quotes (``git commit -m "rm -rf /"``)
is an argument and never a command, while commands hidden in pipes, lists, subshells,
``$(...)``, backticks, process substitution, here-documents, ``eval`` / ``sh -c``
strings, ``xargs`` / ``find -exec`` and wrappers (``sudo``, ``env``, ``nohup``,
``timeout``...) are all found and judged one by one. Rules that need the whole line
(``curl | sh``, a secret read and a network call in the same line) run afterwards.

Where a rule had to choose, it leans towards a finding: a finding asks for approval,
a miss runs the command. Input bashlex cannot parse is itself a finding
("obfuscation"), and is still searched token by token so its other findings show.
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
import shlex
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import bashlex  # type: ignore[import-untyped]

from agentd.security._allowlist import check as _allowlist_check
from agentd.security._vocab import (
    _DANGEROUS_TARGET_RE,
    _DECODERS,
    _DEVICE_RE,
    _DISK_TOOLS,
    _DYNAMIC_PART_KINDS,
    _ESCAPE_RE,
    _FORK_BOMB_RE,
    _GIT_NETWORK,
    _IFS_RE,
    _INTERPRETERS,
    _NETWORK_TOOLS,
    _PERSIST_PATH_RE,
    _PERSIST_TOOLS,
    _PKG_INSTALL,
    _POWER,
    _PRIV_PATH_RE,
    _PRIV_TOOLS,
    _PY_NET_RE,
    _PY_OBF_RE,
    _SECRET_RE,
    _SHELLS,
    _SYSTEM_RE,
    _WRAPPER_VALUE_OPTS,
    _WRAPPERS,
)

__all__ = ["CATEGORIES", "Analysis", "Finding", "analyse", "provably_safe"]

logger = logging.getLogger(__name__)

CATEGORIES = ("destructive", "privilege", "network", "persistence", "exfiltration", "obfuscation")

_MAX_DEPTH = 6  # nested eval / sh -c / base64 strings followed before giving up
_MAX_LENGTH = 100_000


@dataclass(frozen=True, kw_only=True, slots=True)
class Finding:
    """One reason a command line needs attention.

    Attributes:
        category: One of `CATEGORIES`.
        command: The simple command (its ``argv[0]``) that triggered the finding.
        reason: Human-readable explanation, e.g. ``"rm -rf on /"``.
    """

    category: str
    command: str
    reason: str


@dataclass(frozen=True, kw_only=True, slots=True)
class Analysis:
    """What `analyse` found in one command line.

    Attributes:
        commands: Every simple command's argv (a substitution before the command that
            uses it), including those run
            through wrappers (``sudo rm x`` yields ``sudo rm x`` and ``rm x``).
        findings: Every finding, without duplicates.
        categories: The categories of `findings`.
        parse_error: Why the line could not be parsed, or None. A line that does not
            parse always has the ``"obfuscation"`` category.
    """

    commands: tuple[tuple[str, ...], ...]
    findings: tuple[Finding, ...]
    categories: frozenset[str]
    parse_error: str | None



# --- the walk ----------------------------------------------------------------------


@dataclass(slots=True)
class _Word:
    text: str
    dynamic: bool = False  # holds $VAR, $(...), `...` or <(...)
    source: str = ""  # as written, quotes and all


@dataclass(slots=True)
class _Simple:
    argv: list[_Word]
    writes: list[str] = field(default_factory=list)
    reads: list[str] = field(default_factory=list)
    stdin_text: str | None = None  # here-document or here-string body


@dataclass(slots=True)
class _State:
    commands: list[tuple[str, ...]] = field(default_factory=list)
    findings: dict[tuple[str, str, str], Finding] = field(default_factory=dict)
    secret_reads: list[str] = field(default_factory=list)
    network: list[str] = field(default_factory=list)
    source: str = ""  # the text bashlex parsed, for positions
    parse_error: str | None = None

    def add(self, category: str, command: str, reason: str) -> None:
        key = (category, command, reason)
        if key not in self.findings:
            self.findings[key] = Finding(category=category, command=command, reason=reason)


def analyse(command: str) -> Analysis:
    """Parse a shell command line and classify what it would do.

    Never raises: input that cannot be parsed yields ``parse_error`` and the
    ``"obfuscation"`` category, plus whatever a token-level search still finds.

    Args:
        command: The command line, as it would be handed to ``sh -c``.

    Returns:
        The simple commands found and the findings about them.
    """
    state = _State()
    try:
        if len(command) > _MAX_LENGTH:
            state.parse_error = f"command longer than {_MAX_LENGTH} characters"
            state.add("obfuscation", "", state.parse_error)
        else:
            _analyse_text(command, state, depth=0)
            _line_rules(state)
    except Exception as exc:  # a policy check must answer, whatever the input
        logger.warning("command analyser error: %r", exc)
        state.parse_error = f"analyser error: {type(exc).__name__}"
        state.add("obfuscation", "", "the analyser could not process this command")
    findings = tuple(state.findings.values())
    return Analysis(commands=tuple(state.commands), findings=findings,
                    categories=frozenset(f.category for f in findings),
                    parse_error=state.parse_error)


def provably_safe(command: str, *, known_only: bool = True,
                  git_tool: bool = False) -> tuple[bool, str]:
    """Whether ``command`` can be shown to run only known-safe programs, and if not why.

    The opposite question to `analyse`: not "is something dangerous here" but "is
    everything here known to be harmless". Every simple command must be a program of
    the known-safe set (``ls``, ``cat``, ``grep``, read-only ``git``...) with arguments
    that cannot make it run code or write outside the workspace, and the line must hold
    no construct that runs code: command or process substitution, ``eval``, ``source``,
    functions, traps, ``exec`` / ``env`` and other wrappers, assignments, computed or
    quoted command names, backgrounding, or redirections other than to workspace files.
    A line that does not parse is not safe.

    Args:
        command: The command line.
        known_only: Require every program to be in the known-safe set. False checks
            only the constructs and the options the per-program checks forbid: what a
            user's ``commands`` allow rule, which names the programs itself, still needs.
        git_tool: The line is a call of the git tool, which may also write the
            workspace's repository (``add``, ``commit``...).

    Returns:
        ``(True, "")``, or ``(False, reason)``.
    """
    reason = _allowlist_check(command, require_known=known_only, git_tool=git_tool)
    return (reason is None, reason or "")


def _analyse_text(text: str, state: _State, depth: int) -> None:
    """Parse one command string (the line itself, or an ``sh -c`` / ``eval`` string)."""
    if depth > _MAX_DEPTH:
        state.add("obfuscation", "", "commands nested too deeply to follow")
        return
    if _FORK_BOMB_RE.search(text):
        state.add("destructive", "", "fork bomb")
        state.add("obfuscation", "", "fork bomb")
    if _ESCAPE_RE.search(text):
        state.add("obfuscation", "", "hex or octal escapes in the command line")
    if _IFS_RE.search(text):
        state.add("obfuscation", "", "$IFS used to hide spaces")
        _analyse_text(_IFS_RE.sub(" ", text), state, depth + 1)
        return
    if all(not ln.strip() or ln.lstrip().startswith("#") for ln in text.splitlines()):
        return  # empty or comments only: bashlex cannot parse it, and it does nothing
    try:
        nodes = bashlex.parse(_prepare(text))
    except Exception as exc:  # bashlex raises several types, including bare ones
        reason = f"cannot parse: {type(exc).__name__}: {exc}"[:200]
        if depth == 0:
            state.parse_error = reason
        state.add("obfuscation", "", "command line does not parse" if depth == 0
                  else "nested command string does not parse")
        _fallback(text, state, depth)
        return
    outer, state.source = state.source, _prepare(text)
    try:
        for node in nodes:
            _walk(node, state, depth)
    finally:
        state.source = outer


def _prepare(text: str) -> str:
    """Rewrite constructs bashlex does not implement into ones with the same commands."""
    text = re.sub(r"\$\(\((.*?)\)\)", lambda m: "$ARITH" + " " * (len(m.group(0)) - 6),
                  text, flags=re.S)
    text = re.sub(r"(^|[;&|({]\s*)\(\((.*?)\)\)", lambda m: m.group(1) + ":", text, flags=re.S)
    text = re.sub(r"(^|[\s;&|(])\[\[(?=\s)", r"\1[ ", text)
    text = re.sub(r"(?<=\s)\]\](?=$|[\s;&|)])", "]", text)
    text = re.sub(r"(^|[;&|]\s*|\n\s*)time(\s+-p)?\s", r"\1", text)
    text = re.sub(r"<<(-?)\s*(['\"])(\w+)\2", r"<<\1\3", text)
    return re.sub(r"(^|[\s;&|])(\w+)=\(([^()]*)\)", r"\1\2=ARRAY", text)


def _fallback(text: str, state: _State, depth: int) -> None:
    """Judge an unparseable line token by token, split at shell operators."""
    try:
        lexer = shlex.shlex(text, posix=True, punctuation_chars=";&|()<>")
        lexer.whitespace_split = True
        tokens = list(lexer)
    except ValueError:
        tokens = re.findall(r"[^\s;&|()<>'\"`]+|[;&|()<>]+", text)
    segment: list[_Word] = []
    for tok in [*tokens, ";"]:
        if tok and set(tok) <= set(";&|()<>"):
            if segment:
                _simple(_Simple(argv=segment), state, depth)
            segment = []
        else:
            segment.append(_Word(text=tok, dynamic="$" in tok or "`" in tok, source=tok))


def _walk(node: Any, state: _State, depth: int) -> None:
    kind = getattr(node, "kind", None)
    if kind == "pipeline":
        stages: list[_Simple] = []
        for part in node.parts:
            if part.kind == "command":
                stages.append(_command(part, state, depth))
            elif part.kind not in ("pipe", "reservedword"):
                _walk(part, state, depth)
        _pipeline_rules(stages, state, depth)
    elif kind == "command":
        _command(node, state, depth)
    elif kind == "function":
        _function(node, state, depth)
    elif kind == "compound":
        for part in node.list:
            _walk(part, state, depth)
        for part in getattr(node, "redirects", []) or []:
            _redirect(part, _Simple(argv=[]), state, depth)
    elif kind in ("list", "if", "for", "while", "until"):
        for part in node.parts:
            _walk(part, state, depth)
    elif kind == "operator" and getattr(node, "op", "") == "&":
        pass  # backgrounding alone is not a finding; nohup and disown are
    elif kind == "word":
        _word(node, state, depth)


def _function(node: Any, state: _State, depth: int) -> None:
    name = node.parts[0].word if node.parts and node.parts[0].kind == "word" else ""
    before = len(state.commands)
    for part in node.parts[1:]:
        _walk(part, state, depth)
    if name and any(argv and argv[0] == name for argv in state.commands[before:]):
        state.add("destructive", name, "recursive function (fork bomb)")
        state.add("obfuscation", name, "recursive function (fork bomb)")


def _word(node: Any, state: _State, depth: int) -> _Word:
    """Walk the substitutions inside a word and describe it."""
    dynamic = False
    for sub in _subnodes(node):
        if sub.kind in _DYNAMIC_PART_KINDS:
            dynamic = True
        if sub.kind in ("commandsubstitution", "processsubstitution"):
            _walk(sub.command, state, depth)
    return _Word(text=node.word, dynamic=dynamic)


def _subnodes(node: Any) -> Iterable[Any]:
    for part in getattr(node, "parts", []) or []:
        yield part
        if part.kind == "parameter":
            yield from _subnodes(part)


def _command(node: Any, state: _State, depth: int) -> _Simple:
    simple = _Simple(argv=[])
    for part in node.parts:
        if part.kind == "word":
            word = _word(part, state, depth)
            word.source = _source(state, part)
            simple.argv.append(word)
        elif part.kind == "assignment":
            _word(part, state, depth)
        elif part.kind == "redirect":
            _redirect(part, simple, state, depth)
        else:
            _walk(part, state, depth)
    _simple(simple, state, depth)
    return simple


def _source(state: _State, part: Any) -> str:
    pos = getattr(part, "pos", None)
    return state.source[pos[0]:pos[1]] if pos else ""


def _redirect(node: Any, simple: _Simple, state: _State, depth: int) -> None:
    rtype = getattr(node, "type", "")
    target = getattr(node, "output", None)
    text = ""
    if target is not None and getattr(target, "kind", None) == "word":
        text = _word(target, state, depth).text
    heredoc = getattr(node, "heredoc", None)
    if heredoc is not None:
        body = str(getattr(heredoc, "value", ""))
        simple.stdin_text = body.rsplit("\n", 1)[0] if "\n" in body else ""
    elif rtype == "<<<":
        simple.stdin_text = text
    elif rtype in (">", ">>", ">|", "&>", "&>>", "<>", ">&") and text:
        simple.writes.append(text)
    elif rtype == "<" and text:
        simple.reads.append(text)
    if "/dev/tcp/" in text or "/dev/udp/" in text:
        name = simple.argv[0].text if simple.argv else ""
        state.add("network", name, f"opens a socket through {text}")
        state.network.append(name or "/dev/tcp")
        if rtype in (">", ">>", "<>", "&>", ">&"):
            state.add("exfiltration", name, f"sends output to {text}")


# --- one simple command -------------------------------------------------------------


def _basename(word: str) -> str:
    return word.rsplit("/", 1)[-1] if "/" in word.rstrip("/") else word


def _flags(args: Sequence[str]) -> set[str]:
    """Short flags (split) and long flags of an argument list, up to ``--``."""
    out: set[str] = set()
    for a in args:
        if a == "--":
            break
        if a.startswith("--"):
            out.add(a.split("=", 1)[0])
        elif a.startswith("-") and len(a) > 1:
            out.update("-" + c for c in a[1:])
    return out


def _operands(args: Sequence[str]) -> list[str]:
    out: list[str] = []
    seen_dd = False
    for a in args:
        if seen_dd or not a.startswith("-") or a == "-":
            out.append(a)
        elif a == "--":
            seen_dd = True
    return out


def _simple(simple: _Simple, state: _State, depth: int) -> None:
    argv = [w.text for w in simple.argv]
    if argv:
        state.commands.append(tuple(argv))
    for w in simple.argv:
        if _SECRET_RE.search(w.text.lstrip("@")) or any(_SECRET_RE.search(p) for p in
                                                         w.text.split("=", 1)[1:]):
            state.secret_reads.append(w.text)
    for r in simple.reads:
        if _SECRET_RE.search(r):
            state.secret_reads.append(r)
    if not argv:
        _writes(simple.writes, "", state)
        return
    first = simple.argv[0]
    name = _basename(first.text)
    args = argv[1:]
    if first.dynamic:
        state.add("obfuscation", first.text, "command name comes from a variable or substitution")
    elif first.text.startswith("$") or "`" in first.text:
        state.add("obfuscation", first.text, "command name is built at run time")
    src = first.source.removeprefix("\\")
    if src and src != first.text and not (
            len(src) > 1 and src[0] in "'\"" and src[-1] == src[0] and src[1:-1] == first.text):
        state.add("obfuscation", name, "quotes or escapes inside the command name")
    _writes(simple.writes, name, state)
    _rules(name, args, simple, state, depth)
    if name in _WRAPPERS:
        inner = _unwrap(name, simple.argv[1:])
        if inner:
            _simple(_Simple(argv=inner, stdin_text=simple.stdin_text), state, depth)


def _unwrap(name: str, rest: list[_Word]) -> list[_Word]:
    """The command a wrapper runs: skip its options, their values, and its own operands."""
    value_opts = _WRAPPER_VALUE_OPTS.get(name, frozenset())
    i = 0
    while i < len(rest):
        a = rest[i].text
        if a == "--":
            i += 1
            break
        if name == "env" and "=" in a and not a.startswith("-"):
            i += 1
        elif a.startswith("-") and len(a) > 1:
            i += 2 if a in value_opts else 1
        else:
            break
    rest = rest[i:]
    if name in ("timeout", "chroot", "flock") and rest:
        rest = rest[1:]  # the duration, the new root, the lock file
    if name == "watch" and rest:
        return [_Word(text="sh"), _Word(text="-c"),
                _Word(text=" ".join(w.text for w in rest),
                      dynamic=any(w.dynamic for w in rest))]
    return rest


def _writes(targets: Sequence[str], name: str, state: _State) -> None:
    for t in targets:
        if t.startswith("&") or t.isdigit() or t in ("/dev/null", "/dev/stdout", "/dev/stderr"):
            continue
        path = t[5:] if t.startswith("$HOME") else t
        if _PERSIST_PATH_RE.search(path):
            state.add("persistence", name, f"writes to {t}")
        if _DEVICE_RE.search(t):
            state.add("destructive", name, f"writes to block device {t}")
        elif re.match(r"^/(bin|sbin|usr|lib\w*|boot)(/|$)|^/proc/sysrq", t):
            state.add("destructive", name, f"overwrites system file {t}")
        elif _PRIV_PATH_RE.search(t):
            state.add("privilege", name, f"writes to {t}")


def _rules(name: str, args: list[str], simple: _Simple, state: _State, depth: int) -> None:
    flags = _flags(args)
    ops = _operands(args)
    add = state.add
    words = simple.argv[1:]

    # destructive
    if name == "rm" or name == "srm":
        recursive = flags & {"-r", "-R", "--recursive"}
        force = flags & {"-f", "--force"}
        for t in ops:
            if _DANGEROUS_TARGET_RE.match(t) or _SYSTEM_RE.match(t):
                add("destructive", name, f"rm on {t}")
            elif any(c in t for c in "*?["):
                add("destructive", name, f"rm with a glob ({t})")
        if recursive and force:
            add("destructive", name, "rm -rf")
        elif recursive:
            add("destructive", name, "recursive rm")
        elif force:
            add("destructive", name, "forced rm")
        if "--no-preserve-root" in flags:
            add("destructive", name, "rm --no-preserve-root")
    elif name.startswith("mkfs") or name in _DISK_TOOLS:
        add("destructive", name, f"{name} destroys data")
        _writes(ops, name, state)
    elif name == "dd":
        for a in args:
            if a.startswith("of="):
                if a[3:].startswith("/dev/") and a[3:] != "/dev/null":
                    add("destructive", name, f"dd to device {a[3:]}")
                _writes([a[3:]], name, state)
    elif name in ("chmod", "chown", "chgrp"):
        targets = ops[1:]
        mode = ops[0] if ops else ""
        if any(_DANGEROUS_TARGET_RE.match(t) or t == "/" for t in targets) and (
                flags & {"-R", "--recursive"} or mode in ("000", "777", "0777", "0000")):
            add("destructive", name, f"{name} {mode} on {' '.join(targets)}")
        elif flags & {"-R", "--recursive"} and any(_SYSTEM_RE.match(t) for t in targets):
            add("destructive", name, f"recursive {name} on a system path")
        if name == "chmod" and (re.search(r"[ugoa]*[+=][rwxXt]*s", mode)
                                or re.fullmatch(r"0?[2467][0-7]{3}", mode)):
            add("privilege", name, f"chmod {mode} sets setuid/setgid")
        if name in ("chown", "chgrp") and re.match(r"^(root|0)?([:.](root|0|wheel|sudo))?$",
                                                   mode) and mode:
            add("privilege", name, f"{name} {mode}")
    elif name == "find":
        if "-delete" in args:
            add("destructive", name, "find -delete")
        for i, a in enumerate(args):
            if a in ("-exec", "-execdir", "-ok", "-okdir"):
                end = next((j for j in range(i + 1, len(args)) if args[j] in (";", "+")),
                           len(args))
                inner = [w for w in words[i + 1:end] if w.text != "{}"] or []
                if inner:
                    _simple(_Simple(argv=inner), state, depth)
                    if _basename(inner[0].text) in ("rm", "shred", "unlink", "truncate"):
                        add("destructive", name, f"find {a} {inner[0].text} on every match")
        if "-fprint" in args or "-fprintf" in args:
            add("destructive", name, "find writes a file")
    elif name == "git":
        _git(args, state)
    elif name == "kill":
        if "-1" in ops or "1" in ops or (args and args[-1] == "-1"):
            add("destructive", name, "kill of every process or of init")
    elif name in ("killall", "pkill", "killall5"):
        add("destructive", name, f"{name} kills processes by name")
    elif name in _POWER or (name in ("init", "telinit") and ops[:1] in (["0"], ["6"])):
        add("destructive", name, f"{name} stops the machine")
    elif name == "mv":
        for t in ops[:-1]:
            if _DANGEROUS_TARGET_RE.match(t) or _SYSTEM_RE.match(t):
                add("destructive", name, f"moves {t}")
        if ops and ops[-1] == "/dev/null":
            add("destructive", name, "moves into /dev/null")
        _writes(ops[-1:], name, state)
    elif name in ("cp", "install", "ln", "tee", "sed", "perl"):
        if name == "tee":
            _writes(ops, name, state)
        elif name in ("sed", "perl"):
            if any(a.startswith("-i") or a == "--in-place" for a in args):
                _writes(ops[1:], name, state)
        else:
            _writes(ops[-1:], name, state)
    elif name == "systemctl":
        verbs = ops
        if verbs and verbs[0] in ("enable", "link", "preset", "set-default", "edit", "reenable",
                                  "add-wants", "add-requires"):
            add("persistence", name, f"systemctl {verbs[0]}")
        if verbs and verbs[0] in ("poweroff", "reboot", "halt", "kexec", "isolate"):
            add("destructive", name, f"systemctl {verbs[0]}")
        if verbs and verbs[0] in ("mask", "disable", "stop") and verbs[1:]:
            add("destructive", name, f"systemctl {verbs[0]} {verbs[1]}")
    elif name == "crontab":
        if "-r" in flags:
            add("destructive", name, "crontab -r removes every job")
        if flags != {"-l"}:
            add("persistence", name, "edits the crontab")
    elif name in ("screen", "tmux") and (flags & {"-d", "-m"} or "-dm" in args or "-d" in args):
        add("persistence", name, f"detached {name} session")

    # privilege
    if name in _PRIV_TOOLS:
        add("privilege", name, f"{name} changes privileges or the system")
    if name in ("docker", "podman") and ops[:1] in (["run"], ["create"], ["exec"]):
        for a in args:
            if (a in ("--privileged", "--cap-add", "--pid=host", "--net=host", "--network=host",
                      "--userns=host", "--security-opt") or a.startswith("--cap-add=")
                    or re.match(r"^/(:|$)|^/var/run/docker\.sock", a)
                    or a.startswith("--volume=/:") or a.startswith("-v/:")):
                add("privilege", name, f"container with {a}")
    if name == "sysctl" and flags & {"-w", "--write"}:
        add("privilege", name, "sysctl -w")

    # network
    if name in _NETWORK_TOOLS:
        add("network", name, f"{name} contacts a host")
        state.network.append(name)
    elif name == "rsync" and any(re.match(r"^[\w.@-]+:|^rsync://", a) for a in ops):
        add("network", name, "rsync to or from a host")
        state.network.append(name)
    elif name in _PKG_INSTALL and (not _PKG_INSTALL[name] or (ops and ops[0] in _PKG_INSTALL[name])
                                   or any(a in _PKG_INSTALL[name] for a in args[:1])):
        add("network", name, f"{name} {ops[0] if ops else ''} downloads packages".strip())
        state.network.append(name)
    elif name == "openssl" and ops[:1] == ["s_client"]:
        add("network", name, "openssl s_client")
        state.network.append(name)
    elif name.startswith("python") and args[:2] == ["-m", "pip"] and "install" in args:
        add("network", name, "pip install")
        state.network.append(name)
    if name == "git" and ops[:1] and ops[0] in _GIT_NETWORK:
        state.network.append(name)

    # exfiltration by the network tool itself
    if name == "curl":
        for i, a in enumerate(args):
            if (a in ("-d", "--data", "--data-binary", "--data-raw", "--data-urlencode",
                      "--data-ascii", "-F", "--form", "--json") and i + 1 < len(args)
                    and "@" in args[i + 1]) or a.startswith("-d@") or (
                        a.startswith("-F") and "@" in a):
                add("exfiltration", name, "curl uploads a local file")
            if a in ("-T", "--upload-file"):
                add("exfiltration", name, "curl uploads a local file")
    elif name == "wget" and any(a.startswith(("--post-file", "--body-file")) for a in args):
        add("exfiltration", name, "wget posts a local file")
    elif name in ("scp", "rsync", "sftp") and len(ops) >= 2:
        remote = [bool(re.match(r"^[\w.@-]+:|^rsync://|^scp://", o)) for o in ops]
        if remote[-1] and not all(remote[:-1]):
            add("exfiltration", name, f"{name} copies local files out")

    # persistence
    if name in _PERSIST_TOOLS:
        add("persistence", name, f"{name} outlives the session")
    if name == "git" and ops[:1] == ["config"] and any("hookspath" in a.lower() for a in args):
        add("persistence", name, "git hooks path changed")

    # exfiltration helpers: dumps of the environment count as secret reads
    if (name in ("env", "printenv") and not ops) or (name == "set" and not args) or (
            name in ("export", "declare", "typeset") and flags & {"-p", "-x"} and not ops):
        state.secret_reads.append(name)

    # shells and interpreters running strings
    if name in _SHELLS or name == "su" or name == "script":
        code = _dash_c(simple.argv[1:], "-c")
        if code is not None:
            if code.dynamic:
                add("obfuscation", name, f"{name} -c with a dynamic argument")
            _analyse_text(code.text, state, depth + 1)
        elif name in _SHELLS and simple.stdin_text is not None:
            _analyse_text(simple.stdin_text, state, depth + 1)
        elif name in _SHELLS and any(w.dynamic for w in words if not w.text.startswith("-")):
            for w in words:
                if "<(" in w.text or "$(" in w.text:
                    add("obfuscation", name, f"{name} runs a generated script")
    elif name in ("eval", "source", "."):
        if name == "eval":
            if any(w.dynamic for w in words):
                add("obfuscation", name, "eval with a dynamic argument")
            _analyse_text(" ".join(args), state, depth + 1)
        elif any(w.dynamic for w in words) or any(a.startswith("/dev/") for a in args):
            add("obfuscation", name, f"{name} of a generated script")
    elif name in _INTERPRETERS or re.fullmatch(r"python\d(\.\d+)?", name):
        code = _dash_c(simple.argv[1:], "-e" if name not in ("python", "python2", "python3")
                       and not name.startswith("py") else "-c")
        code_text = code.text if code else (simple.stdin_text or "")
        if _PY_NET_RE.search(code_text):
            add("network", name, f"{name} code opens network connections")
            state.network.append(name)
        if _PY_OBF_RE.search(code_text):
            add("obfuscation", name, f"{name} code decodes or evaluates generated code")
        if re.search(r"os\.system|subprocess|pty\.spawn|os\.exec|os\.popen", code_text):
            for m in re.finditer(r"(?:system|popen)\(\s*['\"]([^'\"]+)['\"]", code_text):
                _analyse_text(m.group(1), state, depth + 1)
            if "pty.spawn" in code_text:
                add("obfuscation", name, f"{name} spawns an interactive shell")

    # base64 literals decoded in place: judge what they decode to
    if name in ("base64", "base32") and flags & {"-d", "--decode", "-D"} and simple.stdin_text:
        _decoded(simple.stdin_text, state, depth)


def _dash_c(words: list[_Word], opt: str) -> _Word | None:
    """The code string given to ``sh -c`` / ``python -c`` / ``perl -e`` (combined flags ok)."""
    letter = opt[1]
    for i, w in enumerate(words):
        a = w.text
        if a == "--":
            return None
        if a.startswith("-") and not a.startswith("--") and letter in a[1:]:
            return words[i + 1] if i + 1 < len(words) else _Word(text="")
        if not a.startswith("-"):
            return None
    return None


def _decoded(literal: str, state: _State, depth: int) -> None:
    try:
        text = base64.b64decode(literal.strip(), validate=False).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return
    state.add("obfuscation", "base64", "decodes a base64 payload")
    if text.strip():
        _analyse_text(text, state, depth + 1)


def _git(args: list[str], state: _State) -> None:
    ops = _operands(args)
    sub = ops[0] if ops else ""
    flags = _flags(args)
    if sub == "clean" and flags & {"-f", "--force"}:
        state.add("destructive", "git", "git clean -f deletes untracked files")
    elif sub == "reset" and "--hard" in flags:
        state.add("destructive", "git", "git reset --hard discards changes")
    elif sub == "push" and (flags & {"-f", "--force", "--force-with-lease", "--mirror",
                                     "--delete", "-d"} or any(o.startswith("+") or
                                                              o.startswith(":")
                                                              for o in ops[2:])):
        state.add("destructive", "git", "git push rewrites or deletes remote history")
    elif sub in ("checkout", "restore") and ops[1:] in (["."], ["--", "."]) and "." in args:
        state.add("destructive", "git", f"git {sub} . discards changes")
    if sub in _GIT_NETWORK and not (sub == "remote" and ops[1:2] in ([], ["-v"])) and not (
            sub == "submodule" and "update" not in ops):
        state.add("network", "git", f"git {sub}")


# --- rules over a pipeline and over the whole line -----------------------------------


def _reads_stdin_as_code(stage: _Simple) -> bool:
    if not stage.argv:
        return False
    name = _basename(stage.argv[0].text)
    if name in _WRAPPERS:
        inner = _unwrap(name, stage.argv[1:])
        return _reads_stdin_as_code(_Simple(argv=inner)) if inner else False
    rest = [w.text for w in stage.argv[1:]]
    if name in _SHELLS:
        return _dash_c(stage.argv[1:], "-c") is None and (
            "-s" in _flags(rest) or not _operands(rest)
            or _operands(rest)[0] in ("-", "/dev/stdin"))
    if name in _INTERPRETERS or re.fullmatch(r"python\d(\.\d+)?", name):
        return not _operands(rest) or _operands(rest)[0] == "-"
    return name in ("source", ".") and rest[:1] in (["/dev/stdin"], ["-"])


def _pipeline_rules(stages: list[_Simple], state: _State, depth: int) -> None:
    names = [_basename(s.argv[0].text) if s.argv else "" for s in stages]
    for i, stage in enumerate(stages):
        if i == 0:
            continue
        before = names[:i]
        if _reads_stdin_as_code(stage):
            if any(n in _NETWORK_TOOLS for n in before):
                state.add("obfuscation", names[i], "downloaded script piped into a shell")
                state.add("network", names[i], "downloaded script piped into a shell")
            elif any(n in _DECODERS for n in before):
                state.add("obfuscation", names[i], "decoded data piped into a shell")
            else:
                state.add("obfuscation", names[i], "text piped into a shell")
            prev = stages[i - 1]
            if names[i - 1] == "cat" and prev.stdin_text:
                _analyse_text(prev.stdin_text, state, depth + 1)
            elif names[i - 1] in ("echo", "printf") and not any(w.dynamic for w in prev.argv):
                _analyse_text(" ".join(w.text for w in prev.argv[1:]
                                       if not w.text.startswith("-")), state, depth + 1)
        args = [w.text for w in stage.argv[1:]]
        sends = names[i] in ("nc", "ncat", "netcat", "socat", "telnet", "ssh", "openssl") or (
            names[i] in ("curl", "wget") and any(
                "@-" in a or a == "-" or a.startswith("--post-file") for a in args))
        if sends:
            state.add("exfiltration", names[i], f"data piped into {names[i]}")
        if names[i] in ("base64", "base32") and ("-d" in _flags(args) or "--decode" in args):
            prev = stages[i - 1]
            if names[i - 1] in ("echo", "printf") and len(prev.argv) > 1:
                _decoded(prev.argv[-1].text, state, depth)


def _line_rules(state: _State) -> None:
    if state.secret_reads and state.network:
        secret = state.secret_reads[0]
        net = state.network[0]
        state.add("exfiltration", net, f"reads {secret} and contacts the network")
