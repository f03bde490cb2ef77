"""Sandbox backends against real processes: what a hostile command tries, and that it
fails. Every available backend runs every test; what the process backend cannot
contain (it is not isolated) is asserted as what it is.

In CI a missing bubblewrap fails the suite; gVisor is skipped with the reason when
it does not work here (an old runsc that cannot run ``ls`` still runs these tests,
which do not use ``ls``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import signal
import socket
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.conftest import WORKER_UID_BASE, eventually
from tests.sandbox.conftest import (
    GVisorDespiteOldStatx,
    all_gone,
    appeared,
    backend_or_skip,
    marked,
)

from agentd.errors import InvalidInput, ToolError
from agentd.sandbox import _gvisor, backends
from agentd.sandbox.backends import (
    BACKENDS,
    Backend,
    BubblewrapBackend,
    GVisorBackend,
    Limits,
    ProcessBackend,
    choose,
    detect,
    prepare_workspace,
)
from agentd.sandbox.cgroups import support as cgroup_support

ROOT = os.geteuid() == 0
SECRET = "agentd-test-secret-" + secrets.token_hex(8)
FAST = Limits(wall_s=20.0)




@pytest.fixture(autouse=True)
def _secret_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTD_TEST_SECRET", SECRET)


async def sh(backend: Backend, ws: Path, script: str, **kwargs: object
             ) -> backends.ExecResult:
    kwargs.setdefault("limits", FAST)
    return await backend.run(["sh", "-c", script], workspace=ws, **kwargs)  # type: ignore[arg-type]


# -- basics ----------------------------------------------------------------------------


async def test_exit_code_and_both_outputs(backend: Backend, ws: Path) -> None:
    result = await sh(backend, ws, "echo out; echo err >&2; exit 7")
    assert (result.exit_code, result.stdout, result.stderr) == (7, "out\n", "err\n")
    assert not result.truncated and not result.timed_out and result.killed is None
    assert result.duration_ms > 0


async def test_stdin_is_fed_even_when_larger_than_a_pipe(backend: Backend, ws: Path
                                                        ) -> None:
    small = await backend.run(["cat"], workspace=ws, stdin=b"hello\nworld", limits=FAST)
    assert small.stdout == "hello\nworld"
    big = await backend.run(["wc", "-c"], workspace=ws, stdin=b"x" * 1_000_000,
                            limits=FAST)
    assert big.stdout.strip() == "1000000"
    none = await backend.run(["cat"], workspace=ws, limits=FAST)  # /dev/null
    assert (none.exit_code, none.stdout) == (0, "")


async def test_invalid_utf8_is_replaced(backend: Backend, ws: Path) -> None:
    result = await sh(backend, ws, r"printf 'a\377b'")
    assert result.stdout == "a\ufffdb"


async def test_cwd_is_relative_to_the_workspace_and_not_kept(backend: Backend, ws: Path
                                                             ) -> None:
    (ws / "sub" / "deep").mkdir(parents=True)
    here = await backend.run(["pwd"], workspace=ws, cwd="sub/deep", limits=FAST)
    assert here.stdout.strip().endswith("/sub/deep")
    root = "/workspace" if backend.isolated else str(ws)
    assert here.stdout.strip() == f"{root}/sub/deep"
    await sh(backend, ws, "cd sub")
    again = await backend.run(["pwd"], workspace=ws, limits=FAST)
    assert again.stdout.strip() == root  # a run does not keep a cd (the shell does)
    for bad in ("/etc", "../x", "sub/../../x", "missing"):
        with pytest.raises(ToolError) as info:
            await backend.run(["pwd"], workspace=ws, cwd=bad, limits=FAST)
        assert info.value.code == "path_refused"


async def test_cwd_through_a_link_is_refused(backend: Backend, ws: Path) -> None:
    os.symlink("/etc", ws / "etc-link")
    with pytest.raises(ToolError) as info:
        await backend.run(["pwd"], workspace=ws, cwd="etc-link", limits=FAST)
    assert info.value.code == "path_refused"


async def test_bad_arguments_are_refused(backend: Backend, ws: Path) -> None:
    with pytest.raises(InvalidInput):
        await backend.run("ls -la", workspace=ws)
    with pytest.raises(InvalidInput):
        await backend.run([], workspace=ws)
    with pytest.raises(InvalidInput):
        await backend.run(["env"], workspace=ws, env={"A=B": "x"})
    with pytest.raises(InvalidInput):
        Limits(wall_s=0)


async def test_missing_program(backend: Backend, ws: Path) -> None:
    result = await backend.run(["agentd-no-such-program"], workspace=ws, limits=FAST)
    assert result.exit_code not in (0, None)
    assert "agentd-no-such-program" in result.stderr


# -- environment -----------------------------------------------------------------------


async def test_environment_is_exactly_the_fixed_one_plus_env(backend: Backend, ws: Path
                                                             ) -> None:
    assert os.environ["AGENTD_TEST_SECRET"] == SECRET
    result = await backend.run(
        ["python3", "-c", "import json, os; print(json.dumps(dict(os.environ)))"],
        workspace=ws, env={"EXTRA": "1", "TERM": "xterm"}, limits=FAST)
    home = "/workspace" if backend.isolated else str(ws)
    seen = json.loads(result.stdout)
    assert seen.pop("PWD", home) == home  # bubblewrap sets PWD to where it starts
    assert seen == {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": home,
                    "LANG": "C.UTF-8", "TERM": "xterm", "TMPDIR": "/tmp", "EXTRA": "1"}


async def test_daemon_environment_is_not_visible_through_proc(backend: Backend, ws: Path
                                                              ) -> None:
    script = ("cat /proc/1/environ /proc/$PPID/environ; "
              "for f in /proc/[0-9]*/environ; do cat $f; done; true")
    result = await sh(backend, ws, script)
    if backend.isolated or ROOT:
        assert SECRET not in result.stdout + result.stderr
    else:  # the process backend as the daemon's own user: documented, not contained
        assert SECRET in result.stdout


# -- filesystem ------------------------------------------------------------------------


@pytest.fixture
def outside() -> Iterator[Path]:
    """A world-readable secret file outside the workspace, in a directory anyone may
    enter (so only isolation, not permissions, keeps it from the sandbox)."""
    directory = Path(tempfile.mkdtemp(prefix="agentd-outside-"))
    directory.chmod(0o755)
    secret = directory / "secret.txt"
    secret.write_text(f"{SECRET}\n")
    secret.chmod(0o644)
    private = directory / "private.txt"
    private.write_text(f"{SECRET}\n")
    private.chmod(0o600)
    yield directory
    for path in (secret, private):
        path.unlink(missing_ok=True)
    directory.rmdir()


async def test_files_outside_the_workspace_are_not_readable(backend: Backend, ws: Path,
                                                            outside: Path) -> None:
    result = await sh(backend, ws, f"cat {outside}/secret.txt; cat {outside}/private.txt")
    if backend.isolated:
        assert SECRET not in result.stdout
        assert "No such file" in result.stderr
    else:  # not isolated: a world-readable host file is readable, unless it is in
        # the host's /tmp (where this one is), which a root daemon covers with a
        # private one (the host read-only: nothing of an agent's uid outlives it)
        sealed = ROOT and ProcessBackend.host_sealed() is None
        assert result.stdout.count(SECRET) == (0 if sealed else 1 if ROOT else 2)


async def test_etc_shadow_is_not_readable(backend: Backend, ws: Path) -> None:
    result = await sh(backend, ws, "cat /etc/shadow; cat /etc/gshadow")
    assert result.exit_code != 0 and "root:" not in result.stdout
    if backend.isolated:
        listing = await sh(backend, ws, "test -e /etc/shadow && echo present; "
                                        "test -e /root && echo root; "
                                        "test -e /home && echo home; "
                                        "test -e /var && echo var; "
                                        f"test -e {ws} && echo daemon-home; true")
        assert listing.stdout == ""


async def test_writes_outside_the_workspace_fail(backend: Backend, ws: Path) -> None:
    name = f"agentd-test-{secrets.token_hex(4)}"
    targets = [f"/usr/{name}", f"/etc/{name}", f"/{name}", f"/usr/bin/{name}"]
    script = "; ".join(f"(echo x > {t}) 2>/dev/null && echo wrote {t}" for t in targets)
    result = await sh(backend, ws, script + "; true")
    if backend.isolated or ROOT:
        assert result.stdout == ""
    for target in targets:
        assert not Path(target).exists()
    tmp = await sh(backend, ws, f"echo x > /tmp/{name} && cat /tmp/{name}")
    assert tmp.stdout == "x\n"  # /tmp works...
    host_tmp = Path(tempfile.gettempdir()) / name
    # ...and is the sandbox's own (the process backend's too, under root: the host
    # read-only, a private /tmp)
    if backend.isolated or (ROOT and ProcessBackend.host_sealed() is None):
        assert not host_tmp.exists()
    else:
        assert host_tmp.exists()
        host_tmp.unlink()


async def test_files_written_in_the_workspace_are_the_daemons_to_use(
        backend: Backend, ws: Path) -> None:
    result = await sh(backend, ws, "mkdir -p d && echo hello > d/f.txt && id -u")
    assert result.exit_code == 0, result.stderr
    written = ws / "d" / "f.txt"
    assert written.read_text() == "hello\n"
    with written.open("a") as handle:  # the daemon can change it...
        handle.write("more\n")
    (ws / "d" / "g.txt").write_text("from the daemon\n")
    if ROOT:  # ...and it belongs to the sandbox's uid, not root
        assert written.stat().st_uid == 65534
        assert result.stdout.strip() == "65534"
    again = await sh(backend, ws, "cat d/f.txt && echo edit >> d/f.txt")
    assert again.stdout == "hello\nmore\n" and again.exit_code == 0


# -- network ---------------------------------------------------------------------------


@pytest.fixture
def listener() -> Iterator[int]:
    """A TCP port on the host's loopback that accepts connections."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield sock.getsockname()[1]


