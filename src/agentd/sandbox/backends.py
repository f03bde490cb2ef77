"""Sandbox backends: where a tool's command runs, so that a hostile model cannot
reach the host.

::

    Backend (ABC)            name        strength  isolated
    ├── RemoteBackend        remote            40  yes  interface only (Firecracker, E2B)
    ├── GVisorBackend        gvisor            30  yes  runsc: a user-space kernel
    ├── BubblewrapBackend    bubblewrap        20  yes  namespaces (the Linux default)
    └── ProcessBackend       process           10  no   limits and a clean environment

What every backend guarantees: the environment is exactly ``PATH``, ``HOME``,
``LANG``, ``TERM``, ``TMPDIR`` plus what the caller gives (nothing of the daemon's:
no API keys); rlimits for CPU, address space, file size, processes and core dumps; no
capabilities and no privilege gain through set-uid programs; when the daemon is root,
the command runs as the backend's ``user`` (an agent's own uid and gid:
:meth:`Backend.as_user`), or ``nobody`` without one, so the process limit holds, it
cannot signal or ptrace the daemon, and one agent cannot read, signal or exhaust
another; memory and processes are capped per sandbox by a cgroup where one can be
made (bubblewrap and process backends; ``_cgroups``), else by the rlimits alone;
at the wall-clock limit, or when output keeps flooding past four
times the cap, every process of the sandbox is killed, and so is what a command left
running in the background when it ends; when the daemon dies, the sandbox dies too.

The network: a sandbox never shares the host's network namespace. Without a grant
it has none (bubblewrap, gVisor, and the process backend where the kernel lets it make
a network namespace); with one (``network``: the unix socket of the grant's egress
proxy, :mod:`agentd.sandbox.egress`) it reaches out only through that proxy, which
refuses the host's own and private addresses. gVisor refuses a grant; the process
backend refuses one where it cannot make a network namespace
(:meth:`ProcessBackend.network_confinement`).

What only the isolating backends add: a filesystem with nothing of the host but
``/usr`` (read-only), a few ``/etc`` files and the workspace;
a pid namespace (no other process is visible); and for bubblewrap a seccomp filter
that refuses the kernel interfaces most used to escape (the process backend installs
it too). The process backend is not isolated: the command sees the host's files (what
``nobody`` may read) and its processes. It is the fallback where no
namespace tool works, and choosing it logs a warning.

Use :func:`choose` to get a backend (the strongest usable one by default),
:meth:`Backend.as_user` for an agent's, and call :func:`prepare_workspace` once on a
new workspace (the sandbox's uid must own it).
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import subprocess
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

from agentd.errors import InvalidInput, ToolError
from agentd.sandbox import _bwrap, _gvisor
from agentd.sandbox import cgroups as _cgroups
from agentd.sandbox.binds import (
    ReadOnlyBind,
    check_binds,
    close_all,
    open_sources,
    real_paths,
    signature,
)
from agentd.sandbox.egress import PROXY_ENV, EgressProxy, Inlet
from agentd.sandbox.limits import (
    SANDBOX_PATH,
    ExecResult,
    Limits,
    Reach,
    Sealed,
    cwd_parts,
    open_cwd,
    sandbox_env,
    sandbox_ids,
    spawn_kwargs,
    workspace_owner,
)
from agentd.sandbox.ownership import prepare_workspace
from agentd.sandbox.probes import netns_known, netns_probe, reach_for, seal_probe
from agentd.sandbox.process import Child, execute, launch
from agentd.sandbox.shell import PersistentShell
from agentd.sandbox.stats import SandboxStats

__all__ = [
    "BACKENDS",
    "Backend",
    "BubblewrapBackend",
    "ExecResult",
    "GVisorBackend",
    "Limits",
    "ProcessBackend",
    "RemoteBackend",
    "choose",
    "detect",
    "prepare_workspace",
]

logger = logging.getLogger(__name__)

_probe_lock = threading.Lock()
_probes: dict[type, tuple[int, str | None]] = {}
_warned: set[int] = set()


class Backend(ABC):
    """Runs commands in one kind of sandbox, as one user. Instances hold no other
    state: an agent's (:meth:`as_user`) serves all its runs."""

    name: ClassVar[str]
    strength: ClassVar[int]
    isolated: ClassVar[bool]

    def __init__(self, *, user: tuple[int, int] | None = None) -> None:
        #: (uid, gid) its commands run as when the daemon is root (None: ``nobody``).
        self.user = user
        #: Where starts and kills are counted (the daemon's ``/metrics``), if anywhere.
        self.stats: SandboxStats | None = None

    def as_user(self, user: tuple[int, int] | None) -> Backend:
        """This backend, running its commands as ``user`` (uid, gid)."""
        if user == self.user:
            return self
        other = type(self)(user=user)
        other.stats = self.stats
        return other

    async def _counted_start(self, argv: list[str], **kw: Any) -> Child | ExecResult:
        """:meth:`_start`, its time and outcome counted in :attr:`stats`."""
        began = time.perf_counter()
        child = await self._start(argv, **kw)
        if self.stats is not None:
            if isinstance(child, ExecResult):
                self.stats.start_failed(self.name)
            else:
                self.stats.started(self.name, time.perf_counter() - began)
        return child

    def _count_kill(self, result: ExecResult) -> ExecResult:
        if self.stats is not None and result.killed:
            self.stats.killed(self.name, result.killed)
        return result

    @classmethod
    def unavailable(cls) -> str | None:
        """None when this backend works here, else why not (for people to read).

        The first call probes for real (it runs a sandboxed ``true``: from a few ms
        for bubblewrap to half a second for gVisor, blocking); the answer is kept
        for the life of the process.
        """
        pid = os.getpid()
        with _probe_lock:
            cached = _probes.get(cls)
            if cached is None or cached[0] != pid:
                cached = (pid, cls._probe())
                _probes[cls] = cached
            return cached[1]

    @classmethod
    @abstractmethod
    def _probe(cls) -> str | None: ...

    @classmethod
    def binds_unsupported(cls) -> str | None:
        """None when this backend can show host folders read-only at paths of their
        own in its sandboxes (``binds``: an agent's skills at ``/skills/<name>``),
        else why not."""
        return None

    def _check_binds(self, binds: Sequence[ReadOnlyBind]) -> None:
        why = self.binds_unsupported() if binds else None
        if why is not None:
            raise ToolError(f"the {self.name} sandbox cannot show folders read-only in "
                            f"its commands: {why}", code="sandbox_unsupported")
        check_binds(binds)

    async def run(self, argv: Sequence[str], *, workspace: Path,
                  network: EgressProxy | bool | None = None,
                  env: Mapping[str, str] | None = None, limits: Limits = Limits(),
                  stdin: bytes | None = None, cwd: str = ".",
                  binds: Sequence[ReadOnlyBind] = ()) -> ExecResult:
        """Run ``argv`` in a new sandbox and wait for it (at most ``limits.wall_s``).

        Args:
            argv: the program and its arguments (looked up on the sandbox's PATH).
            workspace: the agent's workspace on the host.
            network: the egress proxy of the sandbox's network grant
                (``EgressProxies.get``); None or False: no network.
            env: variables added to the sandbox's fixed environment.
            limits: what it may use.
            stdin: bytes fed to its standard input (else it reads /dev/null).
            cwd: working directory relative to the workspace.
            binds: host folders shown read-only in the sandbox (an agent's skills,
                :mod:`agentd.sandbox.binds`).

        Raises:
            ToolError: ``path_refused`` for a ``cwd`` outside the workspace or missing,
                ``sandbox_unavailable`` when this backend does not work here,
                ``network_denied`` when it cannot give this sandbox the network,
                ``sandbox_unsupported`` for binds this backend cannot show
                (:meth:`binds_unsupported`), ``sandbox_bind_refused`` for a bind's bad
                path or a folder that cannot be opened.
        """
        command = self._wrap(_command(argv))
        self._check_binds(binds)
        child = await self._counted_start(command, workspace=workspace,
                                          network=_egress(network), env=env, limits=limits,
                                          cwd=cwd, stdin_pipe=stdin is not None, binds=binds)
        if isinstance(child, ExecResult):
            return child
        return self._count_kill(await execute(child, stdin=stdin, limits=limits))

    async def shell(self, *, workspace: Path, network: EgressProxy | bool | None = None,
                    env: Mapping[str, str] | None = None,
                    limits: Limits = Limits(),
                    binds: Sequence[ReadOnlyBind] = ()) -> PersistentShell:
        """A started persistent shell in a sandbox of this backend: ``cd`` and
        ``export`` last between its commands; ``limits.wall_s`` applies to each;
        ``network`` and ``binds`` as for :meth:`run` (a shell restarted after a kill
        gets the same binds; :attr:`PersistentShell.tag` names them)."""
        argv = _shell_argv()
        egress = _egress(network)
        self._check_binds(binds)

        async def start() -> Child:
            child = await self._counted_start(argv, workspace=workspace, network=egress,
                                              env=env, limits=limits, cwd=".",
                                              stdin_pipe=True, binds=binds)
            if isinstance(child, ExecResult):
                raise ToolError(f"the shell could not start: {child.stderr.strip()}",
                                code="sandbox_failed")
            return child

        stats = self.stats
        shell = PersistentShell(start, limits=limits, backend=self.name,
                                on_kill=None if stats is None
                                else lambda reason: stats.killed(self.name, reason),
                                tag=signature(binds))
        await shell.start()
        return shell

    async def spawn(self, argv: Sequence[str], *, workspace: Path,
                    network: EgressProxy | None = None,
                    env: Mapping[str, str] | None = None, limits: Limits = Limits(),
                    cwd: str = ".", binds: Sequence[ReadOnlyBind] = ()) -> Child:
        """A long-lived process in a new sandbox of this backend, with pipes on its
        stdin, stdout and stderr (a local MCP server). No wall-clock limit applies:
        ``close()`` the Child to end it and every process it started.

        Raises:
            ToolError: ``sandbox_failed`` when it could not start (the program is
                missing, say), and what :meth:`run` raises.
        """
        command = self._wrap(_command(argv))
        self._check_binds(binds)
        child = await self._counted_start(command, workspace=workspace, network=network,
                                          env=env, limits=limits, cwd=cwd, stdin_pipe=True,
                                          binds=binds)
        if isinstance(child, ExecResult):
            raise ToolError(f"{argv[0]} could not start: {child.stderr.strip()}",
                            code="sandbox_failed")
        return child

    def _wrap(self, command: list[str]) -> list[str]:
        return command

    async def _check(self, workspace: Path, cwd: str) -> list[str]:
        reason = self.unavailable() if type(self) in _probes else \
            await asyncio.to_thread(self.unavailable)
        if reason is not None:
            raise ToolError(f"the {self.name} sandbox is unavailable: {reason}",
                            code="sandbox_unavailable")
        parts = cwd_parts(cwd)
        owner = workspace_owner(workspace)  # a ToolError if it is not a directory
        ids = sandbox_ids(self.user)
        if ids is not None and owner != ids[0]:
            # A workspace still the daemon's (new, or written by it) or the old
            # shared uid's: give it to this sandbox's.
            await asyncio.to_thread(prepare_workspace, workspace, user=self.user)
        os.close(open_cwd(workspace, parts))  # exists, is a directory, no link on the way
        return parts

    @abstractmethod
    async def _start(self, argv: list[str], *, workspace: Path,
                     network: EgressProxy | None,
                     env: Mapping[str, str] | None, limits: Limits, cwd: str,
                     stdin_pipe: bool, binds: Sequence[ReadOnlyBind] = ()
                     ) -> Child | ExecResult:
        """Start ``argv`` in a new sandbox (an ExecResult when it could not start)."""

    async def _cgroup(self, limits: Limits) -> _cgroups.Cgroup | None:
        """A cgroup for a new sandbox, or None where none can be made (the rlimits
        alone then apply; ``/health`` says which: ``sandbox_memory``)."""
        found = _cgroups.cached()
        if found is None:
            found = await asyncio.to_thread(_cgroups.support)
        if not found.usable:
            return None
        try:
            # In memory, under a millisecond: a thread hop would cost more than it.
            return found.create(memory_mb=limits.memory_mb, processes=limits.processes)
        except OSError as exc:
            logger.warning("sandbox cgroup could not be made (%s): this sandbox has "
                           "the rlimits only", exc)
            return None


