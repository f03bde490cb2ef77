"""git is as dangerous as a shell: attacks through the repository's config, git's
arguments, and git (or the file tools) as a way around a path deny rule. All through the
real git in the real sandbox."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest

from agentd.assembly import Runtime
from agentd.config import Settings
from agentd.errors import ToolError
from agentd.sandbox import choose, prepare_workspace
from agentd.sandbox.backends import Limits, detect
from agentd.sandbox.context import Sandbox
from agentd.security.policy import CallFacts, Policy, PolicyConfig
from agentd.tools import COMMAND_TOOLS, FILE_TOOLS, ToolContext
from agentd.tools._gitconfig import parse_config
from agentd.tools.protect import is_protected

TOOLS = {**COMMAND_TOOLS, **FILE_TOOLS}
DENY_ENV = {"tool": "read_file", "paths": [".env"], "action": "deny"}
SECRET = "hunter2-f00d"


async def run(sandbox: Sandbox, workspace: Path, name: str,
              protected: tuple[str, ...] = (), **arguments: Any) -> str:
    ctx = ToolContext(agent="a", session="s", run_id="r", call_id="c", effect_id="e",
                      workspace=workspace, sandbox=sandbox, protected=protected)
    return str(await TOOLS[name].call(arguments, ctx, 60.0))


async def refused(sandbox: Sandbox, workspace: Path, name: str,
                  protected: tuple[str, ...] = (), **arguments: Any) -> ToolError:
    with pytest.raises(ToolError) as caught:
        await run(sandbox, workspace, name, protected, **arguments)
    return caught.value


async def repo(sandbox: Sandbox, workspace: Path) -> None:
    assert (await run(sandbox, workspace, "git", command="init")).startswith(
        "[exit code 0]")
    await run(sandbox, workspace, "write_file", path="a.txt", content="one\n")
    await run(sandbox, workspace, "git", command="add", args=["a.txt"])
    out = await run(sandbox, workspace, "git", command="commit", message="first")
    assert out.startswith("[exit code 0]"), out


# -- the repository's config -----------------------------------------------------------

# A value's ";" starts a comment in git's config: the program is a script instead.
RUN = "sh evil.sh"
ATTACKS = {
    "filter": (f"[filter \"x\"]\n\tclean = {RUN}\n", "add"),
    "filter, dotted section": (f"[filter.x]\n\tclean = {RUN}\n", "add"),
    "filter, key on the header line": (f"[filter \"x\"] clean = {RUN}\n", "add"),
    "textconv": (f"[diff \"x\"]\n\ttextconv = {RUN}\n", "log"),
    "diff.external": (f"[diff]\n\texternal = {RUN}\n", "diff"),
    # gpg.program is run without a shell (git add --chmod=+x and a checkout make
    # evil.sh executable without one; the test takes the short way).
    "gpg.program": ("[gpg]\n\tprogram = ./evil.sh\n[commit]\n\tgpgsign = true\n",
                    "commit"),
    "core.fsmonitor": (f"[core]\n\tfsmonitor = {RUN}\n", "status"),
    "core.hooksPath": ("[core]\n\thooksPath = hooks\n", "commit"),
    "alias": ("[alias]\n\tstatus = !sh evil.sh\n", "status"),
    "include.path": ("[include]\n\tpath = ../inc.cfg\n", "add"),
    "includeIf": ("[includeIf \"gitdir:/\"]\n\tpath = ../inc.cfg\n", "add"),
    "core.worktree": ("[core]\n\tworktree = /\n", "status"),
    "continuation hides nothing": (f"[user]\n\tname = a \\\n[filter \"x\"]\n"
                                   f"\tclean = {RUN}\n", "add"),
}
# On the code before the config check, filter (all three spellings), textconv, gpg.program,
# include.path and includeIf ran evil.sh; the others were already switched off by -c
# overrides, and are refused now as a matter of course.


@pytest.mark.parametrize("name", list(ATTACKS))
async def test_config_that_runs_programs_is_refused(sandbox: Sandbox, workspace: Path,
                                                    name: str) -> None:
    snippet, command = ATTACKS[name]
    await repo(sandbox, workspace)
    # What a model can do with the file tools alone (no shell).
    await run(sandbox, workspace, "write_file", path=".gitattributes",
              content="* filter=x diff=x\n")
    await run(sandbox, workspace, "write_file", path="evil.sh",
              content="touch pwned\ncat \"$@\"\n")
    await run(sandbox, workspace, "write_file", path="inc.cfg",
              content=f"[filter \"x\"]\n\tclean = {RUN}\n")
    await run(sandbox, workspace, "write_file", path="hooks/pre-commit",
              content="#!/bin/sh\ntouch pwned\n")
    os.chmod(workspace / "hooks" / "pre-commit", 0o755)
    os.chmod(workspace / "evil.sh", 0o755)
    config = (workspace / ".git" / "config").read_text()
    await run(sandbox, workspace, "write_file", path=".git/config",
              content=config + snippet)
    await run(sandbox, workspace, "write_file", path="a.txt", content="two\n")
    arguments: dict[str, Any] = {
        "add": {"args": ["a.txt"]}, "commit": {"args": ["-a"], "message": "m"},
        "log": {"args": ["-p"]}, "diff": {}, "status": {}}[command]
    error = await refused(sandbox, workspace, "git", command=command, **arguments)
    assert error.code == "git_config_refused", error.message
    assert not (workspace / "pwned").exists()


async def test_repository_elsewhere_is_refused(sandbox: Sandbox, workspace: Path) -> None:
    await repo(sandbox, workspace)
    for path in (".git/commondir", ".git/objects/info/alternates"):
        await run(sandbox, workspace, "write_file", path=path, content="/elsewhere\n")
        error = await refused(sandbox, workspace, "git", command="status")
        assert error.code == "git_config_refused" and path in error.message
        (workspace / path).unlink()
    # .git as a gitdir: file, and as a link.
    os.rename(workspace / ".git", workspace / "real")
    await run(sandbox, workspace, "write_file", path=".git", content="gitdir: real\n")
    assert (await refused(sandbox, workspace, "git", command="log")).code == (
        "git_config_refused")
    os.unlink(workspace / ".git")
    os.symlink("real", workspace / ".git")
    assert (await refused(sandbox, workspace, "git", command="log")).code == (
        "git_config_refused")


@pytest.mark.parametrize("text", [
    b"[core]\n\tbare = false\n\tfilemode\n",
    b"[Core]\n\tBare=false ; comment\n# comment\n[user]name = x\n",
    b"[branch \"Ma\\\"in\"]\n\tremote = origin\n\tmerge = refs/heads/main\n",
    b"[branch.Main]\n\tremote = o\n",
    b"[user]\n\tname = \"a # b\" \\\n  continued\n\temail = e ; x \\\n[filter \"y\"]\n",
    b"\xef\xbb\xbf[core]\r\n\tbare = true\r\n",
    b"[core]\n\tname = \"unclosed\n",
    b"[core]\n\tname = bad \\q escape\n",
    b"[core \"x\"\n]\n",
    b"[core]\n\t1abc = x\n",
    b"[core]\n\tbare # no equals\n",
    b"[]\n",
    b"[core]\n\v\tbare = true\n",
    b"[a.b.C]\nx=1\n[a \"b.C\"] y\n",
    b"\xef\xbb[core]\n",
    b"x = 1\n",
])
def test_parser_reads_config_as_git_does(tmp_path: Path, text: bytes) -> None:
    """Every file the parser accepts, git reads with the same names; every file git
    refuses, the parser refuses too (a file cannot mean one thing to each)."""
    path = tmp_path / "config"
    path.write_bytes(text)
    git = subprocess.run(["git", "config", "--file", str(path), "--list", "--name-only"],
                         capture_output=True, env={"PATH": os.environ["PATH"]})
    try:
        ours = [name for name, _ in parse_config(text, "config")]
    except ToolError:
        ours = None
    if git.returncode != 0:
        assert ours is None
    else:
        names = git.stdout.decode().split()
        assert ours == names or ours is None


def _host_git(cwd: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=cwd,
                   check=True, capture_output=True, env={"PATH": os.environ["PATH"]})


async def test_an_embedded_repository_runs_nothing(sandbox: Sandbox, workspace: Path
                                                   ) -> None:
    """A repository inside the workspace's, added as a submodule: git status would run
    a status in it, under its own config (which the config check does not read)."""
    await repo(sandbox, workspace)
    sub = workspace / "sub"
    sub.mkdir()
    _host_git(sub, "init", "-q")
    (sub / "evil.sh").write_text("touch ../pwned\ncat\n")
    (sub / ".gitattributes").write_text("f filter=x\n")
    (sub / "f").write_text("x\n")
    _host_git(sub, "add", "f", ".gitattributes")
    _host_git(sub, "commit", "-qm", "s")
    with (sub / ".git" / "config").open("a") as config:
        config.write("[filter \"x\"]\n\tclean = sh evil.sh\n")
    (sub / "f").write_text("y\n")  # the same size: git must read it (through the filter)
    prepare_workspace(workspace)
    await run(sandbox, workspace, "git", command="add", args=["sub"])
    for command in ("status", "diff"):
        out = await run(sandbox, workspace, "git", command=command)
        assert out.startswith("[exit code 0]"), out
        assert not (workspace / "pwned").exists(), command


async def test_no_repository_above_the_workspace() -> None:
    """Without a repository of its own, git does not find one in a parent folder: on
    the process backend, which runs in the host's file system, it would (and run
    that repository's config, which nothing checked)."""
    top = Path(tempfile.mkdtemp(prefix="agentd-git-"))
    try:
        top.chmod(0o755)  # the sandbox's uid may go through, as to a real parent
        _host_git(top, "init", "-q")
        with (top / ".git" / "config").open("a") as config:
            config.write("[core]\n\tfsmonitor = ws/evil.sh\n")
        workspace = top / "ws"
        workspace.mkdir(mode=0o700)
        (workspace / "evil.sh").write_text("#!/bin/sh\ntouch pwned\n")
        (workspace / "evil.sh").chmod(0o755)
        prepare_workspace(workspace)
        sandbox = Sandbox(backend=choose("process"), limits=Limits(wall_s=20))
        out = await run(sandbox, workspace, "git", command="status")
        assert "not a git repository" in out, out
        assert not (workspace / "pwned").exists() and not (top / "pwned").exists()
    finally:
        shutil.rmtree(top)


