"""The daemon's sandboxes: which backend runs commands, with what limits, per agent.

At start the daemon probes every backend (:func:`agentd.sandbox.backends.detect`) and
picks its default: the ``[sandbox] backend`` of the config, or with ``auto`` the
strongest that works here (gVisor, then bubblewrap; the process backend, which does
not isolate, only where neither works, with a loud warning). ``/health`` and
``agentd status`` say which. An agent may ask for another backend
(``settings.sandbox.backend``; refused at create if this daemon cannot run it) and
lower its limits (``settings.sandbox.limits``; the daemon's are the ceiling).

The network: the daemon's egress proxies (one per distinct grant, started on first
use, closed with the daemon) are the only way out of a sandbox, and every connection
an agent opens is checked with the operator's ``[sandbox] private_endpoints`` and the
daemon's own port (:mod:`agentd.sandbox.egress`).
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

from agentd.config import AgentSandbox, SandboxConfig
from agentd.errors import InvalidInput
from agentd.sandbox.backends import (
    Backend,
    Limits,
    ProcessBackend,
    choose,
    detect,
    prepare_workspace,
)
from agentd.sandbox.context import Sandbox
from agentd.sandbox.egress import EgressProxies, EgressRules
from agentd.sandbox.shell import ShellPool
from agentd.security.policy import Policy

__all__ = ["Sandboxes"]

log = logging.getLogger(__name__)


class Sandboxes:
    """Backends, limits and persistent shells. Owned by the runtime."""

    def __init__(self, config: SandboxConfig, *, daemon_ports: tuple[int, ...] = ()
                 ) -> None:
        self.config = config
        self.shells = ShellPool(idle_s=config.shell_idle_s)
        # Every connection an agent opens (commands through these proxies,
        # http_fetch directly) is checked with these rules.
        self.rules = EgressRules.of(config.private_endpoints,
                                    daemon_ports=(port for port in daemon_ports if port))
        self.egress = EgressProxies(self.rules)
        self._shell_keys: dict[str, set[str]] = {}
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
        if self.available.get(ProcessBackend.name) is None:
            why = await asyncio.to_thread(ProcessBackend.network_confinement)
            if why is not None:
                log.warning("SANDBOX: the process backend cannot give commands a network "
                            "namespace (%s): its commands share the host's network, and "
                            "a network grant is refused for them", why)

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
        sandbox = Sandbox(backend=backend, limits=limits,
                          network=tuple(network) if isinstance(network, tuple | list)
                          else bool(network), egress=self.egress, rules=self.rules,
                          shells=self.shells, shell_key=shell_key,
                          persistent_shell=config.persistent_shell)
        self._shell_keys.setdefault(shell_key, set()).add(sandbox.shell_suffix())
        return sandbox

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
        for suffix in self._shell_keys.pop(shell_key, set()) | {"net", "nonet"}:
            await self.shells.close(f"{shell_key}/{suffix}")

    def forget(self, workspace: Path) -> None:
        self._prepared.discard(workspace)

    async def close(self) -> None:
        await self.shells.close_all()
        await self.egress.close()

    def health(self) -> dict[str, Any]:
        default = self.default
        confined = (ProcessBackend.network_confinement()
                    if self.available.get(ProcessBackend.name) is None else None)
        return {"sandbox": default.name if default else "none",
                "sandbox_isolated": bool(default and default.isolated),
                # Where commands of the process backend cannot get a network
                # namespace: they share the host's network (a grant is refused).
                "sandbox_network": "confined" if confined is None else confined,
                "sandboxes": {name: reason or "ok" for name, reason in self.available.items()}}

