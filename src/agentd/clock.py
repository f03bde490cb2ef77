"""The daemon's time: one object that every decision depending on time asks.

Wall time (epoch seconds, what is stored and shown), monotonic time (what intervals,
deadlines and cooldowns are measured in), sleeping, and timers. The daemon runs on
:data:`SYSTEM`, which is the standard library's. Tests give a
:class:`agentd.testing.FakeClock` instead and move time forward themselves, so logic
that waits minutes (schedules, heartbeats, idle agents, breakers, leases, the
housekeeper's jobs) is tested in no time and without sleeps whose length is a guess.

The runtime hands its clock to the parts it assembles (the composition root,
:class:`agentd.assembly.runtime.Runtime`); a part built alone takes :data:`SYSTEM`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, Protocol

__all__ = ["SYSTEM", "Clock", "SystemClock", "Timer", "wait_event", "wait_first"]


class Timer(Protocol):
    """A callback set to run later (:meth:`Clock.call_later`)."""

    def cancel(self) -> None: ...


class Clock(Protocol):
    """What time it is, and waiting for a time to come."""

    def time(self) -> float:
        """Wall-clock time, epoch seconds."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back (intervals and deadlines)."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` of this clock's time (0 or less: let others run once)."""
        ...

    def call_later(self, delay: float, callback: Callable[..., Any], *args: Any) -> Timer:
        """Call ``callback(*args)`` on the event loop after ``delay`` seconds."""
        ...


_time = time.time
_monotonic = time.monotonic


class SystemClock:
    """The real time: :mod:`time` and the running event loop's timers.

    ``time`` and ``monotonic`` are the standard library's functions themselves, not
    methods calling them: a turn asks the clock about ten times."""

    time = staticmethod(_time)
    monotonic = staticmethod(_monotonic)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(seconds, 0.0))

    def call_later(self, delay: float, callback: Callable[..., Any], *args: Any) -> Timer:
        loop = asyncio.get_running_loop()
        # The loop's own clock is monotonic too: a timer set here fires when
        # ``monotonic()`` has moved ``delay`` on.
        return loop.call_later(max(delay, 0.0), callback, *args)

    def __repr__(self) -> str:
        return "SystemClock()"


#: The clock the daemon runs on.
SYSTEM: Clock = SystemClock()


async def wait_event(clock: Clock, event: asyncio.Event, seconds: float) -> bool:
    """Wait until ``event`` is set or ``seconds`` of ``clock`` pass; whether it
    was set (:func:`asyncio.wait_for` on the clock's time)."""
    return await wait_first(clock, [event], seconds)


async def wait_first(clock: Clock, events: list[asyncio.Event], seconds: float) -> bool:
    """Wait until one of ``events`` is set or ``seconds`` of ``clock`` pass;
    whether one was set."""
    if any(event.is_set() for event in events):
        return True
    if seconds <= 0:
        await asyncio.sleep(0)
        return any(event.is_set() for event in events)
    done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()

    def finish(value: bool) -> None:
        if not done.done():
            done.set_result(value)

    def woken(task: asyncio.Future[Any]) -> None:
        if not task.cancelled():
            finish(True)

    waits = [asyncio.ensure_future(event.wait()) for event in events]
    for waiting in waits:
        waiting.add_done_callback(woken)
    timer = clock.call_later(seconds, finish, False)
    try:
        return await done
    finally:
        timer.cancel()
        for waiting in waits:
            waiting.cancel()