async def test_paths_outside_the_workspace_are_refused(sandbox: Sandbox, workspace: Path
                                                       ) -> None:
    await repo(sandbox, workspace)
    for args in (["/etc/passwd", "a.txt"], ["--", "../x"], ["a.txt", "sub/../../y"]):
        error = await refused(sandbox, workspace, "git", command="diff", args=args)
        assert error.code == "path_refused", (args, error.message)


BAD_ARGS: list[tuple[str, list[str]]] = [
    ("log", ["-c", "core.pager=sh"]), ("log", ["--config-env=core.pager=X"]),
    ("diff", ["--no-index", "/dev/null", "a.txt"]), ("diff", ["--no-inde", "x", "y"]),
    ("diff", ["--ext-diff"]), ("log", ["--textconv"]), ("log", ["--output=.git/config"]),
    ("show", ["--outp", "x"]), ("log", ["--exec-path=/tmp"]), ("diff", ["-Oa.txt"]),
    ("commit", ["-F", "a.txt"]), ("commit", ["--file=a.txt"]), ("commit", ["-aS"]),
    ("add", ["-p"]), ("add", ["--interactive"]), ("log", ["--show-signature"]),
    ("checkout", ["--recurse-submodules"]), ("init", ["--template=t"]),
    ("init", ["--separate-git-dir=/tmp/x"]), ("init", ["sub"]),
    ("status", ["--ignore-submodules=none"]), ("add", ["--pathspec-from-file=a.txt"]),
    ("log", [":(attr:x)a.txt"]),
]


