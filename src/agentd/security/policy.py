"""Permission policy: whether a tool call runs, waits for a person, or is refused.

A policy is built from layers, lowest first: the built-in defaults, the daemon's
``[policy]`` config, the agent's ``settings.policy`` and the session's policy. Each
layer holds ordered rules; the decision for a call is taken like this:

1. The daemon's ``deny`` rules, first match: the operator's limits, which no agent or
   session setting can lift.
2. The rules of the session, then the agent, then the daemon, first match wins.
3. The built-in defaults: read-only and workspace-confined tools run; a shell or git
   command runs where the sandbox is the wall (``confined``: an isolating backend, no
   network for commands, an untainted session); elsewhere it runs only if the
   allow-list (:func:`agentd.security.commands.provably_safe`) shows every part of it
   is known-safe, and is asked about otherwise, as it is when the deny-list analyser
   finds anything in it;
   a tool that needs the network runs only where ``network`` grants its host; a tool
   marked ``needs_approval`` is asked about; any other dangerous tool (one that sends
   data out or acts irreversibly) is denied: default deny.
4. Taint: once content from outside entered the session, a call that can reach out
   (``sends_out``, ``needs_network``, a shell with network, or a call whose arguments
   send content out: ``CallFacts.sends_to``, such as a post into a channel's session)
   gets the ``tainted`` action (ask, or deny) even where a rule allowed it, unless
   that rule was written for tainted sessions (``tainted: true``).

A rule matches by tool name (fnmatch, ``*`` crosses ``/``) and, optionally, by the
call's arguments: ``paths`` (every path argument, for ``allow``; any, for ``ask`` and
``deny``), ``commands`` (the shell command's simple commands, each one for ``allow``,
any for the others; a command the parser could not read matches no ``allow``),
``categories`` (the analyser's: within the list for ``allow``, any for the others),
``hosts`` (the host of a ``url`` argument), ``args`` (globs on top-level arguments)
and ``exact_args`` (the whole argument object, equal: a remembered approval). An
``allow`` rule matching by ``commands`` or ``categories`` never lets through a line
holding a construct or option the allow-list refuses (``$(...)``, ``eval``,
``git -c``, ``find -exec``...): the rule names the programs, the analyser still gates
how they run. A git tool call is analysed as the line ``git <command> <args...>``.
"""

from __future__ import annotations

import fnmatch
import posixpath
import shlex
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    ValidationError,
    field_validator,
)

from agentd.errors import InvalidInput
from agentd.trust import OperatorOnly

if TYPE_CHECKING:
    from agentd.security.commands import Analysis

# The command analyser (agentd.security.commands, about 80 ms of imports) is imported
# when a decision or a rule's categories first need it: the daemon's settings, and
# so every CLI call, hold a PolicyConfig.

__all__ = ["ACTIONS", "CallFacts", "Policy", "PolicyConfig", "Rule", "Verdict",
           "grants_host", "parse_policy", "sticky_rule"]

Action = Literal["allow", "ask", "deny"]
ACTIONS: tuple[str, ...] = ("allow", "ask", "deny")
_RANK = {"allow": 0, "ask": 1, "deny": 2}

#: Argument names that hold a workspace path (``files`` may hold ``{"path": ...}``).
_PATH_ARGS = ("path", "paths", "files", "cwd")
_MAX_RULES = 500
#: The built-in tools that read or list workspace files (see ``protected_paths``).
_READING_TOOLS = ("read_file", "list_files", "glob", "grep", "git")


