"""An agent's enabled skills in its shell commands (real runs: scripted model, real
bubblewrap, SQLite and PostgreSQL): read-only at /skills/<name>, only the agent's
own, no link or swapped folder reaching the host, hostile names refused; installing,
enabling, disabling, replacing or removing shows at the next command (a persistent
shell is replaced, saying so); and the <skills> section says where they are, or why
the commands do not see them."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import asgi_client, eventually
from tests.sandbox.conftest import backend_or_skip
from tests.skills._kit import good_files, tar_of, zip_of

from agentd.assembly import Runtime
from agentd.config import Settings
from agentd.llm.scripted import enqueue
from agentd.sandbox.backends import BubblewrapBackend

TOOLS = ["shell", "skill_load", "skill_read"]
BODY = "# PDF tools\n\nThe pdf secret step."
ALLOW = {"policy": {"rules": [{"tool": "shell", "action": "allow"}]}}


def sh(command: str, persistent: bool = False) -> dict[str, Any]:
    return {"tool_calls": [{"name": "shell", "arguments": {
        "command": command, "persistent": persistent}}]}


def call(tool: str, **arguments: Any) -> dict[str, Any]:
    return {"tool_calls": [{"name": tool, "arguments": arguments}]}


async def outputs(rt: Runtime, agent: str, session: str = "k") -> list[str]:
    sent = await rt.send(agent, session, "go")
    run = await rt.wait(sent.run.id)
    assert run.status == "completed", run
    found = await rt.store.get_session((await rt.get_agent(agent)).id, session)
    return [e.data["output"] for e in await rt.read_events(found.id)
            if e.kind == "tool.finished" and e.run_id == sent.run.id]


async def one(rt: Runtime, agent: str, command: str, persistent: bool = False) -> str:
    enqueue(sh(command, persistent), {"text": "ok"}, agent=agent)
    (out,) = await outputs(rt, agent)
    return out


def tree_hash(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        digest.update(str(path.relative_to(folder)).encode())
        if path.is_file():
            digest.update(path.read_bytes())
    return digest.hexdigest()


@pytest.fixture
async def skilled(runtime: Runtime) -> Runtime:
    backend_or_skip(BubblewrapBackend)
    registry = runtime.skills.registry
    await registry.install_archive(zip_of(good_files(body=BODY)))
    await registry.install_archive(zip_of(good_files("other", description="Other.",
                                                     body="other's body"), top="other"))
    await runtime.create_agent(name="a", tools=TOOLS, settings={
        **ALLOW, "skills": {"enabled": ["pdf-tools"]}})
    await runtime.create_agent(name="b", tools=TOOLS, settings={
        **ALLOW, "skills": {"enabled": ["other"]}})
    return runtime


async def test_enabled_skills_are_readable_not_writable(skilled: Runtime,
                                                        systems: list[str]) -> None:
    folder = skilled.skills.registry.folder("pdf-tools")
    before = tree_hash(folder)
    out = await one(skilled, "a", "cat /skills/pdf-tools/SKILL.md; ls /skills; "
                    "python3 /skills/pdf-tools/scripts/extract.py")
    assert out.startswith("[exit code 0]") and BODY in out, out
    assert out.rstrip().endswith("pdf-tools\nx"), out
    assert "/skills/<name>/" in systems[-1] and "cannot be written" in systems[-1]
    attempts = ["echo pwned > /skills/pdf-tools/SKILL.md",
                "touch /skills/pdf-tools/scripts/new.py",
                "rm -rf /skills/pdf-tools/scripts", "mkdir /skills/mine",
                "mv /skills/pdf-tools /skills/moved",
                "cp /bin/sh /skills/pdf-tools/sh",
                "ln -s / /skills/pdf-tools/root"]
    for attempt in attempts:
        result = await one(skilled, "a", attempt)
        assert not result.startswith("[exit code 0]"), (attempt, result)
        # The mount is read-only (not merely files the sandbox's uid does not own).
        assert "Read-only file system" in result, result
    assert tree_hash(folder) == before
    enqueue(call("skill_load", name="pdf-tools"), {"text": "ok"}, agent="a")
    (loaded,) = await outputs(skilled, "a")
    assert "at /skills/pdf-tools/PATH (read-only) in your shell commands" in loaded


async def test_skills_a_daemon_installs_are_readable_by_the_agents_uid(
        runtime: Runtime) -> None:
    """The daemon runs with umask 0077, and the agent's shell under the agent's own
    uid (not root, as in production): the skill's files were 0600 and its folders
    0700, root's, and the shell got "Permission denied" on SKILL.md and its scripts."""
    backend_or_skip(BubblewrapBackend)
    old = os.umask(0o077)  # as agentd.server.daemon sets it
    try:
        await runtime.skills.registry.install_archive(tar_of(good_files(body=BODY)))
    finally:
        os.umask(old)
    await runtime.create_agent(name="a", tools=TOOLS, settings={
        **ALLOW, "skills": {"enabled": ["pdf-tools"]}})
    out = await one(runtime, "a", "id -u; cat /skills/pdf-tools/SKILL.md; "
                    "ls /skills/pdf-tools/scripts; python3 /skills/pdf-tools/scripts/extract.py")
    assert out.startswith("[exit code 0]") and BODY in out, out
    uid = int(out.splitlines()[1])
    assert uid != 0 and uid != os.getuid(), out
    assert out.rstrip().endswith("extract.py\nx"), out


