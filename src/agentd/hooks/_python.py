"""``python`` checks: callables the operator allows, resolved once and called."""

from __future__ import annotations

import asyncio
import copy
import fnmatch
import importlib
import inspect
import re
from collections.abc import Sequence
from concurrent.futures import Executor
from typing import Any

from agentd.runtime.hooks import CheckCall, CheckFailed

__all__ = ["allowed", "call_python", "resolve"]

_DOTTED = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*\Z")


def parse(spec: str) -> tuple[str, str] | None:
    module, sep, name = spec.strip().partition(":")
    if not sep or not _DOTTED.match(module) or not _DOTTED.match(name):
        return None
    return module, name


def allowed(spec: str, allow: Sequence[str]) -> str | None:
    """Why ``spec`` may not be named (None: it may)."""
    parts = parse(spec)
    if parts is None:
        return (f"{spec!r} is not MODULE:NAME (a dotted module path and a name, e.g. "
                "'my_checks:no_secrets')")
    target = f"{parts[0]}:{parts[1]}"
    if not any(fnmatch.fnmatchcase(target, pattern) for pattern in allow):
        return (f"{target} is not a callable this daemon allows: the operator lists them "
                "in [hooks] allow (agentd.toml)")
    return None


def resolve(spec: str, allow: Sequence[str]) -> Any:
    """The callable ``spec`` names, if the operator allows it; :class:`CheckFailed`
    otherwise (the allow list may have changed since the agent was saved)."""
    why = allowed(spec, allow)
    if why is not None:
        raise CheckFailed(why)
    parts = parse(spec)
    assert parts is not None
    module, name = parts
    try:
        obj: Any = importlib.import_module(module)
        for part in name.split("."):
            obj = getattr(obj, part)
    except Exception as exc:  # an allowed module that does not import: say why
        raise CheckFailed(f"{module}:{name} cannot be loaded: {type(exc).__name__}: "
                          f"{exc}") from None
    if not callable(obj):
        raise CheckFailed(f"{module}:{name} is not callable")
    return obj


async def call_python(fn: Any, call: CheckCall, threads: Executor) -> Any:
    """``fn(point, facts)``, awaited if it is a coroutine function; a sync one in one of
    ``threads`` (the checks' own: one that hangs is left to its thread when the check's
    timeout cuts it off, and holds no thread the rest of the daemon needs). The facts
    are the check's own copy: changing them changes nothing of the call."""
    facts = copy.deepcopy(call.payload())
    if inspect.iscoroutinefunction(fn):
        return await fn(call.point, facts)
    result = await asyncio.get_running_loop().run_in_executor(threads, fn, call.point, facts)
    if inspect.isawaitable(result):
        return await result
    return result