CONNECT = ("import socket, sys\n"
           "try:\n"
           "    socket.create_connection(('127.0.0.1', int(sys.argv[1])), timeout=5)\n"
           "    print('connected')\n"
           "except OSError as exc:\n"
           "    print('refused', exc)\n")


async def test_network_is_off_unless_granted(backend: Backend, ws: Path, listener: int
                                             ) -> None:
    """Without a grant, no backend reaches the host's loopback (the process backend
    too, where the kernel gives it a network namespace); ``network=True`` (the host's
    network) is refused: a grant goes through the egress proxy (test_egress.py)."""
    off = await backend.run(["python3", "-c", CONNECT, str(listener)], workspace=ws,
                            limits=FAST)
    if backend.isolated or ProcessBackend.network_confinement() is None:
        assert off.stdout.startswith("refused"), off
    else:  # no network namespace here: the process backend shares the host's network
        assert off.stdout == "connected\n"
    with pytest.raises(ToolError) as caught:
        await backend.run(["true"], workspace=ws, network=True, limits=FAST)
    assert caught.value.code == "network_denied"


# -- limits ----------------------------------------------------------------------------


async def test_rlimits_are_visible_inside(backend: Backend, ws: Path) -> None:
    limits = Limits(cpu_s=17, memory_mb=900, processes=77, file_size_mb=33, wall_s=20)
    result = await backend.run(["bash", "-c", "ulimit -t -v -f -u -c"], workspace=ws,
                               limits=limits)
    values = [line.split()[-1] for line in result.stdout.splitlines()]
    assert values == ["17", str(900 * 1024), str(33 * 1024), "77", "0"], result