async def test_arguments_that_run_programs_are_refused(sandbox: Sandbox, workspace: Path
                                                       ) -> None:
    await repo(sandbox, workspace)
    for command, args in BAD_ARGS:
        error = await refused(sandbox, workspace, "git", command=command, args=args,
                              **({"message": "m"} if command == "commit" else {}))
        assert error.code == "tool_bad_arguments", (command, args, error.message)
    assert (workspace / ".git" / "config").read_text().count("[") == 1  # unchanged


@pytest.mark.parametrize("protected", [(), (".env", "**/id_rsa")])
async def test_everyday_git_still_works(sandbox: Sandbox, workspace: Path,
                                        protected: tuple[str, ...]) -> None:
    """Also with protected paths (excludes added to what git shows)."""
    await repo(sandbox, workspace)
    # An attribute naming a driver nobody can define is harmless.
    await run(sandbox, workspace, "write_file", path=".gitattributes",
              content="*.txt filter=x diff=x\n")
    await run(sandbox, workspace, "write_file", path="a.txt", content="two\n")
    assert "+two" in await run(sandbox, workspace, "git", protected, command="diff")
    assert "a.txt" in await run(sandbox, workspace, "git", protected, command="status",
                                args=["--short"])
    await run(sandbox, workspace, "git", protected, command="add", args=["."])
    out = await run(sandbox, workspace, "git", protected, command="commit", message="second")
    assert out.startswith("[exit code 0]"), out
    log = await run(sandbox, workspace, "git", protected, command="log", args=["-p", "--stat"])
    assert "second" in log and "+two" in log
    assert "+two" in await run(sandbox, workspace, "git", protected, command="show", args=["HEAD"])
    assert "one" in await run(sandbox, workspace, "git", protected, command="show",
                              args=["HEAD~1:a.txt"])
    await run(sandbox, workspace, "git", protected, command="branch", args=["feature"])
    out = await run(sandbox, workspace, "git", protected, command="checkout", args=["feature"])
    assert out.startswith("[exit code 0]"), out
    for command, args in (("mv", ["a.txt", "b.txt"]), ("restore", ["--staged", "b.txt"]),
                          ("reset", ["--hard", "HEAD"]), ("diff", ["--cached", "--stat"]),
                          ("rm", ["--cached", "a.txt"]), ("log", ["-n", "1", "--", "."]),
                          ("branch", ["-v"]), ("checkout", ["-b", "other"])):
        out = await run(sandbox, workspace, "git", protected, command=command, args=args)
        assert out.startswith("[exit code 0]"), (command, args, out)


