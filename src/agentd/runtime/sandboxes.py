"""The daemon's sandboxes: which backend runs commands, with what limits, per agent.

At start the daemon probes every backend (:func:`agentd.sandbox.backends.detect`) and
picks its default: the ``[sandbox] backend`` of the config, or with ``auto`` the
strongest that works here (gVisor, then bubblewrap; the process backend, which does
not isolate, only where neither works, with a loud warning). ``/health`` and
``agentd status`` say which. An agent may ask for another backend
(``settings.sandbox.backend``; refused at create if this daemon cannot run it) and
lower its limits (``settings.sandbox.limits``; the daemon's are the ceiling).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from pathlib import Path
from typing import Any

from agentd.config import AgentSandbox, SandboxConfig
from agentd.errors import InvalidInput
from agentd.sandbox._process import Child
from agentd.sandbox.backends import Backend, Limits, choose, detect, prepare_workspace
from agentd.sandbox.context import Sandbox
from agentd.sandbox.shell import ShellPool
from agentd.security.policy import Policy
from agentd.tools._mcp_stdio import Spawner
from agentd.tools.mcp import MCPServer

__all__ = ["Sandboxes"]

log = logging.getLogger(__name__)


class Sandboxes:
    """Backends, limits and persistent shells. Owned by the runtime."""

    def __init__(self, config: SandboxConfig) -> None:
        self.config = config
        self.shells = ShellPool(idle_s=config.shell_idle_s)
        self.available: dict[str, str | None] = {}
        self.default: Backend | None = None
        self._backends: dict[str, Backend] = {}
        self._prepared: set[Path] = set()

    async def start(self) -> None:
        """Probe the backends and choose the default; a configured backend that does
        not work here stops the daemon (InvalidInput naming the setting)."""
        self.available = await asyncio.to_thread(detect)
        wanted = None if self.config.backend == "auto" else self.config.backend
        try:
            self.default = await asyncio.to_thread(choose, wanted)
        except InvalidInput as exc:
            raise InvalidInput(f"sandbox.backend: {exc.message}",
                               field="sandbox.backend") from None
        self._backends[self.default.name] = self.default
        log.info("sandbox: %s (%s)", self.default.name,
                 "isolated" if self.default.isolated else "NOT isolated")

    def check_agent(self, config: AgentSandbox) -> None:
        """Refuse (422) an agent asking for a backend this daemon cannot run."""
        name = config.backend
        if name is None or name == "auto":
            return
        reason = self.available.get(name, "unknown backend")
        if reason is not None:
            raise InvalidInput(f"settings.sandbox.backend {name!r} does not work on this "
                               f"daemon: {reason}", field="body.settings.sandbox.backend")

    def limits(self, config: AgentSandbox) -> Limits:
        """The daemon's limits, lowered by the agent's."""
        ceiling = self.config.limits.model_dump()
        merged: dict[str, Any] = {}
        for name, value in ceiling.items():
            own = config.limits.get(name)
            chosen = value if own is None else min(value, own)
            merged[name] = int(chosen) if isinstance(value, int) else float(chosen)
        return Limits(**merged)

    async def for_run(self, config: AgentSandbox, limits: Limits, *, workspace: Path,
                      permissions: Policy, shell_key: str) -> Sandbox:
        """What a run's tools get (``ToolContext.sandbox``); ``limits``: this agent's
        (:meth:`limits`, worked out once per agent)."""
        backend = await self._backend(config.backend)
        if workspace not in self._prepared:
            await self.prepare(workspace)
        network = permissions.network
        return Sandbox(backend=backend, limits=limits,
                       network=tuple(network) if isinstance(network, tuple | list)
                       else bool(network),
                       shells=self.shells, shell_key=shell_key,
                       persistent_shell=config.persistent_shell)

    def mcp_spawner(self, config: AgentSandbox, limits: Limits, *, workspace: Path,
                    network: bool) -> Spawner:
        """How an agent's stdio MCP servers start: each in a sandbox of the agent's
        backend, with its workspace, limits and network (a full grant only, as for the
        shell); no CPU or wall-clock limit, since a server lives as long as its
        connection."""
        long_lived = dataclasses.replace(limits, cpu_s=float(7 * 86400),
                                         wall_s=float(7 * 86400))

        async def spawn(server: MCPServer) -> Child:
            assert server.command is not None
            backend = await self._backend(config.backend)
            if workspace not in self._prepared:
                await self.prepare(workspace)
            return await backend.spawn(server.command, workspace=workspace,
                                       network=network, env=server.env,
                                       limits=long_lived, cwd=server.cwd or ".")

        return spawn

    async def prepare(self, workspace: Path) -> None:
        """Create the workspace and make it the sandbox uid's (again after a restore
        wrote files as the daemon)."""
        def work() -> None:
            workspace.mkdir(parents=True, exist_ok=True, mode=0o700)
            prepare_workspace(workspace)

        await asyncio.to_thread(work)
        self._prepared.add(workspace)

    async def _backend(self, name: str | None) -> Backend:
        if name is None or name == "auto":
            assert self.default is not None, "Sandboxes.start() was not awaited"
            return self.default
        backend = self._backends.get(name)
        if backend is None:
            backend = await asyncio.to_thread(choose, name)
            self._backends[name] = backend
        return backend

    async def close_shells(self, shell_key: str) -> None:
        """Close a session's persistent shells (one per network grant)."""
        for suffix in ("net", "nonet"):
            await self.shells.close(f"{shell_key}/{suffix}")

    def forget(self, workspace: Path) -> None:
        self._prepared.discard(workspace)

    async def close(self) -> None:
        await self.shells.close_all()

    def health(self) -> dict[str, Any]:
        default = self.default
        return {"sandbox": default.name if default else "none",
                "sandbox_isolated": bool(default and default.isolated),
                "sandboxes": {name: reason or "ok" for name, reason in self.available.items()}}