class ProcessBackend(Backend):
    """No isolation: the command is a plain process with rlimits, a scrubbed
    environment, its own session, the death signal, ``no_new_privs`` (set-uid programs
    gain nothing), the seccomp filter of the bubblewrap sandbox, a cgroup where one can
    be made, and (under root) the agent's uid. Its working directory is the real
    workspace path (``HOME`` too). When a parent of the workspace is closed to that
    uid, as ``/root`` is, a private mount namespace shows the workspace at that path
    and hides the rest of the parent (`_reach`); where none can be made, the command
    works in the workspace by relative paths only.

    The network: each command gets a network namespace of its own (as root, or in a
    new user namespace otherwise) with only ``lo``; a grant adds the egress forwarder
    in it (the proxy's socket is reached through the host's filesystem). Where the
    kernel refuses both, commands share the host's network and a grant is refused.

    What it cannot contain: it reads every host file ``nobody`` (or the daemon's user)
    may read (the egress sockets of other grants included, by name), sees the host's
    processes and may signal those of its uid (the agent's other sandboxes; under a
    non-root daemon, every agent's and the daemon itself); without a cgroup, a process
    that leaves its process group (``setsid``) escapes the kill at the end, and with
    or without one it escapes the daemon's death, as does everything if it kills the
    ``timeout`` above it, or the daemon dies while that ``timeout`` forks the command
    (a signal before it has noted the child's pid ends it without passing the signal
    on). With a cgroup, the next start kills what escaped
    (:func:`agentd.sandbox.cgroups.support`).
    """

    name = "process"
    strength = 10
    isolated = False

    @classmethod
    def binds_unsupported(cls) -> str | None:
        # Its commands see the host's own filesystem: there is no root of the
        # sandbox's to put a /skills in, and a path of the host would be shared by
        # every agent's commands.
        return ("its commands run on the host's own filesystem, with no root of their "
                "own to mount /skills in")

    @classmethod
    def _probe(cls) -> str | None:
        true = shutil.which("true", path=SANDBOX_PATH)
        if true is None:
            return "true not found on the sandbox PATH"
        try:
            done = subprocess.run([true], env={}, capture_output=True, timeout=30,
                                  check=False, **spawn_kwargs(Limits()))
        except (OSError, subprocess.SubprocessError) as exc:
            return f"cannot start a limited process: {exc}"
        return None if done.returncode == 0 else f"true exited with {done.returncode}"

    @classmethod
    def network_confinement(cls) -> str | None:
        """None when commands get a network namespace of their own here, else why
        not (then they share the host's network, and a grant is refused). Probed
        once per process, blocking."""
        return netns_probe()

    async def _start(self, argv: list[str], *, workspace: Path,
                     network: EgressProxy | None,
                     env: Mapping[str, str] | None, limits: Limits, cwd: str,
                     stdin_pipe: bool, binds: Sequence[ReadOnlyBind] = ()
                     ) -> Child | ExecResult:
        parts = await self._check(workspace, cwd)
        confined = self.network_confinement() if netns_known() else \
            await asyncio.to_thread(self.network_confinement)
        if network is not None and confined is not None:
            raise ToolError("the process backend cannot confine a command's network here "
                            f"({confined}): the network grant is refused",
                            code="network_denied")
        full_env = sandbox_env(str(workspace), env)
        inlet = await network.inlet() if network is not None else None
        try:
            return await self._launch(argv, workspace, parts, full_env, network, inlet,
                                      limits, stdin_pipe, confined is None)
        except BaseException:
            if inlet is not None:
                inlet.close()
            raise

    async def _launch(self, argv: list[str], workspace: Path, parts: list[str],
                      full_env: dict[str, str], network: EgressProxy | None,
                      inlet: Inlet | None, limits: Limits, stdin_pipe: bool,
                      confinable: bool) -> Child | ExecResult:
        # No pid namespace ends the command's children with it: coreutils' timeout
        # (no time limit of its own: 0) stays their parent, gets SIGTERM when the
        # daemon dies, and passes it to the process group, then SIGKILL a second
        # later. Without it, only the top process would die with the daemon.
        watchdog = shutil.which("timeout", path=SANDBOX_PATH)
        death = signal.SIGTERM if watchdog else signal.SIGKILL
        command = [watchdog, "--kill-after=1", "0", *argv] if watchdog else argv
        if inlet is not None:
            full_env.update(PROXY_ENV)
        elif network is not None:
            command, extra = _bwrap.proxied(command, await network.socket_path())
            full_env.update(extra)
        cwd_fd = open_cwd(workspace, parts)
        shown: Reach | Sealed | None = None
        cgroup = None
        try:
            shown = await self._reach(workspace, parts, limits)
            cgroup = await self._cgroup(limits)
            return await launch(command, env=full_env, stdin_pipe=stdin_pipe,
                                spawn=spawn_kwargs(
                                    limits, cwd_fd=cwd_fd, death=death,
                                    no_new_privs=True, user=self.user,
                                    cgroup_fds=cgroup.open_procs() if cgroup else (),
                                    new_net=confinable,
                                    netns=inlet.netns if inlet else None,
                                    reach=shown if isinstance(shown, Reach) else None,
                                    sealed=shown if isinstance(shown, Sealed) else None),
                                negative_is_signal=True, cgroup=cgroup,
                                cleanup=_closing(inlet, None))
        except BaseException as exc:
            if cgroup is not None:
                await asyncio.to_thread(cgroup.remove)
            if inlet is not None:
                inlet.close()
            if not isinstance(exc, FileNotFoundError | PermissionError):
                raise
            code = 127 if isinstance(exc, FileNotFoundError) else 126
            return ExecResult(exit_code=code, stdout="",
                              stderr=f"{argv[0]}: {exc.strerror or exc}\n",
                              truncated=False, timed_out=False, killed=None,
                              duration_ms=0.0)
        finally:
            os.close(cwd_fd)
            if cgroup is not None:
                cgroup.close_procs()

    async def _reach(self, workspace: Path, parts: list[str], limits: Limits
                     ) -> Reach | Sealed | None:
        """The command's filesystem under root: the host read-only with private tmp
        directories and the workspace writable at its own path (`Sealed`), where the
        kernel allows it (:meth:`host_sealed`); else, when a parent of the workspace
        is closed to the uid (``/root``, a 0700 home), how it reaches the workspace's
        own path (`Reach`): git needs it (it changes to the work tree's absolute
        path); so does any command given one. None when neither applies, or where no
        mount namespace can be made (then commands work in the workspace by relative
        paths only)."""
        ids = sandbox_ids(self.user)
        if ids is None:
            return None
        return await asyncio.to_thread(reach_for, workspace, ids, parts, limits)

    @classmethod
    def host_sealed(cls) -> str | None:
        """None when, under root, this backend's commands see the host read-only (so
        nothing of an agent's uid outlives its commands but in its workspace), else
        why not; probed once per process, blocking."""
        if os.geteuid() != 0:
            return "the daemon is not root"
        return seal_probe()