async def test_other_agents_skills_are_invisible(skilled: Runtime) -> None:
    out = await one(skilled, "b", "ls /skills; cat /skills/pdf-tools/SKILL.md; "
                    "ls -a /skills/other/..; grep -rs 'pdf secret' / --exclude-dir=proc "
                    "--exclude-dir=sys --exclude-dir=usr; true")
    assert "pdf secret" not in out
    listing = out.split("\n", 1)[1]
    assert listing.startswith("other\n"), out
    assert "No such file" in out
    # An agent with no skill enabled has no /skills at all.
    await skilled.create_agent(name="c", tools=TOOLS, settings=ALLOW)
    assert "No such file" in await one(skilled, "c", "ls /skills")


async def test_a_link_or_a_swapped_folder_does_not_reach_the_host(
        skilled: Runtime, tmp_path: Path) -> None:
    secret = tmp_path / "host-secret"
    secret.write_text("the host's secret\n")
    secret.chmod(0o644)
    registry = skilled.skills.registry
    folder = registry.folder("pdf-tools")
    # A link planted in the published folder (the registry refuses links in
    # packages; this is the defence behind that): it resolves in the sandbox.
    (folder / "leak").symlink_to(secret)
    out = await one(skilled, "a", "cat /skills/pdf-tools/leak; "
                    f"cat {secret}; ls /skills/pdf-tools/")
    assert "the host's secret" not in out and "No such file" in out
    # The name's link replaced by one to a host folder: the bind is of the version
    # folder the registry published, not of what the name's link says now.
    link = registry.root / "pdf-tools"
    os.unlink(link)
    link.symlink_to(tmp_path)
    out = await one(skilled, "a", "ls /skills/pdf-tools/; cat /skills/pdf-tools/SKILL.md")
    assert "host-secret" not in out and BODY in out
    # The version folder itself swapped for a link to the host: refused, not followed.
    moved = folder.with_name(folder.name + ".moved")
    folder.rename(moved)
    folder.symlink_to(tmp_path)
    out = await one(skilled, "a", "ls -R /skills")
    assert "cannot be shown in the sandbox" in out and "host-secret" not in out


async def test_a_hostile_skill_name_is_refused(settings: Settings, skilled: Runtime
                                               ) -> None:
    async with asgi_client(settings, skilled) as api:
        for name in ("..", "..%2F..%2Fetc", "%2Fetc", "pdf-tools%2F..", "a%00b",
                     "pdf-tools%0A", "PDF-TOOLS"):
            response = await api.put(f"/v1/agents/a/skills/{name}")
            assert 400 <= response.status_code < 500, (name, response.text)
        for enabled in (["../other"], ["/etc"], ["pdf-tools/../other"], ["."]):
            response = await api.patch("/v1/agents/a", json={"settings": {
                **ALLOW, "skills": {"enabled": enabled}}})
            assert response.status_code == 422, (enabled, response.text)
        shown = (await api.get("/v1/agents/a")).json()["settings"]["skills"]
        assert shown == {"enabled": ["pdf-tools"]}
    assert "pdf-tools" in await one(skilled, "a", "ls /skills")


