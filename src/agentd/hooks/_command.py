"""``command`` checks: argv run in the agent's sandbox (no network), the facts as JSON
on stdin; the verdict is the JSON on its stdout."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import orjson

from agentd.errors import ToolError
from agentd.runtime.hooks import CheckCall, CheckFailed

__all__ = ["run_command"]


async def run_command(call: CheckCall) -> Any:
    """The command's verdict (parsed JSON); :class:`CheckFailed` when it cannot run,
    is killed, exits non-zero or prints something that is not JSON."""
    sandbox = call.sandbox
    backend = getattr(sandbox, "backend", None)
    if backend is None or call.workspace is None:
        why = getattr(sandbox, "unavailable", "") or "the agent has no sandbox here"
        raise CheckFailed(f"cannot run the command: {why}")
    limits = replace(sandbox.limits, wall_s=min(sandbox.limits.wall_s,
                                                call.check.timeout_s))
    stdin = orjson.dumps(call.payload(), default=str)
    try:
        result = await backend.run(list(call.check.command or ()), workspace=call.workspace,
                                   network=None, limits=limits, stdin=stdin)
    except ToolError as exc:
        raise CheckFailed(f"cannot run the command: {exc.message}") from None
    if result.killed is not None or result.exit_code is None:
        raise CheckFailed(f"the command was killed ({result.killed or 'no exit status'})")
    if result.exit_code != 0:
        raise CheckFailed(f"the command exited {result.exit_code}: "
                          f"{result.stderr.strip()[:200]}")
    if result.truncated:
        raise CheckFailed("the command's output was cut off at the sandbox's limit")
    try:
        return orjson.loads(result.stdout)
    except orjson.JSONDecodeError:
        raise CheckFailed(f"the command printed something that is not JSON: "
                          f"{result.stdout.strip()[:100]!r}") from None