class BubblewrapBackend(Backend):
    """Linux namespaces through ``bwrap`` (see ``_bwrap`` for the exact layout): the
    workspace is ``/workspace``, the rest of the host is ``/usr`` and a few ``/etc``
    files, read-only. Start-up costs a few milliseconds."""

    name = "bubblewrap"
    strength = 20
    isolated = True

    @classmethod
    def _probe(cls) -> str | None:
        return _bwrap.probe()

    def _wrap(self, command: list[str]) -> list[str]:
        # The sandbox's pid 1 ignores the signals the kernel sends it for a limit
        # (SIGXFSZ, SIGXCPU): a shell is pid 1 and the command its child, so that
        # the limits act, and show in the status, as they do elsewhere.
        return ["sh", "-c", '"$@"; exit $?', "sh", *command]

    async def _start(self, argv: list[str], *, workspace: Path,
                     network: EgressProxy | None,
                     env: Mapping[str, str] | None, limits: Limits, cwd: str,
                     stdin_pipe: bool, binds: Sequence[ReadOnlyBind] = ()
                     ) -> Child | ExecResult:
        """Start the sandbox, again after a short wait (:data:`RETRY_DELAYS_S`) while it
        fails for want of a process before anything ran in it.

        The sandbox's uid may be at its process limit (``RLIMIT_NPROC`` counts every
        process of that uid: an agent's other commands, or for ``nobody`` every
        sandbox without an agent). Bubblewrap, already that uid, then cannot clone
        into its namespaces ("Creating new namespace failed: Resource temporarily
        unavailable") and exits without telling a sandbox pid: nothing ran, so
        starting again cannot run the command twice. (The kernel does not refuse to
        execute bubblewrap itself: ``child_setup`` switches the uid before it sets
        the limit.) Whether bubblewrap got that far is read from its info
        descriptor, never from what the sandbox printed. Any other failure, and the
        last attempt's, is the result as it was.
        """
        delays = iter(RETRY_DELAYS_S)
        while True:
            child, plan = await self._start_once(
                argv, workspace=workspace, network=network, env=env, limits=limits,
                cwd=cwd, stdin_pipe=stdin_pipe, binds=binds)
            waiting = asyncio.ensure_future(child.proc.wait())
            try:
                began = await plan.began(waiting)
            except BaseException:
                await child.close()
                raise
            finally:
                waiting.cancel()
            if began:
                return child
            result = await execute(child, stdin=None, limits=limits)
            delay = next(delays, None)
            if delay is None or not _transient(result.stderr):
                return result
            logger.info("the %s sandbox could not start (%s): again in %.2f s",
                        self.name, result.stderr.strip(), delay)
            await asyncio.sleep(delay)

    async def _start_once(self, argv: list[str], *, workspace: Path,
                          network: EgressProxy | None,
                          env: Mapping[str, str] | None, limits: Limits, cwd: str,
                          stdin_pipe: bool, binds: Sequence[ReadOnlyBind]
                          ) -> tuple[Child, _bwrap.Launch]:
        parts = await self._check(workspace, cwd)
        full_env = sandbox_env(_bwrap.WORKSPACE, env)
        chdir = "/".join([_bwrap.WORKSPACE, *parts])
        # Opened now, by the daemon, without following a link: what is bound is this
        # directory, whatever its path names by the time bubblewrap runs.
        fds = await asyncio.to_thread(open_sources, binds) if binds else []
        try:
            inlet = await network.inlet() if network is not None else None
            socket_path = (await network.socket_path()
                           if network is not None and inlet is None else None)
        except BaseException:
            close_all(fds)
            raise
        cgroup = None
        try:
            cgroup = await self._cgroup(limits)
            procs = cgroup.open_procs() if cgroup else ()
            shown = [(fd, bind.target) for fd, bind in zip(fds, binds, strict=True)]
            fds = []  # the plan's from here on (build closes them if it fails)
            plan = _bwrap.build(argv, workspace=workspace,
                                egress=socket_path,
                                netns=inlet.netns if inlet else None, env=full_env,
                                chdir=chdir, limits=limits, user=self.user,
                                cgroup_fds=procs, shown=shown)
        except BaseException:
            close_all(fds)
            if cgroup is not None:
                await asyncio.to_thread(cgroup.remove)
            if inlet is not None:
                inlet.close()
            raise
        try:
            child = await launch(plan.argv, env={}, pass_fds=plan.pass_fds,
                                 stdin_pipe=stdin_pipe, spawn=plan.spawn,
                                 negative_is_signal=False, extra_kill=plan.kill_sandbox,
                                 cleanup=_closing(inlet, plan.close), cgroup=cgroup)
            plan.monitor = child.proc.pid
            return child, plan
        except BaseException:
            plan.close()
            if cgroup is not None:
                await asyncio.to_thread(cgroup.remove)
            if inlet is not None:
                inlet.close()
            raise
        finally:
            plan.close_child_fds()
            if cgroup is not None:
                cgroup.close_procs()


