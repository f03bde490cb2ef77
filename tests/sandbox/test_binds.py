"""Read-only folders in a sandbox (``binds``: how an agent's skills show at
``/skills/<name>``), against real bubblewrap: visible and readable, never writable,
only what is bound, no descriptor or link that leads back to the host, bad paths
refused; backends that cannot show them refuse them; a persistent shell made with
other binds is replaced, saying so.

Under a root daemon (as CI runs) the sandbox's uid cannot pass the test's ``0700``
temporary folder: the folders are reached the way the daemon's home is in production.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from tests.conftest import worker_uid
from tests.sandbox.conftest import backend_or_skip

from agentd.errors import ToolError
from agentd.sandbox import _gvisor
from agentd.sandbox.backends import (
    Backend,
    BubblewrapBackend,
    GVisorBackend,
    Limits,
    ProcessBackend,
    RemoteBackend,
)
from agentd.sandbox.binds import ReadOnlyBind, check_target, signature
from agentd.sandbox.shell import PersistentShell, ShellPool

AGENT = worker_uid(2)


def published(root: Path, name: str, body: str) -> Path:
    """A skill-like folder as the registry publishes one (0755 folders, 0644 files)
    under a parent closed to every other uid."""
    root.mkdir(mode=0o700, exist_ok=True)
    store = root / "store"
    store.mkdir(mode=0o755, exist_ok=True)
    folder = store / name
    (folder / "scripts").mkdir(parents=True)
    (folder / "SKILL.md").write_text(body)
    (folder / "scripts" / "run.sh").write_text("#!/bin/sh\necho ran\n")
    for path in (folder, folder / "scripts"):
        path.chmod(0o755)
    (folder / "SKILL.md").chmod(0o644)
    (folder / "scripts" / "run.sh").chmod(0o755)
    return folder


@pytest.fixture
def bwrap() -> Backend:
    return backend_or_skip(BubblewrapBackend)


@pytest.fixture(params=[None, AGENT], ids=["nobody", "agent-uid"])
def sandboxed(request: pytest.FixtureRequest, bwrap: Backend) -> Backend:
    return bwrap.as_user(request.param)


async def sh(backend: Backend, workspace: Path, script: str,
             binds: list[ReadOnlyBind]) -> tuple[int | None, str, str]:
    result = await backend.run(["sh", "-c", script], workspace=workspace, binds=binds,
                               limits=Limits(wall_s=30))
    return result.exit_code, result.stdout, result.stderr


async def test_a_bound_folder_is_readable_and_not_writable(
        sandboxed: Backend, workspace: Path, tmp_path: Path) -> None:
    folder = published(tmp_path / "home", "pdf-tools", "the skill's body\n")
    binds = [ReadOnlyBind(source=folder, target="/skills/pdf-tools", tag="v1")]
    code, out, err = await sh(sandboxed, workspace,
                              "cat /skills/pdf-tools/SKILL.md && "
                              "/skills/pdf-tools/scripts/run.sh && ls /skills", binds)
    assert code == 0, err
    assert out == "the skill's body\nran\npdf-tools\n"
    for attempt in ("echo x > /skills/pdf-tools/SKILL.md",
                    "touch /skills/pdf-tools/new",
                    "rm -f /skills/pdf-tools/SKILL.md",
                    "mv /skills/pdf-tools/SKILL.md /skills/pdf-tools/moved",
                    "chmod 777 /skills/pdf-tools/SKILL.md",
                    "mkdir /skills/other",
                    "mkdir /skills/pdf-tools/scripts/more",
                    "ln -s /etc/passwd /skills/pdf-tools/link"):
        code, _, err = await sh(sandboxed, workspace, attempt, binds)
        # The mount is read-only (not merely files the sandbox's uid does not own).
        assert code != 0 and "Read-only file system" in err, (attempt, err)
    # (Appending to a file it does not own is refused earlier: permission denied.)
    code, _, err = await sh(sandboxed, workspace, "echo x >> /skills/pdf-tools/SKILL.md",
                            binds)
    assert code != 0
    code, out, err = await sh(sandboxed, workspace,
                              "mount -o remount,rw,bind /skills/pdf-tools; "
                              "grep ' /skills/pdf-tools ' /proc/self/mountinfo", binds)
    assert " ro," in out, out
    assert (folder / "SKILL.md").read_text() == "the skill's body\n"
    assert sorted(p.name for p in folder.iterdir()) == ["SKILL.md", "scripts"]
    assert os.stat(folder / "SKILL.md").st_mode & 0o777 == 0o644


async def test_only_what_is_bound_shows(sandboxed: Backend, workspace: Path,
                                        tmp_path: Path) -> None:
    mine = published(tmp_path / "home", "mine", "mine\n")
    published(tmp_path / "home", "theirs", "theirs: secret\n")
    code, out, err = await sh(sandboxed, workspace,
                              "ls /skills; cat /skills/theirs/SKILL.md; "
                              "ls /skills/mine/..; cat /skills/mine/../theirs/SKILL.md; "
                              "find / -path /proc -prune -o -name SKILL.md -print "
                              "2>/dev/null; grep -rs 'theirs: secret' /skills /tmp "
                              "/workspace /etc /mnt /media /srv /run 2>/dev/null; true",
                              [ReadOnlyBind(source=mine, target="/skills/mine")])
    assert code == 0, err
    assert "secret" not in out and "secret" not in err
    assert out.splitlines() == ["mine", "mine", "/skills/mine/SKILL.md"]
    # Without binds there is no /skills at all.
    code, out, err = await sh(sandboxed, workspace, "ls /skills", [])
    assert code != 0 and "No such file" in err


async def test_no_descriptor_of_the_host_reaches_the_sandbox(
        sandboxed: Backend, workspace: Path, tmp_path: Path) -> None:
    """The folder is bound from a descriptor the daemon opened; none stays open in
    the sandbox (``openat(fd, "..")`` would walk into the registry)."""
    folder = published(tmp_path / "home", "pdf-tools", "body\n")
    published(tmp_path / "home", "other", "other: secret\n")
    script = ("for fd in /proc/self/fd/*; do readlink $fd; done; "
              "for n in 3 4 5 6 7 8 9 10 11 12; do "
              "cat /proc/self/fd/$n/../other/SKILL.md 2>/dev/null; done; true")
    code, out, _ = await sh(sandboxed, workspace, script,
                            [ReadOnlyBind(source=folder, target="/skills/pdf-tools")])
    assert code == 0
    assert "secret" not in out
    assert str(tmp_path) not in "\n".join(
        line for line in out.splitlines() if not line.startswith("/proc/"))


async def test_links_do_not_reach_the_host(sandboxed: Backend, workspace: Path,
                                           tmp_path: Path) -> None:
    secret = tmp_path / "host-secret.txt"
    secret.write_text("host secret\n")
    secret.chmod(0o644)
    folder = published(tmp_path / "home", "pdf-tools", "body\n")
    # A link planted inside a published folder (the registry refuses them; this is
    # what would happen if one got there): it resolves inside the sandbox, where the
    # host's file does not exist.
    (folder / "leak").symlink_to(secret)
    (folder / "up").symlink_to("../../../")
    binds = [ReadOnlyBind(source=folder, target="/skills/pdf-tools")]
    code, out, err = await sh(sandboxed, workspace,
                              "cat /skills/pdf-tools/leak; ls /skills/pdf-tools/up/; "
                              "cat /skills/pdf-tools/up/host-secret.txt; true", binds)
    assert code == 0 and "No such file" in err
    assert "host secret" not in out and "host secret" not in err
    # A folder that is itself a link is refused, not followed.
    link = tmp_path / "home" / "store" / "swapped"
    link.symlink_to(tmp_path)
    with pytest.raises(ToolError) as caught:
        await sh(sandboxed, workspace, "ls /skills/x",
                 [ReadOnlyBind(source=link, target="/skills/x")])
    assert caught.value.code == "sandbox_bind_refused"
    with pytest.raises(ToolError) as caught:
        await sh(sandboxed, workspace, "ls /skills/x",
                 [ReadOnlyBind(source=secret, target="/skills/x")])
    assert caught.value.code == "sandbox_bind_refused"
    with pytest.raises(ToolError) as caught:
        await sh(sandboxed, workspace, "ls /skills/x",
                 [ReadOnlyBind(source=tmp_path / "missing", target="/skills/x")])
    assert caught.value.code == "sandbox_bind_refused"


@pytest.mark.parametrize("target", [
    "skills/x", "/skills", "/skills/", "/skills/../etc", "/skills/a/../../etc",
    "/skills/./x", "/skills//x", "/workspace/x", "/usr/bin", "/etc/passwd", "/proc/x",
    "/tmp/x", "/skills/.hidden", "/skills/x\n", "/skills/a b", "/skills/" + "a" * 200])
async def test_bad_sandbox_paths_are_refused(bwrap: Backend, workspace: Path,
                                             tmp_path: Path, target: str) -> None:
    folder = published(tmp_path / "home", "pdf-tools", "body\n")
    with pytest.raises(ToolError) as caught:
        await bwrap.run(["true"], workspace=workspace,
                        binds=[ReadOnlyBind(source=folder, target=target)])
    assert caught.value.code == "sandbox_bind_refused"
    with pytest.raises(ToolError):
        check_target(target)


async def test_overlapping_or_repeated_binds_are_refused(bwrap: Backend, workspace: Path,
                                                         tmp_path: Path) -> None:
    folder = published(tmp_path / "home", "pdf-tools", "body\n")
    for targets in (["/skills/a", "/skills/a"], ["/skills/a", "/skills/a/b"]):
        with pytest.raises(ToolError) as caught:
            await bwrap.run(["true"], workspace=workspace, binds=[
                ReadOnlyBind(source=folder, target=t) for t in targets])
        assert caught.value.code == "sandbox_bind_refused"


@pytest.mark.parametrize("cls", [ProcessBackend])
async def test_backends_that_cannot_show_folders_refuse_them(
        cls: type[Backend], workspace: Path, tmp_path: Path) -> None:
    backend = backend_or_skip(cls)
    folder = published(tmp_path / "home", "pdf-tools", "body\n")
    assert backend.binds_unsupported()
    with pytest.raises(ToolError) as caught:
        await backend.run(["true"], workspace=workspace,
                          binds=[ReadOnlyBind(source=folder, target="/skills/pdf-tools")])
    assert caught.value.code == "sandbox_unsupported"
    assert "process sandbox cannot show folders" in caught.value.message
    # Without binds it runs as before.
    assert (await backend.run(["true"], workspace=workspace)).exit_code == 0


def test_which_backends_show_folders() -> None:
    assert BubblewrapBackend.binds_unsupported() is None
    assert GVisorBackend.binds_unsupported() is None
    assert ProcessBackend.binds_unsupported() is not None
    assert RemoteBackend.binds_unsupported() is not None


def test_gvisor_mounts_the_folders_read_only(tmp_path: Path, workspace: Path) -> None:
    """gVisor (not installed everywhere): the bundle's config mounts each folder
    read-only at its path (runsc applies the OCI mounts)."""
    folder = published(tmp_path / "home", "pdf-tools", "body\n")
    bundle = _gvisor.build(["true"], workspace=workspace, env={}, chdir="/workspace",
                           limits=Limits(), shown=[(str(folder), "/skills/pdf-tools")])
    try:
        config = json.loads((bundle.directory / "config.json").read_text())
    finally:
        bundle.remove_sync()
    mounts = {m["destination"]: m for m in config["mounts"]}
    assert mounts["/skills/pdf-tools"]["source"] == str(folder)
    assert "ro" in mounts["/skills/pdf-tools"]["options"]
    assert "rw" in mounts["/workspace"]["options"]


async def test_a_persistent_shell_with_other_binds_is_replaced(
        bwrap: Backend, workspace: Path, tmp_path: Path) -> None:
    one = published(tmp_path / "home", "one", "one\n")
    two = published(tmp_path / "home", "two", "two\n")
    pool = ShellPool()
    current: list[ReadOnlyBind] = [ReadOnlyBind(source=one, target="/skills/one",
                                                tag="1")]

    async def get() -> tuple[str, str]:
        binds = list(current)

        async def make() -> PersistentShell:
            return await bwrap.shell(workspace=workspace, binds=binds,
                                     limits=Limits(wall_s=30))

        shell = await pool.get("k", make, tag=signature(binds), why=" (other folders)")
        result = await shell.run("cd /skills 2>/dev/null || cd /; ls; "
                                 "export KEPT=${KEPT:-$RANDOM$RANDOM$RANDOM}; echo $KEPT")
        return result.stdout, result.stderr

    try:
        out, err = await get()
        assert out.splitlines()[0] == "one" and err == ""
        first_pid = out.splitlines()[-1]
        out, err = await get()  # same binds: the same shell, its variables kept
        assert out.splitlines()[-1] == first_pid and err == ""
        current.append(ReadOnlyBind(source=two, target="/skills/two", tag="1"))
        out, err = await get()
        assert out.splitlines()[:2] == ["one", "two"]
        assert "previous shell was closed (other folders)" in err
        assert out.splitlines()[-1] != first_pid
        current[:] = [ReadOnlyBind(source=two, target="/skills/two", tag="2")]
        out, err = await get()  # a new version of a folder: a new shell too
        assert out.splitlines()[0] == "two" and "previous shell was closed" in err
        current.clear()
        out, err = await get()
        assert "one" not in out and "two" not in out and "previous shell" in err
    finally:
        await pool.close_all()


_AS_DAEMON_USER = r'''
import asyncio, json, os, sys
from pathlib import Path
from agentd.errors import ToolError
from agentd.sandbox.backends import BubblewrapBackend, Limits
from agentd.sandbox.binds import ReadOnlyBind

root = Path(sys.argv[1])
folder = root / "home" / "store" / "pdf-tools"
(folder / "scripts").mkdir(parents=True)
(root / "home").chmod(0o700)
(folder / "SKILL.md").write_text("body of the skill\n")
(root / "home" / "store" / "other").mkdir()
(root / "home" / "store" / "other" / "SKILL.md").write_text("other: secret\n")
workspace = root / "ws"
workspace.mkdir(mode=0o700)
(root / "home" / "store" / "link").symlink_to(folder)


async def main():
    backend = BubblewrapBackend()
    binds = [ReadOnlyBind(source=folder, target="/skills/pdf-tools")]
    found = {}
    result = await backend.run(["sh", "-c",
        "cat /skills/pdf-tools/SKILL.md; ls /skills; "
        "for n in 3 4 5 6 7 8 9; do cat /proc/self/fd/$n/../other/SKILL.md; done; "
        "echo x > /skills/pdf-tools/SKILL.md; touch /skills/pdf-tools/new; true"],
        workspace=workspace, binds=binds, limits=Limits(wall_s=30))
    found["out"], found["err"] = result.stdout, result.stderr
    try:
        await backend.run(["true"], workspace=workspace, binds=[
            ReadOnlyBind(source=root / "home" / "store" / "link", target="/skills/x")])
        found["link"] = "followed"
    except ToolError as exc:
        found["link"] = exc.code
    found["files"] = sorted(p.name for p in folder.iterdir())
    print(json.dumps(found))


asyncio.run(main())
'''


def test_a_daemon_that_is_not_root_binds_the_open_folder() -> None:
    """The other way bubblewrap is given the folder (a daemon that is not root:
    ``--ro-bind-fd`` of the descriptor it opened), run for real as ``nobody`` with
    a Python of this version that ``nobody`` may run."""
    if os.geteuid() != 0:
        pytest.skip("switching to another user needs root")
    backend_or_skip(BubblewrapBackend)
    python = f"/usr/bin/python{sys.version_info[0]}.{sys.version_info[1]}"
    site = next((p for p in sys.path if p.endswith("site-packages")), None)
    if not os.path.exists(python) or site is None:
        pytest.skip(f"no {python} for another user to run")
    src = str(Path(__file__).resolve().parents[2] / "src")
    # (pytest's temporary folders are under one closed to other users)
    with tempfile.TemporaryDirectory(prefix="agentd-nonroot-") as tmp:
        work = Path(tmp) / "nobody"
        work.mkdir()
        os.chmod(tmp, 0o755)
        os.chown(work, 65534, 65534)
        _as_nobody(python, src, site, work)


def _as_nobody(python: str, src: str, site: str, work: Path) -> None:

    def drop() -> None:
        os.setgroups([])
        os.setresgid(65534, 65534, 65534)
        os.setresuid(65534, 65534, 65534)

    done = subprocess.run([python, "-c", _AS_DAEMON_USER, str(work)], capture_output=True,
                          text=True, timeout=120, preexec_fn=drop, cwd=str(work),
                          env={"PATH": "/usr/bin:/bin", "HOME": str(work),
                               "PYTHONPATH": f"{src}:{site}"}, check=False)
    if done.returncode != 0 and "ModuleNotFoundError" in done.stderr:
        pytest.skip(f"{python} cannot import agentd's dependencies: {done.stderr[-200:]}")
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    assert found["out"].startswith("body of the skill\npdf-tools\n"), found
    assert "secret" not in found["out"]
    assert found["err"].count("Read-only file system") == 2, found
    assert found["link"] == "sandbox_bind_refused"
    assert found["files"] == ["SKILL.md", "scripts"]