async def test_changes_show_at_the_next_command(skilled: Runtime) -> None:
    """Between two commands of one run: what the first saw, the second does not."""
    agent = await skilled.get_agent("a")
    go = skilled.agents.workspace_of(agent) / "go"
    enqueue(sh("ls /skills; while [ ! -e go ]; do sleep 0.05; done"),
            sh("ls /skills"), {"text": "ok"}, agent="a")
    sent = await skilled.send("a", "k", "go")

    async def first_done() -> bool:
        session = await skilled.store.get_session(agent.id, "k")
        events = await skilled.read_events(session.id)
        return any(e.kind == "tool.started" and e.run_id == sent.run.id for e in events)

    await eventually(first_done, what="the first command started")
    await skilled.skills.enable("a", "other")
    await skilled.skills.disable("a", "pdf-tools")
    go.write_text("")
    assert (await skilled.wait(sent.run.id)).status == "completed"
    session = await skilled.store.get_session(agent.id, "k")
    first, second = [e.data["output"] for e in await skilled.read_events(session.id)
                     if e.kind == "tool.finished" and e.run_id == sent.run.id]
    assert first.splitlines()[1:] == ["pdf-tools"], first
    assert second.splitlines()[1:] == ["other"], second


async def test_a_persistent_shell_follows_the_skills(skilled: Runtime) -> None:
    registry = skilled.skills.registry
    out = await one(skilled, "a", "cd /skills/pdf-tools && export KEPT=1 && ls /skills",
                    persistent=True)
    assert out.splitlines()[1:] == ["pdf-tools"], out
    out = await one(skilled, "a", "echo kept=$KEPT; pwd", persistent=True)
    assert out.splitlines()[1:] == ["kept=1", "/skills/pdf-tools"], out

    await skilled.skills.enable("a", "other")
    out = await one(skilled, "a", "echo kept=$KEPT; ls /skills", persistent=True)
    assert out.splitlines()[1:4] == ["kept=", "other", "pdf-tools"], out
    assert "previous shell was closed because the agent's skills changed" in out

    await registry.install_archive(tar_of(good_files("other", description="Other v2.",
                                                     body="other v2"), top="other"),
                                   replace=True)
    out = await one(skilled, "a", "cat /skills/other/SKILL.md", persistent=True)
    assert "other v2" in out and "skills changed" in out, out

    await skilled.skills.disable("a", "pdf-tools")
    out = await one(skilled, "a", "ls /skills", persistent=True)
    assert out.splitlines()[1] == "other" and "pdf-tools" not in out.split("[stderr]")[0]

    await registry.remove("other")
    out = await one(skilled, "a", "ls /skills", persistent=True)
    assert "No such file" in out and "skills changed" in out, out
    # Installed again: still enabled in the agent's settings, so it shows again.
    await registry.install_archive(zip_of(good_files("other", description="Other v3.",
                                                     body="other v3"), top="other"))
    out = await one(skilled, "a", "cat /skills/other/SKILL.md", persistent=True)
    assert "other v3" in out and "skills changed" in out, out
    await registry.remove("other")
    await one(skilled, "a", "true", persistent=True)
    # Unchanged skills: the same shell (no note).
    out = await one(skilled, "a", "export AGAIN=1", persistent=True)
    out = await one(skilled, "a", "echo again=$AGAIN", persistent=True)
    # (The output says why, should a shell have been replaced: its note names the cause.
    # This failed once on PostgreSQL under load, unexplained: 'again=' was printed.)
    assert out.splitlines()[1] == "again=1" and "previous shell" not in out, out


async def test_without_a_backend_that_shows_them_the_agent_is_told(
        skilled: Runtime, systems: list[str]) -> None:
    await skilled.create_agent(name="p", tools=TOOLS, settings={
        **ALLOW, "skills": {"enabled": ["pdf-tools"]}, "sandbox": {"backend": "process"}})
    enqueue(call("skill_load", name="pdf-tools"), {"text": "ok"}, agent="p")
    (loaded,) = await outputs(skilled, "p")
    assert "Your shell commands do not see the skills' files" in systems[-1]
    assert "process backend" not in systems[-1] or "skill_read" in systems[-1]
    assert "read them with skill_read" in systems[-1]
    assert "/skills/pdf-tools/PATH" not in loaded
    out = await one(skilled, "p", "ls /skills")
    assert "No such file" in out