#: Waits before starting a sandbox again that failed for want of a process before
#: anything ran in it (:meth:`BubblewrapBackend._start`): 1.55 s in all.
RETRY_DELAYS_S: tuple[float, ...] = (0.05, 0.1, 0.2, 0.4, 0.8)


def _transient(stderr: str) -> bool:
    """Bubblewrap's own message (the sandbox never existed) for a clone refused for
    want of a process (``EAGAIN``; its environment is empty, so the C locale's)."""
    return "Resource temporarily unavailable" in stderr


class GVisorBackend(Backend):
    """gVisor's ``runsc``: the command talks to a user-space kernel, not the host's.
    Same layout as bubblewrap; start-up costs a few hundred milliseconds."""

    name = "gvisor"
    strength = 30
    isolated = True

    @classmethod
    def _probe(cls) -> str | None:
        return _gvisor.probe()[0]

    async def _start(self, argv: list[str], *, workspace: Path,
                     network: EgressProxy | None,
                     env: Mapping[str, str] | None, limits: Limits, cwd: str,
                     stdin_pipe: bool, binds: Sequence[ReadOnlyBind] = ()
                     ) -> Child | ExecResult:
        if network is not None:
            # runsc would need the proxy's socket inside its own netstack (a gofer
            # mount of a host socket): not done, so a grant is refused, never given
            # as the host's network.
            raise ToolError("the gvisor sandbox gives commands no network: the grant "
                            "is refused (use the bubblewrap backend for commands that "
                            "need the network)", code="network_denied")
        parts = await self._check(workspace, cwd)
        full_env = sandbox_env(_bwrap.WORKSPACE, env)
        chdir = "/".join([_bwrap.WORKSPACE, *parts])
        # runsc's gofer opens the folders by path: the path of each directory as
        # opened here (no link as its last component), which only the daemon writes.
        shown = [(path, bind.target) for path, bind in zip(
            await asyncio.to_thread(real_paths, binds), binds, strict=True)]
        bundle = await asyncio.to_thread(_gvisor.build, argv, workspace=workspace,
                                         env=full_env, chdir=chdir, limits=limits,
                                         user=self.user, shown=shown)

        def cleanup() -> None:
            shutil.rmtree(bundle.directory, ignore_errors=True)

        try:
            return await launch(bundle.argv, env={"PATH": SANDBOX_PATH},
                                stdin_pipe=stdin_pipe, spawn=bundle.spawn,
                                negative_is_signal=False, extra_stop=bundle.stop,
                                cleanup=cleanup)
        except BaseException:
            await bundle.remove()
            raise