# -- protected paths -------------------------------------------------------------------


async def test_a_path_deny_rule_holds_for_every_tool(sandbox: Sandbox, workspace: Path
                                                     ) -> None:
    protected = Policy(agent=PolicyConfig.model_validate({"rules": [DENY_ENV]})
                       ).protected_paths()
    assert protected == (".env",)
    await repo(sandbox, workspace)
    (workspace / ".env").write_text(f"TOKEN={SECRET}\n")
    (workspace / "sub").mkdir()
    (workspace / "sub" / "b.txt").write_text("b\n")
    prepare_workspace(workspace)
    await run(sandbox, workspace, "git", command="add", args=["."])
    await run(sandbox, workspace, "git", command="commit", message="with env")
    (workspace / ".env").write_text(f"TOKEN={SECRET}-2\n")

    async def tool(name: str, **arguments: Any) -> str:
        return await run(sandbox, workspace, name, protected, **arguments)

    assert SECRET not in await tool("grep", pattern="TOKEN|hunter", path=".")
    assert ".env" not in await tool("glob", pattern="*")
    assert ".env" not in await tool("glob", pattern="**/.env")
    assert ".env" not in await tool("list_files", path=".")
    assert "b.txt" in await tool("list_files", path="sub")
    for path in (".env", "./.env", "sub/../.env", ".ENV"):
        for name, arguments in (("read_file", {}), ("grep", {"pattern": "x"}),
                                ("edit_file", {"old": "TOKEN", "new": "x"}),
                                ("write_file", {"content": "x"})):
            error = await refused(sandbox, workspace, name, protected, path=path,
                                  **arguments)
            assert error.code == "path_protected", (name, path, error.message)
    for command, args in (("diff", ["--no-index", "/dev/null", ".env"]),
                          ("mv", [".env", "x"]), ("show", ["HEAD:.env"]),
                          ("show", ["HEAD:./.env"]), ("log", ["-p", "--", ".env"]),
                          ("checkout", ["HEAD", "--", "."]), ("rm", ["*.env"])):
        error = await refused(sandbox, workspace, "git", protected, command=command,
                              args=args)
        assert error.code in ("path_protected", "tool_bad_arguments"), error.message
    for command, args in (("log", ["-p"]), ("show", ["HEAD"]), ("diff", []),
                          ("diff", ["HEAD~1"]), ("log", ["-p", "--all", "--", "."]),
                          ("status", ["--short"]), ("diff", ["--stat", "HEAD~1", "HEAD"]),
                          ("show", ["--stat"])):
        out = await tool("git", command=command, args=args)
        assert out.startswith("[exit code 0]"), (command, args, out)
        assert SECRET not in out and ".env" not in out, (command, args, out)
    assert "+one" in await tool("git", command="log", args=["-p", "a.txt"])
    assert "one" in await tool("git", command="show", args=["HEAD:a.txt"])
    assert "with env" in await tool("git", command="log", args=["--oneline", "-n", "1"])
    assert (workspace / ".env").read_text() == f"TOKEN={SECRET}-2\n"