def _counted_alone(backend: Backend) -> Backend:
    """``backend`` running as a uid of this xdist worker's own (when root): the process
    limit (RLIMIT_NPROC) counts every process of the uid, and ``nobody``'s are every
    other worker's sandboxes too (another worker's fork bomb made ``timeout`` itself
    fail to fork here)."""
    uid = WORKER_UID_BASE + 19_999  # the end of the range: no test's store gives it
    return backend.as_user((uid, uid))


async def test_process_limit_stops_forking(backend: Backend, ws: Path) -> None:
    backend = _counted_alone(backend)
    marker = secrets.token_hex(8)
    script = ("import os, time\n"
              "n = 0\n"
              "try:\n"
              "    while n < 1000:\n"
              "        if os.fork() == 0:\n"
              "            time.sleep(60)\n"
              "            os._exit(0)\n"
              "        n += 1\n"
              "except OSError as exc:\n"
              "    print(n, exc.errno)\n")
    result = await backend.run(["python3", "-c", script], workspace=ws,
                               env={"AGENTD_MARK": marker},
                               limits=Limits(processes=40, wall_s=20))
    forked, errno = map(int, result.stdout.split())
    assert forked < 40 and errno == 11, result  # EAGAIN
    await all_gone(marker)  # what it forked did not outlive it