class Rule(BaseModel):
    """One allow / ask / deny rule."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tool: str = Field("*", min_length=1, max_length=200)
    action: Action
    paths: tuple[str, ...] | None = None
    commands: tuple[str, ...] | None = None
    categories: tuple[str, ...] | None = None
    hosts: tuple[str, ...] | None = None
    args: dict[str, str] | None = None
    #: The whole argument object, compared for equality (a remembered approval:
    #: exactly what was approved, never a call that adds or changes an argument).
    exact_args: dict[str, Any] | None = None
    #: Only while the session is tainted (True), only while it is not (False).
    tainted: bool | None = None
    reason: str | None = Field(None, max_length=500)

    @field_validator("categories")
    @classmethod
    def _known(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        from agentd.security.commands import CATEGORIES

        for category in value or ():
            if category not in CATEGORIES:
                raise ValueError(f"unknown category {category!r}; known: "
                                 f"{', '.join(CATEGORIES)}")
        return value

    @field_validator("paths", "commands", "hosts")
    @classmethod
    def _not_empty(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if value is not None and (not value or any(not v for v in value)):
            raise ValueError("must be a non-empty list of non-empty patterns")
        return value


class PolicyConfig(BaseModel):
    """One layer of policy (daemon config, agent settings or session)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rules: tuple[Rule, ...] = Field((), max_length=_MAX_RULES)
    #: Network for tools and the shell: False (none), True (any host), or host
    #: patterns (``*.example.com``). None: as the layer below says.
    network: Annotated[StrictBool | tuple[str, ...] | None, OperatorOnly(
        "host", "a grant covering the operator's private endpoints reaches the "
                "daemon's network", allows=lambda grants, value: grants.network(value))
    ] = None
    #: What a call that can reach out gets once the session is tainted.
    tainted: Literal["ask", "deny"] | None = None
    #: How long a person has to answer an ``ask``; then the call is denied.
    approval_timeout_s: float | None = Field(None, gt=0, le=30 * 86400)


def parse_policy(value: Any, name: str, location: str) -> PolicyConfig:
    """``value`` as a policy layer, or InvalidInput naming the setting (``name``, as the
    message says it; ``location``, as the error's ``field``) and the problem."""
    if value is None:
        return PolicyConfig()
    try:
        return PolicyConfig.model_validate(value)
    except ValidationError as exc:
        raise InvalidInput.of(exc, name, location) from None


@dataclass(frozen=True, kw_only=True, slots=True)
class CallFacts:
    """What the policy knows of the tool a call names."""

    name: str
    read_only: bool = False
    needs_approval: bool = False
    needs_network: bool = False
    sends_out: bool = False
    #: The shell: its ``command`` argument is analysed.
    shell: bool = False
    #: Where this call (by its arguments) sends content out of the daemon, for the
    #: person asked: a post into a channel's session, work that runs later. Counts
    #: as reaching out once the session is tainted; changes nothing while it is clean.
    sends_to: str | None = None

    @property
    def dangerous(self) -> bool:
        return self.needs_approval or self.needs_network or self.sends_out


