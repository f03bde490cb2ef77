"""A door's SDK-backed part, built on the door's first request.

Importing the A2A and MCP SDKs took about two thirds of the daemon's start-up
(docs/benchmarks.md, "Daemon start-up"), for doors most daemons never open. A door
mounts its routes up front with thin handlers that ask a :class:`Lazy` for the
SDK-backed objects: the first ask imports them in a worker thread (the event loop
keeps serving meanwhile), then builds them on the loop; every later ask is an
attribute read. See docs/design-notes.md.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["Lazy"]

M = TypeVar("M")
T = TypeVar("T")


class Lazy(Generic[M, T]):
    """``build(load())``, once: ``load`` (the imports) runs in a worker thread,
    ``build`` (making the objects, cheap) on the event loop.

    Concurrent first asks each wait for the import (Python's import lock makes the
    later ones wait for the first and share its modules); the first back builds, and
    the rest find it built: nothing between the check and the assignment yields to
    the loop, so it is built once. A failed import raises to the request that asked
    (answered as an internal error) and is tried again by the next one.
    """

    def __init__(self, load: Callable[[], M], build: Callable[[M], T]) -> None:
        self._load = load
        self._build = build
        self._value: T | None = None

    @property
    def built(self) -> T | None:
        """The built value, None before the first ask completes."""
        return self._value

    async def get(self) -> T:
        value = self._value
        if value is None:
            loaded = await asyncio.to_thread(self._load)
            value = self._value
            if value is None:
                value = self._value = self._build(loaded)
        return value