def _isolating() -> str:
    available = detect()
    for name in ("bubblewrap", "gvisor"):
        if available.get(name) is None:
            return name
    pytest.skip(f"no isolating sandbox backend here: {available}")


async def test_protected_paths_through_a_run(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home", demo_agent=False,
                        sandbox={"backend": _isolating()})
    rt = await Runtime.open(settings)
    try:
        calls = [("write_file", {"path": ".env", "content": "overwritten"}),
                 ("git", {"command": "init"}),
                 ("git", {"command": "add", "args": ["."]}),
                 ("git", {"command": "commit", "message": "all"}),
                 ("git", {"command": "log", "args": ["-p", "--stat"]}),
                 ("grep", {"pattern": "TOKEN", "path": "."}),
                 ("glob", {"pattern": "**/*"}),
                 ("git", {"command": "show", "args": ["HEAD:.env"]}),
                 ("git", {"command": "mv", "args": [".env", "x"]}),
                 ("read_file", {"path": "./.env"})]
        await rt.create_agent(name="m", model="scripted", tools=list(TOOLS), settings={
            "policy": {"rules": [DENY_ENV, {"tool": "*", "action": "allow"}]},
            "script": [{"tool_calls": [{"name": n, "arguments": a}]} for n, a in calls]
            + [{"text": "done"}]})
        workspace = rt.workspace_of(await rt.get_agent("m"))
        workspace.mkdir(parents=True)
        (workspace / ".env").write_text(f"TOKEN={SECRET}\n")
        sent = await rt.send("m", "k", "go")
        run_ = await rt.wait(sent.run.id)
        assert run_.status == "completed", run_.error
        results = [e.data for e in await rt.read_events(sent.session.id)
                   if e.kind == "tool.finished"]
        assert len(results) == len(calls)
        # The deny rule names read_file; write_file of the path is refused by the
        # tool itself, as every file tool keeps away from a protected path.
        assert results[0]["is_error"] and "protected" in results[0]["output"]
        assert (workspace / ".env").read_text() == f"TOKEN={SECRET}\n"
        assert "exit code 0" in results[4]["output"], results[4]  # log -p
        for result in results[4:]:
            assert SECRET not in result["output"]
            assert ".env" not in result["output"] or result["is_error"], result
        for result in results[7:]:
            assert result["is_error"], result
    finally:
        await rt.close()


def test_policy_sees_git_paths_and_protects_deny_rule_paths() -> None:
    policy = Policy(agent=PolicyConfig.model_validate({"rules": [
        {"tool": "git", "paths": [".env", "secrets/*"], "action": "deny"},
        {"tool": "write_*", "paths": ["src/*"], "action": "deny"},   # writes only
        {"tool": "*", "paths": ["keys/*"], "action": "deny"},
        {"tool": "grep", "paths": ["x"], "args": {"pattern": "y"}, "action": "deny"},
        {"tool": "read_file", "paths": ["ask.txt"], "action": "ask"},
        DENY_ENV]}))
    # Deny rules on a tool that reads (or on every tool), without other conditions.
    assert policy.protected_paths() == (".env", "secrets/*", "keys/*")
    git = CallFacts(name="git")
    for args in ([".env", "x"], ["HEAD:.env"], ["HEAD:./.env"], ["--", "secrets/k"],
                 ["--stat", "HEAD", "--", "sub/../.env"]):
        verdict = policy.decide(git, {"command": "mv", "args": args})
        assert verdict.action == "deny", args
    for args in (["a.txt", "b.txt"], ["--stat"], []):
        assert policy.decide(git, {"command": "log", "args": args}).action == "allow"


@pytest.mark.parametrize(("path", "protected"), [
    (".env", True), ("./.env", True), ("sub/../.env", True), (".ENV", True),
    ("dir/.env", False), ("env", False), (".env.example", False),
    ("secrets", True), ("secrets/a/b", True), ("Secrets/x", True), ("secret", False),
    ("a/b/id_rsa", True), ("id_rsa", True),
])
def test_protected_path_matching(path: str, protected: bool) -> None:
    assert is_protected(path, (".env", "secrets", "**/id_rsa")) is protected