class RemoteBackend(Backend):
    """The interface of a sandbox elsewhere: a Firecracker microVM, a hosted sandbox
    service (E2B-style). None is implemented; this is the shape one takes.

    An implementation creates (or resumes) a machine per workspace, keeps the
    workspace in sync (upload before ``run``, download after, or a shared volume),
    and maps the same guarantees onto it: the fixed environment, the limits, the
    wall-clock kill of everything started, no network unless granted. ``run`` and
    ``shell`` keep their signatures and meaning; ``unavailable`` says whether the
    service is configured and reachable.
    """

    name = "remote"
    strength = 40
    isolated = True

    @classmethod
    def binds_unsupported(cls) -> str | None:
        # An implementation would upload the folders to its machine (read-only there).
        return "no remote sandbox implements read-only folders"

    @classmethod
    def _probe(cls) -> str | None:
        return "no remote sandbox is configured"

    @abstractmethod
    async def run(self, argv: Sequence[str], *, workspace: Path,
                  network: EgressProxy | bool | None = None,
                  env: Mapping[str, str] | None = None, limits: Limits = Limits(),
                  stdin: bytes | None = None, cwd: str = ".",
                  binds: Sequence[ReadOnlyBind] = ()) -> ExecResult: ...

    @abstractmethod
    async def shell(self, *, workspace: Path, network: EgressProxy | bool | None = None,
                    env: Mapping[str, str] | None = None,
                    limits: Limits = Limits(),
                    binds: Sequence[ReadOnlyBind] = ()) -> PersistentShell: ...


