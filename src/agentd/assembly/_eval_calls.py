"""The facade's calls on forks (:mod:`agentd.runtime.fork`). A part of
:class:`agentd.assembly.Runtime`, kept apart to keep that module readable."""

from __future__ import annotations

from typing import Any

from agentd.errors import NotFound
from agentd.runtime.fork import ForkRequest, Forks
from agentd.security.identity import Principal

__all__ = ["EvalCalls"]


class EvalCalls:
    """Delegations to the fork service the runtime builds."""

    forks: Forks

    async def fork_run(self, run_id: str, request: ForkRequest, *, wait: bool = True,
                   actor: Principal | None = None) -> dict[str, Any]:
        """Fork a finished run onto another configuration from one of its steps (see
        :mod:`agentd.runtime.fork`): the divergence report, once the fork's run has
        ended (``wait``), else as it stands."""
        fork_id, _ = await self.forks.start(run_id, request, actor=actor)
        return await self.forks.report(fork_id, wait=wait)

    async def fork_report(self, fork_id: str, *, wait: bool = False) -> dict[str, Any]:
        """A fork's divergence report (:meth:`Forks.report`)."""
        return await self.forks.report(fork_id, wait=wait)

    async def fork_agent(self, fork_id: str) -> str:
        """The name of the agent a fork belongs to (for scope checks)."""
        fork = await self.forks.store.get_fork(fork_id)
        if fork is None:
            raise NotFound(f"fork {fork_id!r} not found", code="fork_not_found")
        _, name, _ = await self.forks.store.run_context(fork.run_id)
        return name
