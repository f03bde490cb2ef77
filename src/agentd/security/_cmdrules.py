"""The analyser's rules: what each simple command, pipeline and line means.

:mod:`agentd.security.commands` walks the parse tree and hands every simple command it
finds to the rules here. A rule is one entry: either data (`finding`: "every use of
these programs is this finding") or a small function registered with `rule` for the
programs it judges. `RULES` keeps them in the order of this file, which is the order
their findings are reported in; `rules_for` picks, once per program name, the rules
that apply to it, so a command costs a dictionary look-up, not a walk down the list.

Pipelines (`PIPE_RULES`), written paths (`WRITE_ALWAYS`, `WRITE_FIRST`), raw text
(`TEXT_RULES`) and the whole line (`LINE_RULES`) have their own short tables.

Adding a rule is adding one entry; tests/security/test_command_rules.py runs each one
alone and wants an example for every rule.
"""

from __future__ import annotations

import base64
import binascii
import functools
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from agentd.security._vocab import (
    _DANGEROUS_TARGET_RE,
    _DECODERS,
    _DEVICE_RE,
    _DISK_TOOLS,
    _ESCAPE_RE,
    _FORK_BOMB_RE,
    _GIT_NETWORK,
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

__all__ = ["LINE_RULES", "PIPE_RULES", "RULES", "TEXT_RULES", "Call", "Rule", "Simple",
           "State", "Walk", "Word", "basename", "dash_c", "finding", "flags_of",
           "operands", "rule", "rules_for", "unwrap", "writes"]


# --- what the rules see ------------------------------------------------------------


@dataclass(slots=True)
class Word:
    text: str
    dynamic: bool = False  # holds $VAR, $(...), `...` or <(...)
    source: str = ""  # as written, quotes and all


@dataclass(slots=True)
class Simple:
    argv: list[Word]
    writes: list[str] = field(default_factory=list)
    reads: list[str] = field(default_factory=list)
    stdin_text: str | None = None  # here-document or here-string body


@dataclass(slots=True)
class State:
    commands: list[tuple[str, ...]] = field(default_factory=list)
    # (category, command, reason), kept in the order found; a dict is an ordered set.
    findings: dict[tuple[str, str, str], None] = field(default_factory=dict)
    secret_reads: list[str] = field(default_factory=list)
    network: list[str] = field(default_factory=list)
    source: str = ""  # the text bashlex parsed, for positions
    parse_error: str | None = None

    def add(self, category: str, command: str, reason: str) -> None:
        self.findings[(category, command, reason)] = None


class Walk(Protocol):
    """The walk in :mod:`agentd.security.commands`, for rules that find nested code."""

    def text(self, text: str, state: State, depth: int) -> None:
        """Analyse a command string (``sh -c`` code, a decoded payload)."""

    def simple(self, simple: Simple, state: State, depth: int) -> None:
        """Judge one more simple command (``find -exec``'s)."""


@dataclass(slots=True)
class Call:
    """One simple command as a rule sees it.

    Attributes:
        name: The program's base name (``/bin/rm`` is ``rm``).
        args: The arguments after it, as text.
        flags: Its short flags (split: ``-rf`` is ``-r``, ``-f``) and long flags.
        ops: Its operands (what is not an option).
    """

    name: str
    args: list[str]
    flags: set[str]
    ops: list[str]
    simple: Simple
    state: State
    depth: int
    walk: Walk

    @property
    def words(self) -> list[Word]:
        return self.simple.argv[1:]

    def add(self, category: str, reason: str) -> None:
        self.state.add(category, self.name, reason)

    def contacts_network(self) -> None:
        """Note a network use, for the line rule that pairs it with a secret read."""
        self.state.network.append(self.name)

    def nested(self, text: str) -> None:
        """Analyse code this command runs (one level deeper)."""
        self.walk.text(text, self.state, self.depth + 1)


Check = Callable[[Call], None]


@dataclass(frozen=True, slots=True)
class Rule:
    """One registered rule.

    Attributes:
        name: A name for tests and messages.
        programs: The program names it judges; empty with no `match` for every command.
        match: For names no set can list (``mkfs.*``, ``python3.12``).
        check: What it does with a matching command.
    """

    name: str
    programs: frozenset[str]
    match: Callable[[str], bool] | None
    check: Check

    def applies(self, program: str) -> bool:
        if program in self.programs:
            return True
        if self.match is not None:
            return self.match(program)
        return not self.programs


RULES: list[Rule] = []


def _names(programs: Iterable[str | Iterable[str]]) -> frozenset[str]:
    out: set[str] = set()
    for p in programs:
        out.update((p,) if isinstance(p, str) else p)
    return frozenset(out)


def rule(*programs: str | Iterable[str],
         match: Callable[[str], bool] | None = None) -> Callable[[Check], Check]:
    """Register the decorated function as the rule for ``programs`` (none: every command)."""
    def register(check: Check) -> Check:
        RULES.append(Rule(name=check.__name__.lstrip("_"), programs=_names(programs),
                          match=match, check=check))
        return check
    return register


def finding(name: str, programs: Iterable[str], category: str, reason: str, *,
            network: bool = False) -> None:
    """Register a rule that is only data: every use of ``programs`` is this finding.

    ``reason`` may name the program as ``{name}``; ``network`` also notes a network use.
    """
    def check(call: Call) -> None:
        call.add(category, reason.format(name=call.name))
        if network:
            call.contacts_network()
    RULES.append(Rule(name=name, programs=frozenset(programs), match=None, check=check))


@functools.lru_cache(maxsize=4096)
def rules_for(program: str) -> tuple[Rule, ...]:
    """The rules that judge ``program``, in order (worked out once per name)."""
    return tuple(r for r in RULES if r.applies(program))


# --- small helpers -----------------------------------------------------------------


def basename(word: str) -> str:
    return word.rsplit("/", 1)[-1] if "/" in word.rstrip("/") else word


def flags_of(args: Sequence[str]) -> set[str]:
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


def operands(args: Sequence[str]) -> list[str]:
    out: list[str] = []
    seen_dd = False
    for a in args:
        if seen_dd or not a.startswith("-") or a == "-":
            out.append(a)
        elif a == "--":
            seen_dd = True
    return out


def dash_c(words: list[Word], opt: str) -> Word | None:
    """The code string given to ``sh -c`` / ``python -c`` / ``perl -e`` (combined flags ok)."""
    letter = opt[1]
    for i, w in enumerate(words):
        a = w.text
        if a == "--":
            return None
        if a.startswith("-") and not a.startswith("--") and letter in a[1:]:
            return words[i + 1] if i + 1 < len(words) else Word(text="")
        if not a.startswith("-"):
            return None
    return None


def unwrap(name: str, rest: list[Word]) -> list[Word]:
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
        return [Word(text="sh"), Word(text="-c"),
                Word(text=" ".join(w.text for w in rest),
                     dynamic=any(w.dynamic for w in rest))]
    return rest


def _is_python(name: str) -> bool:
    return re.fullmatch(r"python\d(\.\d+)?", name) is not None


def _decoded(literal: str, state: State, depth: int, walk: Walk) -> None:
    try:
        text = base64.b64decode(literal.strip(), validate=False).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return
    state.add("obfuscation", "base64", "decodes a base64 payload")
    if text.strip():
        walk.text(text, state, depth + 1)


# --- written paths: every matching WRITE_ALWAYS line, the first WRITE_FIRST line ----

#: Matched against the path with a leading ``$HOME`` removed.
WRITE_ALWAYS: tuple[tuple[re.Pattern[str], str, str], ...] = (
    (_PERSIST_PATH_RE, "persistence", "writes to {}"),
)
WRITE_FIRST: tuple[tuple[re.Pattern[str], str, str], ...] = (
    (_DEVICE_RE, "destructive", "writes to block device {}"),
    (re.compile(r"^/(bin|sbin|usr|lib\w*|boot)(/|$)|^/proc/sysrq"), "destructive",
     "overwrites system file {}"),
    (_PRIV_PATH_RE, "privilege", "writes to {}"),
)


def writes(targets: Sequence[str], name: str, state: State) -> None:
    """Judge the files a command writes (redirections, ``cp``'s target, ``tee``...)."""
    for t in targets:
        if t.startswith("&") or t.isdigit() or t in ("/dev/null", "/dev/stdout", "/dev/stderr"):
            continue
        path = t[5:] if t.startswith("$HOME") else t
        for pattern, category, reason in WRITE_ALWAYS:
            if pattern.search(path):
                state.add(category, name, reason.format(t))
        for pattern, category, reason in WRITE_FIRST:
            if pattern.search(t):
                state.add(category, name, reason.format(t))
                break


# --- raw text, before parsing -----------------------------------------------------

TEXT_RULES: tuple[tuple[re.Pattern[str], tuple[tuple[str, str], ...]], ...] = (
    (_FORK_BOMB_RE, (("destructive", "fork bomb"), ("obfuscation", "fork bomb"))),
    (_ESCAPE_RE, (("obfuscation", "hex or octal escapes in the command line"),)),
)


# --- every command -----------------------------------------------------------------


@rule()
def _command_name(c: Call) -> None:
    first = c.simple.argv[0]
    if first.dynamic:
        c.state.add("obfuscation", first.text,
                    "command name comes from a variable or substitution")
    elif first.text.startswith("$") or "`" in first.text:
        c.state.add("obfuscation", first.text, "command name is built at run time")
    src = first.source.removeprefix("\\")
    if src and src != first.text and not (
            len(src) > 1 and src[0] in "'\"" and src[-1] == src[0] and src[1:-1] == first.text):
        c.add("obfuscation", "quotes or escapes inside the command name")


@rule()
def _redirections(c: Call) -> None:
    writes(c.simple.writes, c.name, c.state)


# --- destructive -------------------------------------------------------------------


@rule("rm", "srm")
def _rm(c: Call) -> None:
    recursive = c.flags & {"-r", "-R", "--recursive"}
    force = c.flags & {"-f", "--force"}
    for t in c.ops:
        if _DANGEROUS_TARGET_RE.match(t) or _SYSTEM_RE.match(t):
            c.add("destructive", f"rm on {t}")
        elif any(ch in t for ch in "*?["):
            c.add("destructive", f"rm with a glob ({t})")
    if recursive and force:
        c.add("destructive", "rm -rf")
    elif recursive:
        c.add("destructive", "recursive rm")
    elif force:
        c.add("destructive", "forced rm")
    if "--no-preserve-root" in c.flags:
        c.add("destructive", "rm --no-preserve-root")


@rule(_DISK_TOOLS - {"srm"}, match=lambda n: n.startswith("mkfs"))  # srm is judged as rm
def _disk_tool(c: Call) -> None:
    c.add("destructive", f"{c.name} destroys data")
    writes(c.ops, c.name, c.state)


@rule("dd")
def _dd(c: Call) -> None:
    for a in c.args:
        if a.startswith("of="):
            if a[3:].startswith("/dev/") and a[3:] != "/dev/null":
                c.add("destructive", f"dd to device {a[3:]}")
            writes([a[3:]], c.name, c.state)


@rule("chmod", "chown", "chgrp")
def _chmod(c: Call) -> None:
    targets = c.ops[1:]
    mode = c.ops[0] if c.ops else ""
    recursive = c.flags & {"-R", "--recursive"}
    if any(_DANGEROUS_TARGET_RE.match(t) or t == "/" for t in targets) and (
            recursive or mode in ("000", "777", "0777", "0000")):
        c.add("destructive", f"{c.name} {mode} on {' '.join(targets)}")
    elif recursive and any(_SYSTEM_RE.match(t) for t in targets):
        c.add("destructive", f"recursive {c.name} on a system path")
    if c.name == "chmod" and (re.search(r"[ugoa]*[+=][rwxXt]*s", mode)
                              or re.fullmatch(r"0?[2467][0-7]{3}", mode)):
        c.add("privilege", f"chmod {mode} sets setuid/setgid")
    if c.name in ("chown", "chgrp") and mode and re.match(
            r"^(root|0)?([:.](root|0|wheel|sudo))?$", mode):
        c.add("privilege", f"{c.name} {mode}")


@rule("find")
def _find(c: Call) -> None:
    args = c.args
    if "-delete" in args:
        c.add("destructive", "find -delete")
    for i, a in enumerate(args):
        if a in ("-exec", "-execdir", "-ok", "-okdir"):
            end = next((j for j in range(i + 1, len(args)) if args[j] in (";", "+")),
                       len(args))
            inner = [w for w in c.words[i + 1:end] if w.text != "{}"]
            if inner:
                c.walk.simple(Simple(argv=inner), c.state, c.depth)
                if basename(inner[0].text) in ("rm", "shred", "unlink", "truncate"):
                    c.add("destructive", f"find {a} {inner[0].text} on every match")
    if "-fprint" in args or "-fprintf" in args:
        c.add("destructive", "find writes a file")


@rule("git")
def _git(c: Call) -> None:
    ops, flags = c.ops, c.flags
    sub = ops[0] if ops else ""
    if sub == "clean" and flags & {"-f", "--force"}:
        c.add("destructive", "git clean -f deletes untracked files")
    elif sub == "reset" and "--hard" in flags:
        c.add("destructive", "git reset --hard discards changes")
    elif sub == "push" and (flags & {"-f", "--force", "--force-with-lease", "--mirror",
                                     "--delete", "-d"}
                            or any(o.startswith(("+", ":")) for o in ops[2:])):
        c.add("destructive", "git push rewrites or deletes remote history")
    elif sub in ("checkout", "restore") and ops[1:] in (["."], ["--", "."]) and "." in c.args:
        c.add("destructive", f"git {sub} . discards changes")
    if sub in _GIT_NETWORK and not (sub == "remote" and ops[1:2] in ([], ["-v"])) and not (
            sub == "submodule" and "update" not in ops):
        c.add("network", f"git {sub}")
    if sub in _GIT_NETWORK:
        c.contacts_network()


@rule("kill")
def _kill(c: Call) -> None:
    if "-1" in c.ops or "1" in c.ops or (c.args and c.args[-1] == "-1"):
        c.add("destructive", "kill of every process or of init")


finding("kill-by-name", ("killall", "pkill", "killall5"), "destructive",
        "{name} kills processes by name")
finding("power", _POWER, "destructive", "{name} stops the machine")


@rule("init", "telinit")
def _init_level(c: Call) -> None:
    if c.ops[:1] in (["0"], ["6"]):
        c.add("destructive", f"{c.name} stops the machine")


@rule("mv")
def _mv(c: Call) -> None:
    for t in c.ops[:-1]:
        if _DANGEROUS_TARGET_RE.match(t) or _SYSTEM_RE.match(t):
            c.add("destructive", f"moves {t}")
    if c.ops and c.ops[-1] == "/dev/null":
        c.add("destructive", "moves into /dev/null")
    writes(c.ops[-1:], c.name, c.state)


@rule("cp", "install", "ln")
def _copy_target(c: Call) -> None:
    writes(c.ops[-1:], c.name, c.state)


@rule("tee")
def _tee(c: Call) -> None:
    writes(c.ops, c.name, c.state)


@rule("sed", "perl")
def _edit_in_place(c: Call) -> None:
    if any(a.startswith("-i") or a == "--in-place" for a in c.args):
        writes(c.ops[1:], c.name, c.state)


@rule("systemctl")
def _systemctl(c: Call) -> None:
    verb = c.ops[0] if c.ops else ""
    if verb in ("enable", "link", "preset", "set-default", "edit", "reenable", "add-wants",
                "add-requires"):
        c.add("persistence", f"systemctl {verb}")
    if verb in ("poweroff", "reboot", "halt", "kexec", "isolate"):
        c.add("destructive", f"systemctl {verb}")
    if verb in ("mask", "disable", "stop") and c.ops[1:]:
        c.add("destructive", f"systemctl {verb} {c.ops[1]}")


@rule("crontab")
def _crontab(c: Call) -> None:
    if "-r" in c.flags:
        c.add("destructive", "crontab -r removes every job")
    if c.flags != {"-l"}:
        c.add("persistence", "edits the crontab")


@rule("screen", "tmux")
def _detached(c: Call) -> None:
    if c.flags & {"-d", "-m"} or "-dm" in c.args or "-d" in c.args:
        c.add("persistence", f"detached {c.name} session")


# --- privilege ---------------------------------------------------------------------

finding("privilege-tool", _PRIV_TOOLS, "privilege", "{name} changes privileges or the system")


@rule("docker", "podman")
def _container(c: Call) -> None:
    if c.ops[:1] not in (["run"], ["create"], ["exec"]):
        return
    for a in c.args:
        if (a in ("--privileged", "--cap-add", "--pid=host", "--net=host", "--network=host",
                  "--userns=host", "--security-opt") or a.startswith("--cap-add=")
                or re.match(r"^/(:|$)|^/var/run/docker\.sock", a)
                or a.startswith("--volume=/:") or a.startswith("-v/:")):
            c.add("privilege", f"container with {a}")


@rule("sysctl")
def _sysctl(c: Call) -> None:
    if c.flags & {"-w", "--write"}:
        c.add("privilege", "sysctl -w")


# --- network -----------------------------------------------------------------------

finding("network-tool", _NETWORK_TOOLS, "network", "{name} contacts a host", network=True)
_REMOTE_RE = re.compile(r"^[\w.@-]+:|^rsync://")


@rule("rsync")
def _rsync_remote(c: Call) -> None:
    if any(_REMOTE_RE.match(a) for a in c.ops):
        c.add("network", "rsync to or from a host")
        c.contacts_network()


@rule(_PKG_INSTALL)
def _package_install(c: Call) -> None:
    verbs = _PKG_INSTALL[c.name]
    if not verbs or (c.ops and c.ops[0] in verbs) or any(a in verbs for a in c.args[:1]):
        c.add("network", f"{c.name} {c.ops[0] if c.ops else ''} downloads packages".strip())
        c.contacts_network()


@rule("openssl")
def _openssl_client(c: Call) -> None:
    if c.ops[:1] == ["s_client"]:
        c.add("network", "openssl s_client")
        c.contacts_network()


@rule(match=lambda n: n.startswith("python"))
def _python_pip(c: Call) -> None:
    if c.args[:2] == ["-m", "pip"] and "install" in c.args:
        c.add("network", "pip install")
        c.contacts_network()


# --- exfiltration by the network tool itself ---------------------------------------

_CURL_DATA = ("-d", "--data", "--data-binary", "--data-raw", "--data-urlencode",
              "--data-ascii", "-F", "--form", "--json")


@rule("curl")
def _curl_upload(c: Call) -> None:
    args = c.args
    for i, a in enumerate(args):
        if (a in _CURL_DATA and i + 1 < len(args) and "@" in args[i + 1]) or (
                a.startswith("-d@") or (a.startswith("-F") and "@" in a)):
            c.add("exfiltration", "curl uploads a local file")
        if a in ("-T", "--upload-file"):
            c.add("exfiltration", "curl uploads a local file")


@rule("wget")
def _wget_post(c: Call) -> None:
    if any(a.startswith(("--post-file", "--body-file")) for a in c.args):
        c.add("exfiltration", "wget posts a local file")


@rule("scp", "rsync", "sftp")
def _copy_out(c: Call) -> None:
    if len(c.ops) < 2:
        return
    remote = [bool(re.match(r"^[\w.@-]+:|^rsync://|^scp://", o)) for o in c.ops]
    if remote[-1] and not all(remote[:-1]):
        c.add("exfiltration", f"{c.name} copies local files out")


# --- persistence -------------------------------------------------------------------

finding("persistence-tool", _PERSIST_TOOLS, "persistence", "{name} outlives the session")


@rule("git")
def _git_hooks(c: Call) -> None:
    if c.ops[:1] == ["config"] and any("hookspath" in a.lower() for a in c.args):
        c.add("persistence", "git hooks path changed")


# --- dumps of the environment count as secret reads --------------------------------


@rule("env", "printenv", "set", "export", "declare", "typeset")
def _environment_dump(c: Call) -> None:
    if (c.name in ("env", "printenv") and not c.ops) or (c.name == "set" and not c.args) or (
            c.name in ("export", "declare", "typeset") and c.flags & {"-p", "-x"}
            and not c.ops):
        c.state.secret_reads.append(c.name)


# --- shells and interpreters running strings ---------------------------------------


@rule(_SHELLS, "su", "script")
def _shell_code(c: Call) -> None:
    code = dash_c(c.words, "-c")
    if code is not None:
        if code.dynamic:
            c.add("obfuscation", f"{c.name} -c with a dynamic argument")
        c.nested(code.text)
    elif c.name in _SHELLS and c.simple.stdin_text is not None:
        c.nested(c.simple.stdin_text)
    elif c.name in _SHELLS and any(w.dynamic for w in c.words if not w.text.startswith("-")):
        for w in c.words:
            if "<(" in w.text or "$(" in w.text:
                c.add("obfuscation", f"{c.name} runs a generated script")


@rule("eval")
def _eval(c: Call) -> None:
    if any(w.dynamic for w in c.words):
        c.add("obfuscation", "eval with a dynamic argument")
    c.nested(" ".join(c.args))


@rule("source", ".")
def _source(c: Call) -> None:
    if any(w.dynamic for w in c.words) or any(a.startswith("/dev/") for a in c.args):
        c.add("obfuscation", f"{c.name} of a generated script")


@rule(_INTERPRETERS, match=_is_python)
def _interpreter_code(c: Call) -> None:
    name = c.name
    code = dash_c(c.words, "-e" if name not in ("python", "python2", "python3")
                  and not name.startswith("py") else "-c")
    code_text = code.text if code else (c.simple.stdin_text or "")
    if _PY_NET_RE.search(code_text):
        c.add("network", f"{name} code opens network connections")
        c.contacts_network()
    if _PY_OBF_RE.search(code_text):
        c.add("obfuscation", f"{name} code decodes or evaluates generated code")
    if re.search(r"os\.system|subprocess|pty\.spawn|os\.exec|os\.popen", code_text):
        for m in re.finditer(r"(?:system|popen)\(\s*['\"]([^'\"]+)['\"]", code_text):
            c.nested(m.group(1))
        if "pty.spawn" in code_text:
            c.add("obfuscation", f"{name} spawns an interactive shell")


@rule("base64", "base32")
def _decode_literal(c: Call) -> None:
    # A here-string decoded in place: judge what it decodes to.
    if c.flags & {"-d", "--decode", "-D"} and c.simple.stdin_text:
        _decoded(c.simple.stdin_text, c.state, c.depth, c.walk)


# --- pipelines: each rule sees the stages and the index of one after the first ------

PipeCheck = Callable[[list[Simple], list[str], int, State, int, Walk], None]


def reads_stdin_as_code(stage: Simple) -> bool:
    if not stage.argv:
        return False
    name = basename(stage.argv[0].text)
    if name in _WRAPPERS:
        inner = unwrap(name, stage.argv[1:])
        return reads_stdin_as_code(Simple(argv=inner)) if inner else False
    rest = [w.text for w in stage.argv[1:]]
    if name in _SHELLS:
        return dash_c(stage.argv[1:], "-c") is None and (
            "-s" in flags_of(rest) or not operands(rest)
            or operands(rest)[0] in ("-", "/dev/stdin"))
    if name in _INTERPRETERS or _is_python(name):
        return not operands(rest) or operands(rest)[0] == "-"
    return name in ("source", ".") and rest[:1] in (["/dev/stdin"], ["-"])


def _piped_into_shell(stages: list[Simple], names: list[str], i: int, state: State,
                      depth: int, walk: Walk) -> None:
    if not reads_stdin_as_code(stages[i]):
        return
    before = names[:i]
    if any(n in _NETWORK_TOOLS for n in before):
        state.add("obfuscation", names[i], "downloaded script piped into a shell")
        state.add("network", names[i], "downloaded script piped into a shell")
    elif any(n in _DECODERS for n in before):
        state.add("obfuscation", names[i], "decoded data piped into a shell")
    else:
        state.add("obfuscation", names[i], "text piped into a shell")
    prev = stages[i - 1]
    if names[i - 1] == "cat" and prev.stdin_text:
        walk.text(prev.stdin_text, state, depth + 1)
    elif names[i - 1] in ("echo", "printf") and not any(w.dynamic for w in prev.argv):
        walk.text(" ".join(w.text for w in prev.argv[1:] if not w.text.startswith("-")),
                  state, depth + 1)


def _piped_into_network(stages: list[Simple], names: list[str], i: int, state: State,
                        depth: int, walk: Walk) -> None:
    args = [w.text for w in stages[i].argv[1:]]
    if names[i] in ("nc", "ncat", "netcat", "socat", "telnet", "ssh", "openssl") or (
            names[i] in ("curl", "wget") and any(
                "@-" in a or a == "-" or a.startswith("--post-file") for a in args)):
        state.add("exfiltration", names[i], f"data piped into {names[i]}")


def _piped_into_decoder(stages: list[Simple], names: list[str], i: int, state: State,
                        depth: int, walk: Walk) -> None:
    args = [w.text for w in stages[i].argv[1:]]
    if names[i] in ("base64", "base32") and ("-d" in flags_of(args) or "--decode" in args):
        prev = stages[i - 1]
        if names[i - 1] in ("echo", "printf") and len(prev.argv) > 1:
            _decoded(prev.argv[-1].text, state, depth, walk)


PIPE_RULES: tuple[PipeCheck, ...] = (_piped_into_shell, _piped_into_network,
                                     _piped_into_decoder)


# --- the whole line ----------------------------------------------------------------


def _secret_and_network(state: State) -> None:
    if state.secret_reads and state.network:
        state.add("exfiltration", state.network[0],
                  f"reads {state.secret_reads[0]} and contacts the network")


LINE_RULES: tuple[Callable[[State], None], ...] = (_secret_and_network,)


def secret_words(simple: Simple, state: State) -> None:
    """Note the secrets a command names in its arguments or reads by redirection."""
    for w in simple.argv:
        if _SECRET_RE.search(w.text.lstrip("@")) or any(_SECRET_RE.search(p) for p in
                                                         w.text.split("=", 1)[1:]):
            state.secret_reads.append(w.text)
    for r in simple.reads:
        if _SECRET_RE.search(r):
            state.secret_reads.append(r)