async def test_fork_bomb_is_contained(backend: Backend, ws: Path) -> None:
    backend = _counted_alone(backend)
    marker = secrets.token_hex(8)
    # (the sleep outlasts the wall limit: only the limit ends the command)
    result = await backend.run(["bash", "-c", ":(){ :|:& };:; sleep 1000"], workspace=ws,
                               env={"AGENTD_MARK": marker},
                               limits=Limits(processes=64, wall_s=2))
    assert result.timed_out and result.killed == "wall_time" and result.exit_code is None
    await all_gone(marker)
    after = await backend.run(["echo", "alive"], workspace=ws, limits=FAST)
    assert after.stdout == "alive\n"  # the machine (and the sandbox) still work


async def test_memory_hog_fails(backend: Backend, ws: Path) -> None:
    result = await backend.run(["python3", "-c", "x = bytearray(4 * 1024 ** 3)"],
                               workspace=ws, limits=FAST)
    assert result.exit_code != 0 and "MemoryError" in result.stderr
    piped = await sh(backend, ws, "head -c 5G /dev/zero | tail",
                     limits=Limits(memory_mb=256, wall_s=20))
    assert piped.exit_code != 0 and piped.killed is None
    assert "memory" in piped.stderr.lower()


async def test_file_size_limit(backend: Backend, ws: Path) -> None:
    result = await backend.run(["sh", "-c", "exec head -c 3000000 /dev/zero > big"],
                               workspace=ws, limits=Limits(file_size_mb=1, wall_s=20))
    assert result.killed == "file_size" and result.exit_code == 128 + signal.SIGXFSZ
    assert (ws / "big").stat().st_size == 1024 * 1024


async def test_cpu_limit(backend: Backend, ws: Path) -> None:
    result = await backend.run(["python3", "-c", "while True: pass"], workspace=ws,
                               limits=Limits(cpu_s=1, wall_s=4))
    if isinstance(backend, GVisorBackend):  # runsc does not enforce RLIMIT_CPU:
        assert result.killed == "wall_time"  # the wall clock still ends it
        return
    assert result.killed == "cpu_time" and result.exit_code == 128 + signal.SIGXCPU


async def test_endless_output_is_truncated_and_killed(backend: Backend, ws: Path) -> None:
    result = await backend.run(["yes"], workspace=ws,
                               limits=Limits(output_bytes=10_000, wall_s=20))
    assert result.truncated and result.killed == "output" and result.exit_code is None
    assert not result.timed_out
    assert len(result.stdout) + len(result.stderr) <= 10_000
    assert result.stdout.startswith("y\ny\n")


async def test_stderr_is_kept_when_stdout_floods(backend: Backend, ws: Path) -> None:
    result = await sh(backend, ws, "head -c 30000 /dev/zero | tr '\\0' y; echo oops >&2",
                      limits=Limits(output_bytes=10_000, wall_s=20))
    assert result.truncated and result.stderr == "oops\n" and result.exit_code == 0


async def test_wall_time_kills_everything(backend: Backend, ws: Path) -> None:
    marker = secrets.token_hex(8)
    result = await sh(backend, ws, "sleep 1000 & sleep 1000", env={"AGENTD_MARK": marker},
                      limits=Limits(wall_s=1.5))
    assert result.timed_out and result.killed == "wall_time" and result.exit_code is None
    await all_gone(marker)


async def test_background_child_does_not_outlive_the_command(backend: Backend, ws: Path
                                                             ) -> None:
    marker = secrets.token_hex(8)
    result = await sh(backend, ws, "sleep 1000 & echo started",
                      env={"AGENTD_MARK": marker}, limits=Limits(wall_s=30))
    assert result.stdout == "started\n" and result.exit_code == 0
    assert not result.timed_out  # it did not wait for the background child
    await all_gone(marker)


async def test_cancelling_a_run_kills_the_sandbox(backend: Backend, ws: Path) -> None:
    marker = secrets.token_hex(8)
    task = asyncio.ensure_future(sh(backend, ws, "sleep 1000", env={"AGENTD_MARK": marker},
                                    limits=Limits(wall_s=100)))
    await appeared(marker)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await all_gone(marker)


async def test_no_capabilities_and_no_new_privileges(backend: Backend, ws: Path) -> None:
    result = await sh(backend, ws, "grep -E '^(CapEff|CapPrm|NoNewPrivs)' /proc/self/status")
    fields = dict(line.split(":\t") for line in result.stdout.splitlines())
    assert int(fields["CapEff"], 16) == 0 and int(fields["CapPrm"], 16) == 0
    if "NoNewPrivs" in fields:  # gVisor's /proc does not show it (its spec sets it)
        assert fields["NoNewPrivs"] == "1"
    else:
        assert isinstance(backend, GVisorBackend)


