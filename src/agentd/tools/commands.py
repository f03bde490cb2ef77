"""Tools that run commands in the agent's sandbox: ``shell`` and ``git``.

Both run through the run's :class:`~agentd.sandbox.context.Sandbox` (its backend,
limits and network grant), never in the daemon's own process. The shell command is
judged by the policy before it runs (the command analyser's findings make it ``ask``
by default); ``git`` takes a fixed set of subcommands and never reaches the network.
git is as able to run programs as a shell (hooks, filter and textconv drivers,
``gpg.program``, ``core.fsmonitor``... all in a config file the model can write), so
each call first checks the repository's config against an allow-list (``_gitconfig``),
reads its arguments strictly (``_gitargs``) and runs with everything that starts a
program switched off; protected paths stay out of what it shows and touches.
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Literal

from agentd.errors import ToolError
from agentd.sandbox.backends import ExecResult, Limits
from agentd.sandbox.binds import signature
from agentd.sandbox.context import Sandbox
from agentd.sandbox.shell import PersistentShell
from agentd.sandbox.workspace import Workspace
from agentd.tools._gitargs import plan_args
from agentd.tools._gitconfig import check_repository
from agentd.tools.base import Tool, ToolContext, tool

__all__ = ["COMMAND_TOOLS", "git", "shell"]

MAX_TIMEOUT_S = 3600.0


def _sandbox(ctx: ToolContext) -> Sandbox:
    sandbox = ctx.sandbox
    if not isinstance(sandbox, Sandbox) or sandbox.backend is None:
        why = sandbox.unavailable if isinstance(sandbox, Sandbox) else ""
        raise ToolError(why or "this agent has no sandbox to run commands in",
                        code="sandbox_unavailable")
    if ctx.workspace is None:
        raise ToolError("this agent has no workspace", code="no_workspace")
    return sandbox


def _limits(sandbox: Sandbox, timeout_s: float | None) -> Limits:
    if timeout_s is None:
        return sandbox.limits
    if not 0 < timeout_s <= MAX_TIMEOUT_S:
        raise ToolError(f"timeout_s must be above 0 and at most {MAX_TIMEOUT_S:g}",
                        code="tool_bad_arguments")
    return dataclasses.replace(sandbox.limits, wall_s=min(timeout_s, sandbox.limits.wall_s))


def _ran(ctx: ToolContext, backend: str, result: ExecResult) -> None:
    """Note the sandbox the call's command ran in (and a kill) for its ``tool.finished``
    event and its trace span."""
    ctx.sandboxed = {"backend": backend}
    if result.killed:
        ctx.sandboxed["killed"] = result.killed


def render(result: ExecResult, limits: Limits) -> str:
    """The result as the model reads it: exit code, why it was stopped, the output."""
    if result.timed_out:
        head = f"[killed: no result within {limits.wall_s:g}s]"
    elif result.killed == "output":
        head = "[killed: it kept writing past the output limit]"
    elif result.killed == "cpu_time":
        head = f"[killed: CPU time limit of {limits.cpu_s:g}s]"
    elif result.killed == "file_size":
        head = f"[killed: file size limit of {limits.file_size_mb} MB]"
    elif result.killed == "memory":
        head = f"[killed: memory limit of {limits.memory_mb} MB]"
    elif result.killed:
        head = f"[killed: {result.killed}]"
    else:
        head = f"[exit code {result.exit_code}]"
    parts = [head]
    if result.stdout:
        parts.append(result.stdout.rstrip("\n"))
    if result.stderr:
        parts.append("[stderr]\n" + result.stderr.rstrip("\n"))
    if result.truncated:
        parts.append(f"[output cut at {limits.output_bytes} bytes]")
    return "\n".join(parts)


@tool(timeout_s=MAX_TIMEOUT_S + 30)
async def shell(ctx: ToolContext, command: str, timeout_s: float | None = None,
                persistent: bool | None = None) -> str:
    """Run a shell command (bash) in the agent's sandbox and return its exit code and
    output. The working directory is the workspace (/workspace); there is no network
    unless the agent's policy grants it, and then only through an HTTP proxy
    (HTTP_PROXY/HTTPS_PROXY are set) that refuses private and local addresses.

    Args:
        command: the command line.
        timeout_s: wall-clock limit in seconds (at most the agent's limit).
        persistent: run it in this session's long-lived shell, where the working
            directory and exported variables stay between calls (default: the agent's
            settings.sandbox.persistent_shell).
    """
    sandbox = _sandbox(ctx)
    if not command.strip():
        raise ToolError("command is empty", code="tool_bad_arguments")
    if "\x00" in command:
        raise ToolError("command contains a NUL character", code="tool_bad_arguments")
    limits = _limits(sandbox, timeout_s)
    backend, workspace = sandbox.backend, ctx.workspace
    assert backend is not None and workspace is not None
    keep = sandbox.persistent_shell if persistent is None else persistent
    # The grant's egress proxy (None without a grant): the only way out of the sandbox.
    egress = await sandbox.proxy()
    # The agent's skills as they are now (read-only at /skills/<name>).
    binds = tuple(await sandbox.binds()) if sandbox.binds is not None else ()
    if keep and sandbox.shells is not None:
        async def start() -> PersistentShell:
            return await backend.shell(workspace=workspace, network=egress,
                                       limits=sandbox.limits, binds=binds)

        # A change of the network grant gets a new shell, never the old one's network;
        # a change of the skills replaces the shell (it would show the old ones).
        key = f"{sandbox.shell_key}/{sandbox.shell_suffix()}"
        session_shell = await sandbox.shells.get(
            key, start, tag=signature(binds),
            why=" because the agent's skills changed (/skills shows them as they are now)")
        result = await session_shell.run(command, timeout_s=limits.wall_s)
    else:
        result = await backend.run(["bash", "--noprofile", "--norc", "-c", command],
                                   workspace=workspace, network=egress, limits=limits,
                                   binds=binds)
    _ran(ctx, backend.name, result)
    if sandbox.command_network:
        # With the network, what a command prints may come from anywhere.
        ctx.untrusted = "a command with network access"
    return render(result, limits)


GitCommand = Literal["status", "diff", "log", "add", "commit", "init", "show", "branch",
                     "checkout", "restore", "reset", "rm", "mv"]

#: Switch off everything of git that runs other programs or reaches out. The
#: repository's own config is checked first (``_gitconfig``); these are the second
#: layer, and they reach the git processes git itself starts (GIT_CONFIG_PARAMETERS).
_GIT_SAFE = ["-c", "core.hooksPath=/dev/null", "-c", "core.pager=cat",
             "-c", "core.editor=true", "-c", "sequence.editor=true",
             "-c", "credential.helper=", "-c", "core.askPass=",
             "-c", "core.fsmonitor=false", "-c", "protocol.allow=never",
             "-c", "core.sshCommand=false", "-c", "core.gitProxy=",
             "-c", "gpg.program=false", "-c", "gpg.ssh.program=false",
             "-c", "gpg.x509.program=false", "-c", "commit.gpgSign=false",
             "-c", "tag.gpgSign=false", "-c", "core.attributesFile=/dev/null",
             "-c", "submodule.recurse=false", "-c", "diff.ignoreSubmodules=all",
             "-c", "status.submoduleSummary=false", "-c", "gc.auto=0",
             "-c", "maintenance.auto=false", "-c", "core.alternateRefsCommand=",
             "-c", "safe.directory=*",
             "-c", "user.name=agentd agent", "-c", "user.email=agent@agentd.invalid",
             "--no-pager"]
#: GIT_DIR and GIT_WORK_TREE are set (relative to the workspace, the working
#: directory): git looks for no repository above the workspace and follows no
#: ``gitdir:`` file. Nothing of the model's reaches git's environment.
_GIT_ENV = {"GIT_TERMINAL_PROMPT": "0", "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_CONFIG_GLOBAL": "/dev/null", "GIT_ATTR_NOSYSTEM": "1",
            "GIT_NO_REPLACE_OBJECTS": "1", "GIT_OPTIONAL_LOCKS": "0"}


@tool(timeout_s=MAX_TIMEOUT_S + 30)
async def git(ctx: ToolContext, command: GitCommand, args: list[str] | None = None,
              message: str | None = None) -> str:
    """Run git in the workspace (no network: no push, pull, fetch or clone).

    Args:
        command: status, diff, log, show, add, commit, init, branch, checkout, restore,
            reset, rm or mv.
        args: further arguments (paths, revisions, flags).
        message: the commit message (for commit).
    """
    sandbox = _sandbox(ctx)
    extra = list(args or [])
    if len(extra) > 200 or any("\x00" in a for a in extra):
        raise ToolError("too many arguments, or a NUL character", code="tool_bad_arguments")
    argv = ["git", *_GIT_SAFE, command]
    if command == "commit":
        if not message:
            raise ToolError("commit needs a message", code="tool_bad_arguments")
        argv += ["-m", message]
    elif message is not None:
        raise ToolError("message is only for commit", code="tool_bad_arguments")
    if command in ("log", "show", "diff"):
        argv += ["--no-ext-diff", "--no-textconv"]
    if command == "log" and not any(a.startswith(("-n", "--max-count")) for a in extra):
        argv += ["-n", "50"]
    backend, workspace = sandbox.backend, ctx.workspace
    assert backend is not None and workspace is not None

    def prepare() -> list[str]:
        files = Workspace(workspace)
        planned = plan_args(command, extra, files, ctx.protected)
        check_repository(files)
        return planned

    argv += await asyncio.to_thread(prepare)
    env = dict(_GIT_ENV)
    if command != "init":
        env.update(GIT_DIR=".git", GIT_WORK_TREE=".")
    result = await backend.run(argv, workspace=workspace, network=False,
                               limits=sandbox.limits, env=env)
    _ran(ctx, backend.name, result)
    return render(result, sandbox.limits)


COMMAND_TOOLS: dict[str, Tool] = {t.name: t for t in (shell, git)}