@dataclass(frozen=True, kw_only=True, slots=True)
class Verdict:
    """The decision for one call, and why (this is what the audit event records)."""

    action: Action
    reason: str
    #: Which rule decided: ``"session:2"``, ``"agent:0"``, ``"daemon:1"``, ``"builtin:..."``.
    rule: str
    categories: tuple[str, ...] = ()
    tainted: bool = False
    findings: tuple[str, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        return {"action": self.action, "reason": self.reason, "rule": self.rule,
                **({"categories": list(self.categories)} if self.categories else {}),
                **({"findings": list(self.findings)} if self.findings else {}),
                **({"tainted": True} if self.tainted else {})}


def _glob(value: str, patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(value, p) for p in patterns)


def grants_host(network: bool | tuple[str, ...], host: str | None) -> bool:
    """Whether a ``network`` grant (True, False or host patterns) covers ``host``."""
    if network is True:
        return True
    if not network or host is None:
        return False
    return _glob(host.lower(), network)


def _paths(arguments: Mapping[str, Any]) -> list[str]:
    found: list[str] = []
    for name in _PATH_ARGS:
        value = arguments.get(name)
        items = value if isinstance(value, list) else [value]
        for item in items:
            if isinstance(item, dict):
                item = item.get("path")
            if isinstance(item, str):
                found.append(posixpath.normpath(item))
    found.extend(_git_paths(arguments))
    return found


def _git_paths(arguments: Mapping[str, Any]) -> list[str]:
    """The path-like arguments of a git call (``command`` and an ``args`` list): every
    word that is not an option, an option's ``=value``, and the path of ``REV:path``
    (``git show HEAD:.env`` reads .env; ``git mv .env x`` writes it)."""
    args = arguments.get("args")
    if not isinstance(arguments.get("command"), str) or not isinstance(args, list):
        return []
    found: list[str] = []
    for arg in args:
        if not isinstance(arg, str) or arg == "--":
            continue
        if arg.startswith("-"):
            if "=" not in arg:
                continue
            arg = arg.split("=", 1)[1]
        for word in (arg, *arg.split(":")[1:]):
            if word:
                found.append(posixpath.normpath(word))
    return found


def _host(arguments: Mapping[str, Any]) -> str | None:
    url = arguments.get("url")
    if not isinstance(url, str):
        return None
    try:
        return (urlsplit(url).hostname or "").lower() or None
    except ValueError:
        return None


class Policy:
    """The layers that apply to one agent's session, ready to decide calls."""

    def __init__(self, *, daemon: PolicyConfig | None = None,
                 agent: PolicyConfig | None = None,
                 session: PolicyConfig | None = None) -> None:
        self.layers: list[tuple[str, PolicyConfig]] = [
            (name, layer) for name, layer in (("session", session), ("agent", agent),
                                              ("daemon", daemon)) if layer is not None]
        self._daemon = daemon or PolicyConfig()
        self.network = self._first("network", False)
        self.on_taint: str = self._first("tainted", "ask")
        self.approval_timeout_s: float = self._first("approval_timeout_s", 3600.0)
        self._protected: tuple[str, ...] | None = None

    def layers_by_name(self) -> dict[str, PolicyConfig]:
        return dict(self.layers)

    def _first(self, name: str, default: Any) -> Any:
        for _, layer in self.layers:
            value = getattr(layer, name)
            if value is not None:
                if name == "network" and self._daemon.network is False:
                    return False  # the operator turned the network off for everyone
                return value
        return default

    def protected_paths(self) -> tuple[str, ...]:
        """The path patterns of every ``deny`` rule (of any layer) with ``paths`` and
        no other condition on arguments, naming a tool that reads or lists files (or
        ``*``): what the agent must not see through any tool. File tools and git keep
        away from them (:mod:`agentd.tools.protect`), whichever tool the rule named.
        Worked out once: the layers do not change (a new rule makes a new Policy)."""
        if self._protected is None:
            self._protected = self._find_protected()
        return self._protected

    def _find_protected(self) -> tuple[str, ...]:
        found: list[str] = []
        for _, layer in [("daemon", self._daemon), *self.layers]:
            for rule in layer.rules:
                if (rule.action != "deny" or rule.paths is None or rule.args is not None
                        or rule.commands is not None or rule.categories is not None
                        or rule.hosts is not None
                        or not any(fnmatch.fnmatchcase(t, rule.tool)
                                   for t in _READING_TOOLS)):
                    continue
                found.extend(p for p in rule.paths if p not in found)
        return tuple(found)

    def network_allows(self, host: str | None) -> bool:
        return grants_host(self.network, host)

    @property
    def shell_network(self) -> bool:
        """Whether the sandbox gives the shell the network: any grant (through the
        egress proxy, which holds its connections to the granted hosts)."""
        return bool(self.network)

    def decide(self, facts: CallFacts, arguments: Mapping[str, Any], *,
               tainted: bool = False, confined: bool = False) -> Verdict:
        """The verdict for one call.

        Args:
            facts: What the policy knows of the tool.
            arguments: The call's arguments.
            tainted: The session read content from outside.
            confined: The sandbox is the wall for commands: an isolating backend, no
                network for commands, and the session is not tainted. Then shell and
                git commands run without asking (findings are still recorded); when
                False (the safe default), a command runs without asking only if the
                allow-list (`provably_safe`) shows every part of it is known-safe.
        """
        from agentd.security.commands import analyse

        line = _command_line(facts, arguments)
        analysis = analyse(line) if line is not None else None
        check = _Gate(line, git_tool=not facts.shell)
        verdict = self._rules(facts, arguments, analysis, tainted, check)
        if verdict is None:
            verdict = self._builtin(facts, arguments, analysis,
                                    confined=confined and not tainted, check=check)
        elif verdict.rule.startswith("daemon") and verdict.action == "deny":
            return verdict
        if tainted and verdict.action != "deny" and self._reaches_out(facts):
            written_for_taint = verdict.rule != "builtin" and verdict.tainted
            if not written_for_taint:
                action: Action = "deny" if self.on_taint == "deny" else "ask"
                if _RANK[action] > _RANK[verdict.action]:
                    what = (f"this {facts.name} call {facts.sends_to}"
                            if facts.sends_to else f"{facts.name} can send data out")
                    return Verdict(
                        action=action, rule="builtin:taint", tainted=True,
                        categories=verdict.categories, findings=verdict.findings,
                        reason=(f"the session read content from outside (it is tainted) "
                                f"and {what}; policy 'tainted' is {self.on_taint}"))
        return verdict

    def _reaches_out(self, facts: CallFacts) -> bool:
        return (facts.sends_out or facts.needs_network or facts.sends_to is not None
                or (facts.shell and self.shell_network))

    def _rules(self, facts: CallFacts, arguments: Mapping[str, Any],
               analysis: Analysis | None, tainted: bool, check: _Gate) -> Verdict | None:
        ordered: list[tuple[str, int, Rule]] = [
            ("daemon", i, r) for i, r in enumerate(self._daemon.rules)
            if r.action == "deny"]
        for name, layer in self.layers:
            ordered.extend((name, i, r) for i, r in enumerate(layer.rules)
                           if not (name == "daemon" and r.action == "deny"))
        for source, index, rule in ordered:
            if rule.tainted is not None and rule.tainted != tainted:
                continue
            if _matches(rule, facts, arguments, analysis, check):
                categories = tuple(sorted(analysis.categories)) if analysis else ()
                return Verdict(
                    action=rule.action, rule=f"{source}:{index}",
                    reason=rule.reason or f"{source} policy rule {index} "
                                          f"({rule.action} {rule.tool})",
                    categories=categories, tainted=bool(rule.tainted))
        return None

    def _builtin(self, facts: CallFacts, arguments: Mapping[str, Any],
                 analysis: Analysis | None, *, confined: bool, check: _Gate) -> Verdict:
        if analysis is not None:
            return _command_verdict(analysis, confined=confined, check=check)
        if facts.needs_network:
            host = _host(arguments)
            if self.network_allows(host):
                return Verdict(action="allow", rule="builtin:network",
                               reason=f"network granted for {host}")
            if "url" not in arguments and self.network:
                # A tool naming no host (browser_act, on the page already open): any
                # grant lets it run; each request it makes is checked against it.
                return Verdict(action="allow", rule="builtin:network",
                               reason="network granted (each request is checked)")
            return Verdict(action="deny", rule="builtin:network",
                           reason=(f"{facts.name} needs the network and this agent's "
                                   f"policy does not grant {host or 'it'} "
                                   "(settings.policy.network)"))
        if facts.needs_approval:
            return Verdict(action="ask", rule="builtin:approval",
                           reason=f"{facts.name} is marked as needing approval")
        if facts.sends_out:
            return Verdict(action="deny", rule="builtin:default-deny",
                           reason=(f"no policy rule allows {facts.name}, which can send "
                                   "data out or act outside the workspace; add a rule "
                                   f'{{"tool": "{facts.name}", "action": "allow"}} or '
                                   '"ask" to settings.policy.rules'))
        return Verdict(action="allow", rule="builtin:confined",
                       reason="read-only or confined to the workspace")


def _command_verdict(analysis: Analysis, *, confined: bool, check: _Gate) -> Verdict:
    """The built-in verdict for a shell or git command."""
    categories = tuple(sorted(analysis.categories))
    findings = tuple(f"{f.category}: {f.reason}" for f in analysis.findings)
    if confined:
        return Verdict(action="allow", rule="builtin:confined-shell",
                       categories=categories, findings=findings,
                       reason="the sandbox is the wall: isolating backend, no network for "
                              "commands, session not tainted")
    if analysis.findings:
        return Verdict(
            action="ask", rule="builtin:shell", categories=categories, findings=findings,
            reason="the command analyser found: " + "; ".join(
                f"{f.category} ({f.reason})" for f in analysis.findings[:5]))
    why = check.strict()
    if why is not None:
        return Verdict(action="ask", rule="builtin:shell", categories=categories,
                       reason=f"the command is not provably safe: {why} (the session has "
                              "network, is tainted, or its sandbox backend does not "
                              "isolate, so only known-safe commands run without asking)")
    return Verdict(action="allow", rule="builtin:shell-safe", categories=categories,
                   reason="every command is from the known-safe set")


class _Gate:
    """The allow-list's answers for one call's command line, each worked out once."""

    def __init__(self, line: str | None, *, git_tool: bool) -> None:
        self.line = line
        self.git_tool = git_tool
        self._answers: dict[bool, str | None] = {}

    def _answer(self, known_only: bool) -> str | None:
        if self.line is None:
            return "not a command"
        if known_only not in self._answers:
            from agentd.security.commands import provably_safe

            ok, why = provably_safe(self.line, known_only=known_only,
                                    git_tool=self.git_tool)
            self._answers[known_only] = None if ok else why
        return self._answers[known_only]

    def strict(self) -> str | None:
        """Why the line is not made only of known-safe commands, or None."""
        return self._answer(True)

    def constructs(self) -> str | None:
        """Why the line holds a construct or option no allow rule may let through."""
        return self._answer(False)


def _command_line(facts: CallFacts, arguments: Mapping[str, Any]) -> str | None:
    """The shell line a call runs: the shell's ``command``, or the git tool's call as
    the equivalent ``git <command> <args...>`` line, so both get the same analysis."""
    if facts.shell:
        return str(arguments.get("command", ""))
    if facts.name != "git":
        return None
    args = arguments.get("args") or []
    if not isinstance(args, list):
        args = [args]
    # The commit message is one argv element, never interpreted: left out.
    return shlex.join(["git", str(arguments.get("command", "")), *map(str, args)])


# complexity: one condition per field a policy rule may set (tool, arguments, paths,
# hosts, commands, taint); a rule matches when all hold, and each reads best beside the
# others.
def _matches(rule: Rule, facts: CallFacts, arguments: Mapping[str, Any],
             analysis: Analysis | None, check: _Gate) -> bool:
    if not fnmatch.fnmatchcase(facts.name, rule.tool):
        return False
    allow = rule.action == "allow"
    if rule.exact_args is not None and dict(arguments) != rule.exact_args:
        return False
    if rule.args is not None:
        for name, pattern in rule.args.items():
            value = arguments.get(name)
            if value is None or not fnmatch.fnmatchcase(
                    value if isinstance(value, str) else str(value), pattern):
                return False
    if rule.paths is not None:
        paths = _paths(arguments)
        if not paths:
            return False
        hits = [_glob(p, rule.paths) for p in paths]
        if not (all(hits) if allow else any(hits)):
            return False
    if rule.commands is not None or rule.categories is not None:
        if analysis is None:
            return False
        if rule.commands is not None:
            if allow and analysis.parse_error is not None:
                return False
            simple = [" ".join(argv) for argv in analysis.commands] or [""]
            hits = [_glob(c, rule.commands) for c in simple]
            if not (all(hits) if allow else any(hits)):
                return False
        if rule.categories is not None:
            found = analysis.categories
            if allow and not found <= set(rule.categories):
                return False
            if not allow and not found & set(rule.categories):
                return False
        # The rule names the programs; the allow-list still refuses the constructs
        # (`git -c alias.x='!sh' x`, `find -exec`, `$(...)`) no pattern can vouch for.
        if allow and check.constructs() is not None:
            return False
    if rule.hosts is not None:
        host = _host(arguments)
        if host is None or not _glob(host, rule.hosts):
            return False
    return True


def sticky_rule(tool: str, arguments: Mapping[str, Any], action: Action, scope: str,
                who: str) -> Rule:
    """The rule a remembered decision adds to the agent's policy: for this tool
    (``scope="tool"``) or for exactly these arguments (``"arguments"``: the same
    argument object, no key added, removed or changed)."""
    if scope not in ("tool", "arguments"):
        raise ValueError(f"unknown remember scope {scope!r}")
    exact = dict(arguments) if scope == "arguments" else None
    return Rule(tool=_escape(tool), action=action, exact_args=exact,
                reason=f"remembered: {action} by {who}")


def _escape(text: str) -> str:
    """``text`` as an fnmatch pattern matching only itself."""
    return "".join(f"[{c}]" if c in "*?[" else c for c in text)

