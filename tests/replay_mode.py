"""The replay mode of the test suite (``AGENTD_TEST_REPLAY``).

Every :class:`~agentd.assembly.Runtime` a test closes first replays every run it
finished (``Runtime.replay``: the run again from its log, no model call, no tool
run) and the test fails on a run whose replay does not match its original: a
determinism bug in the runtime. Runs a replay cannot take by design (never started,
steered, a team's, an adapter's, an agent paused, stopped or deleted, settings not
recorded) are skipped. See docs/contributing.md.

``AGENTD_TEST_REPLAY=1`` replays the runs of every test; a comma-separated list of
paths (``tests/runtime,tests/hooks``) those of the tests under them only, which is
what ``scripts/test.sh`` (so CI) sets by default: the directories whose tests drive
the run loop, at a cost the suite's time can carry. ``0`` or empty: none.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from typing import Any

from agentd.assembly import Runtime
from agentd.errors import AgentdError

__all__ = ["ENABLED", "replay_all", "replays", "selects", "wrap_close"]

_SETTING = os.environ.get("AGENTD_TEST_REPLAY", "").strip()
#: Whether any test replays its runs.
ENABLED = _SETTING not in ("", "0")


def selects(setting: str, nodeid: str) -> bool:
    """Whether ``setting`` (``AGENTD_TEST_REPLAY``'s value) has the test ``nodeid``
    (``tests/runtime/test_x.py::test_y``) replay its runs: ``1`` every test, a
    comma-separated list of folders or files the tests under them."""
    setting = setting.strip()
    if setting in ("", "0"):
        return False
    if setting == "1":
        return True
    path = nodeid.partition("::")[0]
    return any(path == p or path.startswith(p + "/")
               for p in (p.strip().rstrip("/") for p in setting.split(",")) if p)


def replays(nodeid: str) -> bool:
    """Whether the test ``nodeid`` replays the runs it made (this process's
    ``AGENTD_TEST_REPLAY``)."""
    return selects(_SETTING, nodeid)
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