SYSCALLS = ("import ctypes, os\n"
            "libc = ctypes.CDLL(None, use_errno=True)\n"
            "numbers = {'x86_64': (250, 321, 298, 323, 425), 'aarch64': (219, 280, 241, 282, "
            "425)}[os.uname().machine]\n"
            "for nr in numbers:\n"
            "    print(libc.syscall(nr, 0, 0, 0, 0, 0), ctypes.get_errno())\n")


@pytest.mark.skipif(os.uname().machine not in ("x86_64", "aarch64"),
                    reason="no seccomp filter for this architecture")
async def test_risky_kernel_interfaces_are_refused(backend: Backend, ws: Path) -> None:
    """keyctl, bpf, perf_event_open, userfaultfd, io_uring_setup: ENOSYS."""
    if isinstance(backend, GVisorBackend):
        pytest.skip("gVisor serves syscalls in its own kernel: none reaches the host's")
    result = await backend.run(["python3", "-c", SYSCALLS], workspace=ws, limits=FAST)
    assert result.stdout.splitlines() == ["-1 38"] * 5, result


async def test_the_daemon_cannot_be_killed_from_inside(backend: Backend, ws: Path) -> None:
    result = await sh(backend, ws, f"kill -9 {os.getpid()}; echo status=$?")
    if backend.isolated or ROOT:
        assert "status=1" in result.stdout
    # (were it not contained, this test would not be here to finish)


def test_sandbox_dies_with_the_daemon(backend: Backend, ws: Path, tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """SIGKILL a process that runs a sandbox: every process of the sandbox ends."""
    marker = secrets.token_hex(8)
    # The dead daemon's gVisor bundle goes to a temp dir of this test's own: the probes
    # of tests running beside it (xdist workers) sweep the shared one.
    private_tmp = tmp_path / "tmp"
    private_tmp.mkdir()
    lenient = isinstance(backend, GVisorDespiteOldStatx)
    code = (
        "import asyncio, sys\n"
        "from pathlib import Path\n"
        "from agentd.sandbox import backends\n"
        f"cls = backends.{type(backend).__name__ if not lenient else 'GVisorBackend'}\n"
        + ("cls._probe = classmethod(lambda c: None)\n" if lenient else "")
        + "async def main():\n"
        "    print('go', flush=True)\n"
        "    await cls().run(['sh', '-c', 'sleep 1000 & sleep 1000'], workspace=Path("
        f"{str(ws)!r}), env={{'AGENTD_MARK': {marker!r}}},\n"
        "                    limits=backends.Limits(wall_s=100))\n"
        "asyncio.run(main())\n")
    daemon = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                              env={**os.environ, "TMPDIR": str(private_tmp)})
    try:
        assert daemon.stdout is not None and daemon.stdout.readline() == b"go\n"
        # The sandbox runs: both sleeps, not only the launcher above them (a daemon
        # killed while the process backend's coreutils timeout forks the command is
        # the next test's case). gVisor's sleeps live inside its sentry.
        asyncio.run(appeared(marker, owner=daemon.pid,
                             running="" if isinstance(backend, GVisorBackend) else "sleep",
                             count=2))
    finally:
        daemon.kill()
        daemon.wait()
    asyncio.run(all_gone(marker, owner=daemon.pid))
    if isinstance(backend, GVisorBackend):  # its bundle is left: the next probe's sweep
        monkeypatch.setattr(tempfile, "tempdir", str(private_tmp))
        left = list(Path(tempfile.gettempdir()).glob(f"agentd-gvisor-{daemon.pid}-*"))
        assert left and set(_gvisor.sweep()) >= set(left)
        assert not any(path.exists() for path in left)