BACKENDS: tuple[type[Backend], ...] = (RemoteBackend, GVisorBackend, BubblewrapBackend,
                                       ProcessBackend)


def detect() -> dict[str, str | None]:
    """Every known backend's name (strongest first) and None when it is usable here,
    else why not. Probes each once (blocking, up to about a second in all)."""
    ordered = sorted(BACKENDS, key=lambda cls: -cls.strength)
    return {cls.name: cls.unavailable() for cls in ordered}


def choose(name: str | None = None) -> Backend:
    """The backend called ``name``; None or ``"auto"``: the strongest usable one.

    Raises:
        InvalidInput: an unknown name (the message lists the known ones), or a known
            backend that is not usable here (the message says why).
    """
    known = {cls.name: cls for cls in BACKENDS}
    if name is None or name == "auto":
        reasons: dict[str, str] = {}
        for cls in sorted(BACKENDS, key=lambda c: -c.strength):
            reason = cls.unavailable()
            if reason is None:
                return _instance(cls, reasons)
            reasons[cls.name] = reason
        raise InvalidInput("no sandbox backend is usable here: " + "; ".join(
            f"{key}: {why}" for key, why in reasons.items()), field="sandbox")
    if name not in known:
        raise InvalidInput(f"unknown sandbox backend {name!r}; known: auto, "
                           + ", ".join(sorted(known)), field="sandbox")
    reason = known[name].unavailable()
    if reason is not None:
        raise InvalidInput(f"sandbox backend {name!r} is not usable here: {reason}",
                           field="sandbox")
    return _instance(known[name], {})


