"""The daemon's sandboxes: which backend runs commands, with what limits, per agent.

At start the daemon probes every backend (:func:`agentd.sandbox.backends.detect`) and
picks its default: the ``[sandbox] backend`` of the config, or with ``auto`` the
strongest that works here (gVisor, then bubblewrap; the process backend, which does
not isolate, only where neither works, with a loud warning). ``/health`` and
``agentd status`` say which. An agent may ask for another backend
(``settings.sandbox.backend``; refused at create if this daemon cannot run it) and
change its limits (``settings.sandbox.limits``: the daemon's ``[sandbox.limits]`` are
the defaults, ``max_limits`` the ceiling; only an operator token goes above the
defaults, or names a weaker backend: docs/security.md, "Operator-only settings").

Who commands run as: when the daemon is root, each agent's run as its own uid and
gid (:meth:`Sandboxes.user`: from ``[sandbox] uid_base``/``uid_count``, stored, held
by one agent at a time), its workspace theirs with mode ``0700``; so one agent
cannot read another's files, signal its processes or use up its process count. A
tenant's agents hold at most ``caps_of(tenant).sandbox_uids`` of them. A deleted
agent's uid is given again only once each node that used it has swept it
(:meth:`Sandboxes.reclaim`: its processes killed, its IPC objects and workspace
removed; nothing else of it can remain where the host is read-only to it,
:mod:`agentd.sandbox.hostfs`); see :mod:`agentd.store._uids`.
When the daemon is not root this is impossible: every sandbox keeps the daemon's uid
(the log says so at start, ``/health`` says ``sandbox_uids: "daemon"``). Memory and
processes are capped per sandbox by a cgroup where one can be made, else by rlimits
per process (``/health``: ``sandbox_memory: "cgroup"|"rlimit"``).

The network: the daemon's egress proxies (one per agent and grant, made on first use,
closed with the agent or the daemon) are the only way out of a sandbox, and every
connection an agent opens is checked with the operator's ``[sandbox]
private_endpoints`` and the daemon's own port (:mod:`agentd.sandbox.egress`), and
counted against the daemon's, the agent's and its tenant's caps
(:mod:`agentd.sandbox.connections`). At start the daemon raises its descriptor
limit to the hard one; the daemon-wide cap is an eighth of it by default.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import os
import pwd
import resource
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agentd.config import AgentSandbox, SandboxConfig
from agentd.errors import Conflict, InvalidInput, ToolError
from agentd.sandbox import limits as _limits
from agentd.sandbox import reclaim as _reclaim
from agentd.sandbox.backends import (
    BACKENDS,
    Backend,
    Limits,
    ProcessBackend,
    choose,
    detect,
    prepare_workspace,
)
from agentd.sandbox.binds import ReadOnlyBind
from agentd.sandbox.caps import CapsOf, no_caps
from agentd.sandbox.cgroups import support as cgroup_support
from agentd.sandbox.connections import Connections, Owner
from agentd.sandbox.context import Sandbox
from agentd.sandbox.egress import EgressProxies, EgressRules
from agentd.sandbox.process import Child
from agentd.sandbox.shell import ShellPool
from agentd.sandbox.stats import SandboxStats
from agentd.security.policy import Policy
from agentd.tools.mcp_config import MCPServer
from agentd.tools.mcp_stdio import Spawner

if TYPE_CHECKING:
    from agentd.store import Store

__all__ = ["Sandboxes"]

log = logging.getLogger(__name__)


class Sandboxes:
    """Backends, limits and persistent shells. Owned by the runtime."""

    def __init__(self, config: SandboxConfig, store: Store | None = None, *,
                 daemon_ports: tuple[int, ...] = (), node_id: str = "",
                 workspaces: Path | None = None, caps_of: CapsOf = no_caps) -> None:
        self.config = config
        self.store = store
        #: This node (its uses of uids are recorded under it) and its workspaces.
        self.node_id = node_id
        self.workspaces = workspaces
        #: A tenant's caps (sandbox uids here, egress connections in the proxies).
        self.caps_of = caps_of
        #: Whether everything run as an agent's uid here keeps the host read-only
        #: (set at start): else a deleted agent's uid is never given again.
        self.sealed = False
        self._reclaiming = asyncio.Lock()
        self.shells = ShellPool(idle_s=config.shell_idle_s)
        # Every connection an agent opens (commands through these proxies,
        # http_fetch directly) is checked with these rules.
        self.rules = EgressRules.of(config.private_endpoints,
                                    daemon_ports=(port for port in daemon_ports if port))
        #: Every egress connection, counted (its daemon-wide cap is set at start).
        self.connections = Connections(total=config.egress_max_connections or 128,
                                       per_agent=config.egress_max_per_agent,
                                       caps_of=lambda tenant: self.caps_of(tenant))
        self.egress = EgressProxies(self.rules, connections=self.connections)
        #: The daemon's descriptor limit (soft, raised to the hard one at start).
        self.fd_limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        self._shell_keys: dict[str, set[str]] = {}
        self.available: dict[str, str | None] = {}
        self.default: Backend | None = None
        self.memory = "rlimit"
        self._backends: dict[str, Backend] = {}
        #: Sandbox starts and kills, by backend (``/metrics``).
        self.stats = SandboxStats()
        self._prepared: set[Path] = set()
        self._users: dict[str, tuple[int, int]] = {}
        #: The read-only folders an agent's commands see (by agent id: its enabled
        #: skills, set by the runtime), asked for before each shell command.
        self.binds_for: Callable[[str], Awaitable[Sequence[ReadOnlyBind]]] | None = None

    async def start(self) -> None:
        """Raise the descriptor limit, probe the backends and choose the default; a
        configured backend that does not work here, or an egress cap the descriptors
        cannot hold, stops the daemon (InvalidInput naming the setting)."""
        self.fd_limit = raise_descriptor_limit()
        wanted_cap = self.config.egress_max_connections
        if wanted_cap is not None and wanted_cap > self.fd_limit // 4:
            raise InvalidInput(
                f"sandbox.egress_max_connections: {wanted_cap} connections hold up to "
                f"{2 * wanted_cap} descriptors, more than half of the daemon's limit of "
                f"{self.fd_limit} (RLIMIT_NOFILE): set at most {self.fd_limit // 4}, or "
                "raise the hard limit", field="sandbox.egress_max_connections")
        self.connections.total = wanted_cap or max(self.fd_limit // 8, 16)
        log.info("descriptors: %d (RLIMIT_NOFILE); egress connections: at most %d, %d "
                 "per agent", self.fd_limit, self.connections.total,
                 self.connections.per_agent)
        self.available = await asyncio.to_thread(detect)
        wanted = None if self.config.backend == "auto" else self.config.backend
        try:
            self.default = await asyncio.to_thread(choose, wanted)
            self.default.stats = self.stats
        except InvalidInput as exc:
            raise InvalidInput(f"sandbox.backend: {exc.message}",
                               field="sandbox.backend") from None
        self._backends[self.default.name] = self.default
        log.info("sandbox: %s (%s)", self.default.name,
                 "isolated" if self.default.isolated else "NOT isolated")
        if self.unconfined(self.default):
            log.warning("SANDBOX: %s", self.unconfined(self.default))
        if os.geteuid() == 0:
            log.info("sandbox uids: one per agent, from %d (%d of them)",
                     self.config.uid_base, self.config.uid_count)
            why = await asyncio.to_thread(ProcessBackend.host_sealed)
            self.sealed = why is None
            if why is not None:
                log.warning("sandbox uids: the uids of deleted agents that ran commands "
                            "or a browser here are never given again: the host cannot "
                            "be made read-only to them (%s)", why)
            taken = await asyncio.to_thread(self._host_users)
            if taken:
                log.warning("sandbox uids: the host's users %s have uids in the range "
                            "[sandbox] uid_base..uid_base+uid_count: an agent given one "
                            "would own their files; move the range", ", ".join(taken))
        else:
            log.warning("sandbox uids: the daemon is not root, so every agent's commands "
                        "run as the daemon's own uid: agents can read each other's "
                        "workspaces and signal each other's processes under the "
                        "process backend, and share one process count")
        cgroups = await asyncio.to_thread(cgroup_support)
        if cgroups.usable and self.default.name != "gvisor":
            self.memory = "cgroup"
            log.info("sandbox memory and processes: a cgroup (v%d) per sandbox",
                     cgroups.version)
        else:
            log.warning("sandbox memory: no cgroup per sandbox (%s); memory is capped "
                        "per process (RLIMIT_AS), processes per uid (RLIMIT_NPROC): "
                        "several processes of one sandbox may together use more",
                        cgroups.reason or "the gvisor backend")
        if self.available.get(ProcessBackend.name) is None:
            why = await asyncio.to_thread(ProcessBackend.network_confinement)
            if why is not None:
                log.warning("SANDBOX: the process backend cannot give commands a network "
                            "namespace (%s): its commands share the host's network, and "
                            "a network grant is refused for them", why)

    def check_agent(self, config: AgentSandbox) -> None:
        """Refuse (422) an agent asking for a backend this daemon cannot run (what the
        settings model cannot know; it checks the limits against the daemon's caps)."""
        name = config.backend
        if name is None or name == "auto":
            return
        reason = self.available.get(name, "unknown backend")
        if reason is not None:
            raise InvalidInput(f"settings.sandbox.backend {name!r} does not work on this "
                               f"daemon: {reason}", field="body.settings.sandbox.backend")

    def limits(self, config: AgentSandbox) -> Limits:
        """The daemon's limits, changed by the agent's (at most the daemon's ceiling,
        ``max_limits``: a stored limit above a ceiling lowered since is capped)."""
        defaults = self.config.limits.model_dump()
        ceiling = self.config.ceiling
        merged: dict[str, Any] = {}
        for name, value in defaults.items():
            own = config.limits.get(name)
            chosen = value if own is None else min(getattr(ceiling, name), own)
            merged[name] = int(chosen) if isinstance(value, int) else float(chosen)
        return Limits(**merged)

    def _host_users(self) -> list[str]:
        """Names of the host's users (``/etc/passwd``) inside the uid range."""
        low, high = self.config.uid_base, self.config.uid_base + self.config.uid_count
        return sorted(entry.pw_name for entry in pwd.getpwall()
                      if low <= entry.pw_uid < high)

    async def allocate(self, agent_id: str) -> None:
        """Give a new agent its uid (nothing runs as it yet); nothing when the daemon
        is not root.

        Raises:
            QuotaExceeded: its tenant's ``sandbox_uids`` cap (403).
            Conflict: ``sandbox_uids_exhausted`` (none free, even once this node has
                swept the uids of deleted agents it used).
        """
        if os.geteuid() == 0 and self.store is not None:
            await self._uid(agent_id, node=None)

    async def user(self, agent_id: str) -> tuple[int, int] | None:
        """The agent's (uid, gid), given it now if it has none, and recorded as used
        by this node; None when the daemon is not root (the sandbox keeps the daemon's
        uid).

        Raises:
            Conflict: as :meth:`allocate`.
            AgentNotFound: the agent was deleted.
        """
        if os.geteuid() != 0 or self.store is None:
            return None
        found = self._users.get(agent_id)
        if found is None:
            uid = await self._uid(agent_id, node=self.node_id)
            # Given again after a sweep here: processes may start as it once more.
            _limits.reinstate([uid])
            found = self._users[agent_id] = (uid, uid)
        return found

    async def _uid(self, agent_id: str, *, node: str | None) -> int:
        assert self.store is not None
        for attempt in range(2):
            try:
                return await self.store.sandbox_uid(
                    agent_id, base=self.config.uid_base, count=self.config.uid_count,
                    node=node, sealed=self.sealed,
                    cap_of=lambda tenant: self.caps_of(tenant).sandbox_uids)
            except Conflict as exc:
                # The range is used up: sweep what this node may, then once more.
                if (exc.code != "sandbox_uids_exhausted" or attempt
                        or not await self.reclaim()):
                    raise
        raise AssertionError("unreachable")

    async def reclaim(self, *, limit: int = 256) -> int:
        """Sweep the uids of deleted agents this node used (at most ``limit``): no
        process starts as one of them here from now on, every process of theirs is
        killed, their SysV IPC objects and the old workspaces are removed; then each
        is free once no other node has still to sweep it. Returns how many this node
        swept (a periodic job; also when the range is used up)."""
        if os.geteuid() != 0 or self.store is None or not self.sealed:
            return 0
        async with self._reclaiming:
            rows = await self.store.quarantined_uids(self.node_id, limit=limit)
            if not rows:
                return 0
            uids = {uid for uid, _ in rows}
            _limits.retire(uids)
            for agent_id, (uid, _gid) in list(self._users.items()):
                if uid in uids:
                    del self._users[agent_id]
            # A browser being started as one of them meanwhile is let finish first,
            # so that the kill below finds it (a command's start is checked in the
            # child itself).
            await _limits.started(uids)
            workspaces = ([self.workspaces / agent_id for _, agent_id in rows]
                          if self.workspaces is not None else [])
            for _, agent_id in rows:  # (deleted on another node: its proxies here)
                await self.egress.close_agent(agent_id)
            clean = await asyncio.to_thread(_reclaim.sweep, uids, workspaces)
            freed = await self.store.sandbox_uids_swept(self.node_id, clean)
            log.info("sandbox uids: swept %d of deleted agents (%d free again)",
                     len(clean), freed)
            return len(clean)

    async def for_run(self, config: AgentSandbox, limits: Limits, *, workspace: Path,
                      permissions: Policy, shell_key: str, agent_id: str = "",
                      tenant: str = "") -> Sandbox:
        """What a run's tools get (``ToolContext.sandbox``); ``limits``: this agent's
        (:meth:`limits`, worked out once per agent); its commands run as the agent's
        uid (:meth:`user`)."""
        user = await self.user(agent_id) if agent_id else None
        backend = (await self._backend(config.backend)).as_user(user)
        if workspace not in self._prepared:
            await self.prepare(workspace, agent_id=agent_id)
        network = permissions.network
        unconfined = self.unconfined(backend)
        sandbox = Sandbox(backend=None if unconfined else backend, limits=limits,
                          unavailable=unconfined or "",
                          network=tuple(network) if isinstance(network, tuple | list)
                          else bool(network), egress=self.egress, rules=self.rules,
                          shells=self.shells, shell_key=shell_key,
                          persistent_shell=config.persistent_shell,
                          binds=functools.partial(self.binds_for, agent_id)
                          if self.binds_for is not None and agent_id
                          and backend.binds_unsupported() is None else None,
                          owner=Owner(tenant=tenant, agent=agent_id))
        self._shell_keys.setdefault(shell_key, set()).add(sandbox.shell_suffix())
        return sandbox

    def binds_unsupported(self, config: AgentSandbox) -> str | None:
        """None when the commands of an agent with this sandbox config see read-only
        folders (its skills at ``/skills``), else why not (for the model to read)."""
        name: str | None = config.backend
        if name is None or name == "auto":
            if self.default is None:
                return "the daemon has no sandbox"
            name = self.default.name
        found = next((cls for cls in BACKENDS if cls.name == name), None)
        if found is None:
            return f"unknown sandbox backend {name!r}"
        if found.name == ProcessBackend.name and self.unconfined(ProcessBackend()):
            return "commands are refused on this daemon"
        return found.binds_unsupported()

    def unconfined(self, backend: Backend) -> str | None:
        """Why ``backend`` may not run an agent's commands here: the process backend
        of a daemon that is not root would run them as the daemon's own user, able to
        read its token and database (unless ``[sandbox] unconfined_ok``)."""
        if (backend.name != ProcessBackend.name or os.geteuid() == 0
                or self.config.unconfined_ok):
            return None
        return ("commands are refused: the process backend would run them as the "
                "daemon's own user, who can read its token and database; install "
                "bubblewrap, run the daemon as root, or set [sandbox] unconfined_ok = "
                "true to accept that")

    def mcp_spawner(self, config: AgentSandbox, limits: Limits, *, workspace: Path,
                    network: bool | tuple[str, ...] | list[str], agent_id: str,
                    tenant: str = "") -> Spawner:
        """How an agent's stdio MCP servers start: each in a sandbox of the agent's
        backend, as its uid, with its workspace, limits and network grant (through the
        egress proxy, as for its commands); no CPU or wall-clock limit, since a server
        lives as long as its connection."""
        grant = tuple(network) if isinstance(network, tuple | list) else bool(network)
        long_lived = dataclasses.replace(limits, cpu_s=float(7 * 86400),
                                         wall_s=float(7 * 86400))

        async def spawn(server: MCPServer) -> Child:
            assert server.command is not None
            user = await self.user(agent_id)
            backend = (await self._backend(config.backend)).as_user(user)
            if workspace not in self._prepared:
                await self.prepare(workspace, agent_id=agent_id)
            unconfined = self.unconfined(backend)
            if unconfined:
                raise ToolError(unconfined, code="sandbox_unavailable")
            proxy = (await self.egress.get(grant, Owner(tenant=tenant, agent=agent_id))
                     if grant else None)
            return await backend.spawn(server.command, workspace=workspace,
                                       network=proxy, env=server.env,
                                       limits=long_lived, cwd=server.cwd or ".")

        return spawn

    async def prepare(self, workspace: Path, *, agent_id: str = "") -> None:
        """Create the workspace and make it the agent's uid's (again after a restore
        wrote files as the daemon)."""
        user = await self.user(agent_id) if agent_id else None

        def work() -> None:
            workspace.mkdir(parents=True, exist_ok=True, mode=0o700)
            prepare_workspace(workspace, user=user)

        await asyncio.to_thread(work)
        self._prepared.add(workspace)

    async def _backend(self, name: str | None) -> Backend:
        if name is None or name == "auto":
            assert self.default is not None, "Sandboxes.start() was not awaited"
            return self.default
        backend = self._backends.get(name)
        if backend is None:
            backend = await asyncio.to_thread(choose, name)
            backend.stats = self.stats
            self._backends[name] = backend
        return backend

    async def close_shells(self, shell_key: str) -> None:
        """Close a session's persistent shells (one per network grant)."""
        for suffix in self._shell_keys.pop(shell_key, set()) | {"net", "nonet"}:
            await self.shells.close(f"{shell_key}/{suffix}")

    async def forget(self, workspace: Path, agent_id: str = "") -> None:
        """The agent was deleted: its egress proxies close (their connections end)."""
        self._prepared.discard(workspace)
        self._users.pop(agent_id, None)
        if agent_id:
            await self.egress.close_agent(agent_id)

    async def close(self) -> None:
        await self.shells.close_all()
        await self.egress.close()

    def health(self) -> dict[str, Any]:
        default = self.default
        confined = (ProcessBackend.network_confinement()
                    if self.available.get(ProcessBackend.name) is None else None)
        return {"sandbox": default.name if default else "none",
                "sandbox_isolated": bool(default and default.isolated),
                "sandbox_uids": "per-agent" if os.geteuid() == 0 else "daemon",
                "sandbox_memory": self.memory,
                # Where commands of the process backend cannot get a network
                # namespace: they share the host's network (a grant is refused).
                "sandbox_network": "confined" if confined is None else confined,
                "sandboxes": {name: reason or "ok" for name, reason in self.available.items()},
                "fd_limit": self.fd_limit,
                "egress_connections": self.connections.held,
                "egress_max_connections": self.connections.total}


def raise_descriptor_limit() -> int:
    """Raise this process's soft ``RLIMIT_NOFILE`` to its hard limit (at most the
    kernel's ``fs.nr_open``); the soft limit it has now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard
    if hard == resource.RLIM_INFINITY:
        try:
            with open("/proc/sys/fs/nr_open") as nr_open:
                target = int(nr_open.read())
        except (OSError, ValueError):
            target = max(soft, 1 << 20)
    if soft == resource.RLIM_INFINITY or soft >= target:
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (OSError, ValueError) as exc:
        log.warning("descriptors: cannot raise RLIMIT_NOFILE from %d to %d: %s", soft,
                    target, exc)
        return soft
    log.info("descriptors: RLIMIT_NOFILE raised from %d to %d", soft, target)
    return target

