"""What a daemon's sandboxes did: how many started and how long each took to start, by
backend, and how many were killed, by reason. Counted by the backends (a few integer
additions a command), read by ``/metrics`` at scrape time.
"""

from __future__ import annotations

import bisect
from collections import Counter
from dataclasses import dataclass, field

__all__ = ["START_BUCKETS", "SandboxStats"]

#: Upper bounds (seconds) of the start-time histogram's buckets.
START_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass
class _Starts:
    #: Count per bucket of START_BUCKETS, then past the last (not cumulative).
    buckets: list[int] = field(default_factory=lambda: [0] * (len(START_BUCKETS) + 1))
    total_s: float = 0.0
    count: int = 0


class SandboxStats:
    """Counters of sandbox starts (by backend) and kills (by backend and reason)."""

    def __init__(self) -> None:
        self.starts: dict[str, _Starts] = {}
        self.failed_starts: Counter[str] = Counter()
        self.kills: Counter[tuple[str, str]] = Counter()

    def started(self, backend: str, seconds: float) -> None:
        starts = self.starts.get(backend)
        if starts is None:
            starts = self.starts[backend] = _Starts()
        starts.buckets[bisect.bisect_left(START_BUCKETS, seconds)] += 1
        starts.total_s += seconds
        starts.count += 1

    def start_failed(self, backend: str) -> None:
        self.failed_starts[backend] += 1

    def killed(self, backend: str, reason: str) -> None:
        self.kills[(backend, reason)] += 1
