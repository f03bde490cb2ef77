"""The opt-in replay mode of the test suite (``AGENTD_TEST_REPLAY=1``).

Every :class:`~agentd.assembly.Runtime` a test closes first replays every run it
finished (``Runtime.replay``: the run again from its log, no model call, no tool
run) and the test fails on a run whose replay does not match its original: a
determinism bug in the runtime. Runs a replay cannot take by design (never started,
steered, a team's, an agent paused, stopped or deleted, settings not recorded) are
skipped. See docs/contributing.md.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from typing import Any

from agentd.assembly import Runtime
from agentd.errors import AgentdError

__all__ = ["ENABLED", "replay_all", "wrap_close"]

ENABLED = os.environ.get("AGENTD_TEST_REPLAY") == "1"
#: Refusals that say "this run is not for a replay", not "the runtime is wrong".
_SKIPPED = frozenset({
    "replay_unsupported", "replay_settings_unknown", "agent_paused", "agent_stopped",
    "agent_error", "agent_not_found", "run_not_found", "session_not_found",
    "shutting_down", "quota_exceeded", "run_in_flight"})


async def replay_all(runtime: Runtime) -> list[str]:
    """Replay every finished run of ``runtime`` (scratch sessions' aside); what did
    not match, one line each."""
    rows = await runtime.store.engine.read(lambda tx: tx.all(
        "SELECT r.id FROM runs r JOIN sessions s ON s.id = r.session_id WHERE r.status IN "
        "('completed', 'failed', 'cancelled', 'interrupted') AND r.started_at IS NOT NULL "
        "AND s.key NOT LIKE ? ORDER BY r.created_at, r.id", ("replay:%",)))
    problems: list[str] = []
    for (run_id,) in rows:
        try:
            answer = await runtime.replay(str(run_id))
        except AgentdError as exc:
            if exc.code not in _SKIPPED:
                problems.append(f"run {run_id}: replay refused: {exc.code}: {exc.message}")
            continue
        if not answer["matches"]:
            problems.append(f"run {run_id}: replay {answer['run_id']} differs: "
                            f"{answer['first_divergence']}")
    return problems


def wrap_close(found: list[str]) -> Callable[[Runtime], Awaitable[None]]:
    """``Runtime.close`` that replays the runtime's runs first (once), into ``found``."""
    close = Runtime.close

    async def replaying_close(self: Runtime) -> None:
        state: Any = self
        if not getattr(state, "_test_replayed", False) and self.accepting:
            state._test_replayed = True
            try:
                found.extend(await replay_all(self))
            except Exception as exc:  # the store gone with the test, a loop closed...
                found.append(f"replaying the runs failed: {type(exc).__name__}: {exc}")
        await close(self)

    return replaying_close
