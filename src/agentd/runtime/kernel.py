"""The kernel's failure handling: a retry policy and a circuit breaker per provider.

The provider SDKs' own retries are off (``max_retries=0``): every retry goes back
through the scheduler (so a retried call waits its turn and respects the rate limits
like any other) and every failure is seen by the provider's breaker. The policy:

- **Retry** what can succeed later (connection errors, timeouts, 5xx, 529, 429 rate
  limits), never what cannot (authentication, spend limits, invalid requests): jittered
  exponential backoff ("full jitter": a random delay up to ``base * 2**attempt``,
  capped), and never sooner than the provider's ``Retry-After``.
- **Breaker** per provider endpoint: ``failures`` transient failures in a row open it;
  while open no call is sent; after ``cooldown_s`` one call goes through as a probe
  (half-open): success closes the breaker, failure opens it again for twice as long
  (up to ``max_cooldown_s``).

What to do when a call fails for good (fall back, park the run) is the model caller's
business (``runtime/calls.py``).
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass
from typing import Any

from agentd.clock import SYSTEM, Clock

__all__ = ["Breaker", "BreakerSettings", "RetryPolicy"]


@dataclass(frozen=True, kw_only=True, slots=True)
class RetryPolicy:
    """How often and how long to retry one model on transient errors."""

    #: Tries per model (1 = no retry).
    attempts: int = 3
    base_s: float = 0.5
    max_s: float = 30.0
    #: A ``Retry-After`` longer than this is not waited for: the call falls back.
    max_retry_after_s: float = 60.0

    def delay(self, attempt: int, retry_after: float | None = None) -> float | None:
        """Seconds to wait before try ``attempt + 1`` (``attempt`` counts from 0), or
        None when no try is left or the provider asks for a longer wait than allowed."""
        if attempt + 1 >= self.attempts:
            return None
        if retry_after is not None and retry_after > self.max_retry_after_s:
            return None
        jittered = random.uniform(0.0, min(self.max_s, self.base_s * 2 ** attempt))
        return max(jittered, retry_after or 0.0)


@dataclass(frozen=True, kw_only=True, slots=True)
class BreakerSettings:
    failures: int = 5
    cooldown_s: float = 30.0
    max_cooldown_s: float = 300.0


class Breaker:
    """A circuit breaker for one provider endpoint (closed, open, half-open)."""

    def __init__(self, name: str, settings: BreakerSettings, clock: Clock = SYSTEM) -> None:
        self.name = name
        self.clock = clock
        self.settings = settings
        self.state = "closed"
        self.consecutive = 0
        self.opened = 0
        self._open_until = 0.0
        self._cooldown = settings.cooldown_s
        self._probing = False
        self._changed = asyncio.Event()

    def allow(self) -> bool:
        """Whether a call may go out now. In half-open state one probe at a time."""
        if self.state == "closed":
            return True
        if self.state == "open" and self.clock.monotonic() >= self._open_until:
            self.state = "half_open"
        if self.state == "half_open" and not self._probing:
            self._probing = True
            return True
        return False

    def success(self) -> None:
        was = self.state
        self.consecutive = 0
        self._probing = False
        self._cooldown = self.settings.cooldown_s
        if was != "closed":
            self.state = "closed"
            self._signal()

    def failure(self) -> None:
        """A transient failure (the kind that says the provider is unwell)."""
        self.consecutive += 1
        if self.state == "half_open" or (self.state == "closed"
                                         and self.consecutive >= self.settings.failures):
            if self.state == "half_open":
                self._cooldown = min(self._cooldown * 2, self.settings.max_cooldown_s)
            self.state = "open"
            self.opened += 1
            self._probing = False
            self._open_until = self.clock.monotonic() + self._cooldown
            self._signal()

    def release_probe(self) -> None:
        """The probe ended without telling health either way (cancelled, or a
        non-transient error): let another call probe."""
        if self._probing:
            self._probing = False
            self._signal()

    def ready_in(self) -> float:
        """Seconds until a call may be tried (0 if now)."""
        if self.state == "closed" or (self.state == "half_open" and not self._probing):
            return 0.0
        if self.state == "open":
            return max(0.0, self._open_until - self.clock.monotonic())
        return self._cooldown  # a probe is out: its outcome will signal sooner

    def changed(self) -> asyncio.Event:
        """An event set at the breaker's next change of state."""
        return self._changed

    def _signal(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def snapshot(self) -> dict[str, Any]:
        return {"state": self.state, "consecutive_failures": self.consecutive,
                "opened": self.opened, "retry_in_s": round(self.ready_in(), 3)}
