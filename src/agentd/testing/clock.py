"""A clock the test moves: virtual time for everything that waits on :mod:`agentd.clock`.

Give it to the runtime (``Runtime.open(settings, clock=clock)``) or to a part alone,
then move time with :meth:`FakeClock.advance`: every timer and sleeper whose time has
come runs, in time order, each with the clock reading its own deadline, and the event
loop is given the turns to follow up on them before the next. An hour of schedules,
heartbeats, idle agents and leases passes in milliseconds and the same way every time.
Nothing moves on its own: a sleeper waits until the test advances past its deadline.

What ran is then checked by waiting for it (``wait_until``), and "nothing happened"
after waiting for the runtime to be idle (``await runtime.housekeeper.idle()``), never
by sleeping.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Callable
from typing import Any

__all__ = ["FakeClock"]

#: 2026-01-01T00:00:00Z: a fixed start, so what a test prints is the same every run.
DEFAULT_START = 1_767_225_600.0
#: Loop turns given to woken tasks after each timer (they are in-memory steps; a task
#: waiting on I/O is waited for by the test, not by the clock).
_TURNS = 20


class _Timer:
    __slots__ = ("args", "callback", "cancelled", "when")

    def __init__(self, when: float, callback: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self.when = when
        self.callback = callback
        self.args = args
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class FakeClock:
    """Virtual wall and monotonic time, timers and sleeps.

    Args:
        start: the wall time to begin at (epoch seconds).
    """

    def __init__(self, start: float = DEFAULT_START) -> None:
        self._start = start
        self._elapsed = 0.0
        self._timers: list[tuple[float, int, _Timer]] = []
        self._order = itertools.count()

    # -- the Clock protocol ----------------------------------------------------------

    def time(self) -> float:
        return self._start + self._elapsed

    def monotonic(self) -> float:
        # Far from 0, as a real monotonic clock is: "0 means never" checks stay honest.
        return 100_000.0 + self._elapsed

    @property
    def now(self) -> float:
        """The wall time. Setting it jumps there without running any timer (for a part
        the test drives by hand, calling its methods); back is allowed for the wall
        time, as a real wall clock may step back, while monotonic time stays put."""
        return self.time()

    @now.setter
    def now(self, wall: float) -> None:
        step = wall - self.time()
        if step >= 0:
            self._elapsed += step
        else:
            self._start += step

    def call_later(self, delay: float, callback: Callable[..., Any], *args: Any) -> _Timer:
        timer = _Timer(self._elapsed + max(delay, 0.0), callback, args)
        heapq.heappush(self._timers, (timer.when, next(self._order), timer))
        return timer

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        future = asyncio.get_running_loop().create_future()
        timer = self.call_later(seconds, _resolve, future)
        try:
            await future
        finally:
            timer.cancel()

    # -- moving time -----------------------------------------------------------------

    @property
    def sleepers(self) -> int:
        """Timers and sleepers still waiting for their time."""
        return sum(1 for _, _, timer in self._timers if not timer.cancelled)

    def next_deadline(self) -> float | None:
        """Seconds from now to the next timer's time (None: nothing waits)."""
        live = [when for when, _, timer in self._timers if not timer.cancelled]
        return None if not live else max(min(live) - self._elapsed, 0.0)

    async def advance(self, seconds: float) -> None:
        """Move time ``seconds`` forward, running every timer whose time comes, in
        order, at its own time; a timer set by one of them inside the window runs too."""
        if seconds < 0:
            raise ValueError("time does not go back")
        await _turns()  # what the test just started reaches its first wait
        target = self._elapsed + seconds
        while self._timers and self._timers[0][0] <= target:
            when, _, timer = heapq.heappop(self._timers)
            if timer.cancelled:
                continue
            self._elapsed = max(self._elapsed, when)
            timer.callback(*timer.args)
            await _turns()
        self._elapsed = target
        await _turns()

    async def set(self, wall: float) -> None:
        """Advance to the wall time ``wall`` (epoch seconds)."""
        await self.advance(max(wall - self.time(), 0.0))

    def __repr__(self) -> str:
        return f"FakeClock(time={self.time():.3f}, sleepers={self.sleepers})"


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


async def _turns() -> None:
    for _ in range(_TURNS):
        await asyncio.sleep(0)
