"""Classify a shell command line for policy, assuming whoever wrote it is hostile.

The line is parsed with bashlex, so a word inside quotes (``git commit -m "rm -rf /"``)
is an argument and never a command, while commands hidden in pipes, lists, subshells,
``$(...)``, backticks, process substitution, here-documents, ``eval`` / ``sh -c``
strings, ``xargs`` / ``find -exec`` and wrappers (``sudo``, ``env``, ``nohup``,
``timeout``...) are all found and judged one by one. Rules that need the whole line
(``curl | sh``, a secret read and a network call in the same line) run afterwards.
What each command means is decided by the rules in :mod:`agentd.security._cmdrules`
(a table of named rules); this module is the walk that finds the commands.

Where a rule had to choose, it leans towards a finding: a finding asks for approval,
a miss runs the command. Input bashlex cannot parse is itself a finding
("obfuscation"), and is still searched token by token so its other findings show.
"""

from __future__ import annotations

import logging
import re
import shlex
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from agentd.security._allowlist import check as _allowlist_check
from agentd.security._allowlist import parse_bash
from agentd.security._cmdrules import (
    LINE_RULES,
    PIPE_RULES,
    TEXT_RULES,
    Call,
    Simple,
    State,
    Word,
    basename,
    flags_of,
    operands,
    rules_for,
    secret_words,
    unwrap,
    writes,
)
from agentd.security._vocab import _DYNAMIC_PART_KINDS, _IFS_RE, _WRAPPERS

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


def analyse(command: str) -> Analysis:
    """Parse a shell command line and classify what it would do.

    Never raises: input that cannot be parsed yields ``parse_error`` and the
    ``"obfuscation"`` category, plus whatever a token-level search still finds.

    Args:
        command: The command line, as it would be handed to ``sh -c``.

    Returns:
        The simple commands found and the findings about them.
    """
    state = State()
    try:
        if len(command) > _MAX_LENGTH:
            state.parse_error = f"command longer than {_MAX_LENGTH} characters"
            state.add("obfuscation", "", state.parse_error)
        else:
            _analyse_text(command, state, depth=0)
            for line_rule in LINE_RULES:
                line_rule(state)
    except Exception as exc:  # a policy check must answer, whatever the input
        logger.warning("command analyser error: %r", exc)
        state.parse_error = f"analyser error: {type(exc).__name__}"
        state.add("obfuscation", "", "the analyser could not process this command")
    findings = tuple(Finding(category=category, command=command, reason=reason)
                     for category, command, reason in state.findings)
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


def _analyse_text(text: str, state: State, depth: int) -> None:
    """Parse one command string (the line itself, or an ``sh -c`` / ``eval`` string)."""
    if depth > _MAX_DEPTH:
        state.add("obfuscation", "", "commands nested too deeply to follow")
        return
    for pattern, found in TEXT_RULES:
        if pattern.search(text):
            for category, reason in found:
                state.add(category, "", reason)
    if _IFS_RE.search(text):
        state.add("obfuscation", "", "$IFS used to hide spaces")
        _analyse_text(_IFS_RE.sub(" ", text), state, depth + 1)
        return
    if all(not ln.strip() or ln.lstrip().startswith("#") for ln in text.splitlines()):
        return  # empty or comments only: bashlex cannot parse it, and it does nothing
    try:
        nodes = parse_bash(_prepare(text))
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


def _fallback(text: str, state: State, depth: int) -> None:
    """Judge an unparseable line token by token, split at shell operators."""
    try:
        lexer = shlex.shlex(text, posix=True, punctuation_chars=";&|()<>")
        lexer.whitespace_split = True
        tokens = list(lexer)
    except ValueError:
        tokens = re.findall(r"[^\s;&|()<>'\"`]+|[;&|()<>]+", text)
    segment: list[Word] = []
    for tok in [*tokens, ";"]:
        if tok and set(tok) <= set(";&|()<>"):
            if segment:
                _simple(Simple(argv=segment), state, depth)
            segment = []
        else:
            segment.append(Word(text=tok, dynamic="$" in tok or "`" in tok, source=tok))


def _walk(node: Any, state: State, depth: int) -> None:
    kind = getattr(node, "kind", None)
    if kind == "pipeline":
        stages: list[Simple] = []
        for part in node.parts:
            if part.kind == "command":
                stages.append(_command(part, state, depth))
            elif part.kind not in ("pipe", "reservedword"):
                _walk(part, state, depth)
        names = [basename(s.argv[0].text) if s.argv else "" for s in stages]
        for i in range(1, len(stages)):
            for pipe_rule in PIPE_RULES:
                pipe_rule(stages, names, i, state, depth, _WALK)
    elif kind == "command":
        _command(node, state, depth)
    elif kind == "function":
        _function(node, state, depth)
    elif kind == "compound":
        for part in node.list:
            _walk(part, state, depth)
        for part in getattr(node, "redirects", []) or []:
            _redirect(part, Simple(argv=[]), state, depth)
    elif kind in ("list", "if", "for", "while", "until"):
        for part in node.parts:
            _walk(part, state, depth)
    elif kind == "operator" and getattr(node, "op", "") == "&":
        pass  # backgrounding alone is not a finding; nohup and disown are
    elif kind == "word":
        _word(node, state, depth)


def _function(node: Any, state: State, depth: int) -> None:
    name = node.parts[0].word if node.parts and node.parts[0].kind == "word" else ""
    before = len(state.commands)
    for part in node.parts[1:]:
        _walk(part, state, depth)
    if name and any(argv and argv[0] == name for argv in state.commands[before:]):
        state.add("destructive", name, "recursive function (fork bomb)")
        state.add("obfuscation", name, "recursive function (fork bomb)")


def _word(node: Any, state: State, depth: int) -> Word:
    """Walk the substitutions inside a word and describe it."""
    dynamic = False
    for sub in _subnodes(node):
        if sub.kind in _DYNAMIC_PART_KINDS:
            dynamic = True
        if sub.kind in ("commandsubstitution", "processsubstitution"):
            _walk(sub.command, state, depth)
    return Word(text=node.word, dynamic=dynamic)


def _subnodes(node: Any) -> Iterable[Any]:
    for part in getattr(node, "parts", []) or []:
        yield part
        if part.kind == "parameter":
            yield from _subnodes(part)


def _command(node: Any, state: State, depth: int) -> Simple:
    simple = Simple(argv=[])
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


def _source(state: State, part: Any) -> str:
    pos = getattr(part, "pos", None)
    return state.source[pos[0]:pos[1]] if pos else ""


def _redirect(node: Any, simple: Simple, state: State, depth: int) -> None:
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


def _simple(simple: Simple, state: State, depth: int) -> None:
    argv = [w.text for w in simple.argv]
    if argv:
        state.commands.append(tuple(argv))
    secret_words(simple, state)
    if not argv:
        writes(simple.writes, "", state)
        return
    name = basename(argv[0])
    args = argv[1:]
    call = Call(name=name, args=args, flags=flags_of(args), ops=operands(args),
                simple=simple, state=state, depth=depth, walk=_WALK)
    for rule in rules_for(name):
        rule.check(call)
    if name in _WRAPPERS:
        inner = unwrap(name, simple.argv[1:])
        if inner:
            _simple(Simple(argv=inner, stdin_text=simple.stdin_text), state, depth)


class _Walker:
    """What the rules call back into, to analyse the code a command runs."""

    __slots__ = ()

    def text(self, text: str, state: State, depth: int) -> None:
        _analyse_text(text, state, depth)

    def simple(self, simple: Simple, state: State, depth: int) -> None:
        _simple(simple, state, depth)


_WALK = _Walker()