def _instance(cls: type[Backend], reasons: dict[str, str]) -> Backend:
    if not cls.isolated and os.getpid() not in _warned:
        _warned.add(os.getpid())
        why = "; ".join(f"{key}: {reason}" for key, reason in reasons.items()
                        if key != "remote")
        logger.warning(
            "SANDBOX: tool commands run as plain processes (the %s backend), NOT "
            "isolated: they can read the host's files and use its network; only "
            "rlimits, a scrubbed environment%s apply.%s", cls.name,
            " and a uid per agent" if sandbox_ids() is not None else "",
            f" Isolating backends: {why}" if why else "")
    return cls()


def _egress(network: EgressProxy | bool | None) -> EgressProxy | None:
    """The egress proxy of a ``network`` argument. True is refused: a sandbox gets
    the network only through a proxy applying the grant, never the host's."""
    if network is True:
        raise ToolError("commands reach the network only through an egress proxy "
                        "(pass it)", code="network_denied")
    return network if isinstance(network, EgressProxy) else None


def _closing(inlet: Inlet | None, cleanup: Callable[[], None] | None
             ) -> Callable[[], None] | None:
    """``cleanup``, then the inlet closed (the sandbox has ended)."""
    if inlet is None:
        return cleanup

    def both() -> None:
        try:
            if cleanup is not None:
                cleanup()
        finally:
            inlet.close()

    return both


def _command(argv: Sequence[str]) -> list[str]:
    if isinstance(argv, str | bytes):
        raise InvalidInput("argv must be a list of strings, not one string", field="argv")
    command = list(argv)
    if not command or not all(isinstance(a, str) and "\x00" not in a for a in command):
        raise InvalidInput("argv must be a non-empty list of strings without NUL "
                           "characters", field="argv")
    return command


def _shell_argv() -> list[str]:
    if shutil.which("bash", path=SANDBOX_PATH):
        return ["bash", "--noprofile", "--norc"]
    return ["sh"]
