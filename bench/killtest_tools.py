"""Tools with observable side effects, for the kill test (``bench/killtest.py``).

The daemon loads this module with ``AGENTD_TOOL_MODULES='["killtest_tools"]'`` (and
``bench/`` on ``PYTHONPATH``). Each mutating tool appends the effect id of its call to
a file under ``$AGENTD_KILLTEST_DIR``, so the harness can count, after any number of
``kill -9``, how many times each side effect really happened:

- ``record_once`` (not idempotent) appends to ``effects.log``: an effect id must never
  appear there twice;
- ``record_idem`` (idempotent) appends to ``idem.log``: duplicates are allowed, but the
  effect of every call whose run completed must be there;
- ``peek`` (read-only) reads both files and changes nothing.

Each line is written with one ``write`` on an ``O_APPEND`` descriptor and fsynced
before the tool returns, after a random 0-50 ms pause that widens the window in which
a kill finds the call started but not finished.
"""

from __future__ import annotations

import os
import random
import time
from pathlib import Path

from agentd.errors import ToolError
from agentd.tools import ToolContext, tool

EFFECTS_LOG = "effects.log"
IDEM_LOG = "idem.log"
MAX_PAUSE_S = 0.05


def _dir() -> Path:
    raw = os.environ.get("AGENTD_KILLTEST_DIR")
    if not raw:
        raise ToolError("AGENTD_KILLTEST_DIR is not set")
    return Path(raw)


def _append(name: str, effect_id: str) -> None:
    time.sleep(random.uniform(0.0, MAX_PAUSE_S))
    fd = os.open(_dir() / name, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, f"{effect_id}\n".encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def _lines(name: str) -> int:
    try:
        with (_dir() / name).open("rb") as handle:
            return sum(1 for _ in handle)
    except FileNotFoundError:
        return 0


@tool(timeout_s=10)
def record_once(ctx: ToolContext, note: str = "") -> str:
    """Record a side effect that must happen at most once (not idempotent).

    Args:
        note: free text, ignored.
    """
    _append(EFFECTS_LOG, ctx.effect_id)
    return f"recorded {ctx.effect_id}"


@tool(idempotent=True, timeout_s=10)
def record_idem(ctx: ToolContext, note: str = "") -> str:
    """Record a side effect that is safe to repeat with the same effect id.

    Args:
        note: free text, ignored.
    """
    _append(IDEM_LOG, ctx.effect_id)
    return f"recorded {ctx.effect_id}"


@tool(read_only=True, timeout_s=10)
def peek() -> dict[str, int]:
    """Count the side effects recorded so far (changes nothing)."""
    return {"effects": _lines(EFFECTS_LOG), "idem": _lines(IDEM_LOG)}