def test_what_escapes_the_daemons_death_ends_at_the_next_start(ws: Path) -> None:
    """The process backend's holes (a process that left its process group, a daemon
    killed as coreutils' timeout forks the command) outlive the daemon's death; the
    next start kills what the dead daemon's sandbox cgroups still hold."""
    backend_or_skip(ProcessBackend)
    if not cgroup_support().usable:
        pytest.skip(f"no cgroup per sandbox here: {cgroup_support().reason}")
    marker = secrets.token_hex(8)
    code = (
        "import asyncio\n"
        "from pathlib import Path\n"
        "from agentd.sandbox import backends\n"
        "async def main():\n"
        "    print('go', flush=True)\n"
        "    await backends.ProcessBackend().run(\n"
        "        ['sh', '-c', 'setsid sleep 1000 & sleep 1000'],\n"
        f"        workspace=Path({str(ws)!r}), env={{'AGENTD_MARK': {marker!r}}},\n"
        "        limits=backends.Limits(wall_s=100))\n"
        "asyncio.run(main())\n")
    daemon = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    try:
        assert daemon.stdout is not None and daemon.stdout.readline() == b"go\n"
        asyncio.run(appeared(marker, running="sleep", count=2))
    finally:
        daemon.kill()
        daemon.wait()
    # The sleep in the command's process group dies with the daemon's timeout; the
    # one that left it is still there, for as long as nothing ends it.
    asyncio.run(eventually(lambda: len(marked(marker)) == 1, what="one sleep left"))
    # A start (its cgroup probe, as the daemon's sandbox manager runs it) sweeps.
    started = subprocess.run(
        [sys.executable, "-c", "from agentd.sandbox.cgroups import support; support()"],
        capture_output=True, text=True, timeout=60, check=True)
    assert "killed 1 process(es)" in started.stderr, started.stderr
    asyncio.run(all_gone(marker))


# -- choosing --------------------------------------------------------------------------


def test_detect_lists_every_backend_strongest_first() -> None:
    found = detect()
    assert list(found) == ["remote", "gvisor", "bubblewrap", "process"]
    assert found["process"] is None
    assert found["remote"] == "no remote sandbox is configured"
    assert {cls.name for cls in BACKENDS} == set(found)
    if os.environ.get("CI"):
        assert found["bubblewrap"] is None


def test_choose(caplog: pytest.LogCaptureFixture) -> None:
    found = detect()
    best = next(name for name, reason in found.items() if reason is None)
    assert choose().name == best == choose("auto").name
    with pytest.raises(InvalidInput) as unknown:
        choose("docker")
    assert "bubblewrap" in unknown.value.message and "process" in unknown.value.message
    with pytest.raises(InvalidInput) as remote:
        choose("remote")
    assert "no remote sandbox is configured" in remote.value.message
    if found["gvisor"] is not None:
        with pytest.raises(InvalidInput) as gvisor:
            choose("gvisor")
        assert found["gvisor"] in gvisor.value.message
    backends._warned.clear()
    with caplog.at_level(logging.WARNING, logger="agentd.sandbox.backends"):
        assert isinstance(choose("process"), ProcessBackend)
        choose("process")
    warnings = [r for r in caplog.records if "NOT isolated" in r.getMessage()]
    assert len(warnings) == 1


def test_unavailable_reports_why() -> None:
    class Missing(BubblewrapBackend):
        @classmethod
        def _probe(cls) -> str | None:
            return "bwrap not found on PATH"

    assert Missing.unavailable() == "bwrap not found on PATH"
    assert ProcessBackend.unavailable() is None
    reason = GVisorBackend.unavailable()
    assert reason is None or (isinstance(reason, str) and reason)
    if reason is not None and "AT_NO_AUTOMOUNT" in reason:
        assert reason == _gvisor.OLD_STATX.format(version=_gvisor._version())


@pytest.mark.skipif(not ROOT, reason="the workspace is only given away under root")
def test_prepare_workspace_gives_the_tree_and_nothing_outside(tmp_path: Path,
                                                              outside: Path) -> None:
    workspace = tmp_path / "w"
    (workspace / "a" / "b").mkdir(parents=True)
    (workspace / "a" / "b" / "f").write_text("x")
    os.link(outside / "secret.txt", workspace / "hardlink")
    os.symlink(outside, workspace / "a" / "link")
    prepare_workspace(workspace)
    for path in (workspace, workspace / "a", workspace / "a" / "b",
                 workspace / "a" / "b" / "f"):
        assert path.stat().st_uid == 65534, path
    assert (outside / "secret.txt").stat().st_uid == 0  # the hard link was left alone
    assert outside.stat().st_uid == 0  # the link was not followed
    assert os.lstat(workspace / "a" / "link").st_uid == 0
    assert stat.S_IMODE((outside / "private.txt").stat().st_mode) == 0o600
