"""The stub LLM server's capacity model: what it admits, and how soon it answers.

See :mod:`agentd.testing.stub_llm` for the model as a user sees it. Admission is
decided under one lock for every wire format; an admitted call's response is wrapped
so that it waits out the latency and holds its slot until it has been sent.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from agentd.testing._wire import RateLimit, Wire

__all__ = ["Admitted", "Capacity", "Limiter", "StubStats", "estimate_tokens"]


_LimitName = Literal["concurrency", "rpm", "tpm"]


@dataclass(frozen=True, kw_only=True)
class Capacity:
    """A provider's fixed capacity: what the stub admits, and how soon it answers.

    Attributes:
        concurrency: Calls served at once; one more gets a 429. None: no limit.
        latency_s: Seconds before the first byte of an admitted answer.
        rpm: Requests per minute. None: no limit.
        tpm: Tokens per minute (prompt estimate plus the requested output tokens,
            counted at admission). None: no limit.
        burst_s: Seconds of each rate the token buckets hold.
        count_rejected: Whether a rejected call still takes a request token.
    """

    concurrency: int | None = None
    latency_s: float = 0.0
    rpm: float | None = None
    tpm: float | None = None
    burst_s: float = 1.0
    count_rejected: bool = True

    def __post_init__(self) -> None:
        if self.concurrency is not None and self.concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if not self.latency_s >= 0:
            raise ValueError("latency_s must be 0 or more")
        for name, limit in (("rpm", self.rpm), ("tpm", self.tpm)):
            if limit is not None and not limit > 0:
                raise ValueError(f"{name} must be more than 0")
        if not self.burst_s > 0:
            raise ValueError("burst_s must be more than 0")


@dataclass(frozen=True, kw_only=True)
class StubStats:
    """Admission counts since the server started or ``reset_stats()``."""

    accepted: int = 0
    #: Calls the capacity model answered with a 429.
    rejected: int = 0
    #: Those 429s by the limit that refused them: ``concurrency``, ``rpm``, ``tpm``.
    rejected_by: dict[str, int] = field(
        default_factory=lambda: {"concurrency": 0, "rpm": 0, "tpm": 0}
    )
    max_in_flight: int = 0
    in_flight: int = 0


class _Bucket:
    """A token bucket refilled at ``per_minute / 60`` a second, holding ``burst_s`` of it."""

    def __init__(self, per_minute: float, burst_s: float, *, at_least: float, now: float) -> None:
        self.per_minute = per_minute
        self.rate = per_minute / 60
        self.size = max(self.rate * burst_s, at_least)
        self.level = self.size
        self.stamp = now

    def _level(self, cost: float, now: float) -> float:
        # A request bigger than the bucket is let in once the bucket holds all it needs.
        return min(max(self.size, cost), self.level + (now - self.stamp) * self.rate)

    def wait(self, cost: float, now: float) -> float:
        """Seconds until ``cost`` can be taken; 0 if it can be now."""
        return max(0.0, (cost - self._level(cost, now)) / self.rate)

    def take(self, cost: float, now: float) -> None:
        # Rejected calls that still count can overdraw the bucket, by one bucket at most.
        self.level = max(-self.size, self._level(cost, now) - cost)
        self.stamp = now

    def state(self, name: Literal["requests", "tokens"], now: float) -> RateLimit:
        level = self._level(0.0, now)
        return RateLimit(name=name, limit=round(self.per_minute),
                         remaining=max(0, math.floor(level)),
                         reset_s=max(0.0, (self.size - level) / self.rate))


@dataclass(frozen=True, kw_only=True)
class _Verdict:
    """Admission's answer: a slot to hold, or why not and the 429's headers."""

    slot: int | None
    headers: dict[str, str]
    latency_s: float = 0.0
    message: str = ""


def estimate_tokens(body: dict[str, Any]) -> int:
    """Prompt characters / 4 (messages, and Anthropic's system) plus the output asked for."""
    chars = len(orjson.dumps(body.get("messages", [])))
    if "system" in body:
        chars += len(orjson.dumps(body["system"]))
    out = body.get("max_completion_tokens", body.get("max_tokens"))
    if isinstance(out, bool) or not isinstance(out, int):
        out = 0
    return -(-chars // 4) + max(0, out)


class Limiter:
    """The capacity model and the admission counts, shared by every wire format."""

    def __init__(self, capacity: Capacity | None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._capacity: Capacity | None = None
        self._rpm: _Bucket | None = None
        self._tpm: _Bucket | None = None
        #: Slot id -> when its latency ends.
        self._slots: dict[int, float] = {}
        self._ids = itertools.count(1)
        self._accepted = 0
        self._rejected_by = {"concurrency": 0, "rpm": 0, "tpm": 0}
        self._max_in_flight = 0
        self.capacity = capacity

    @property
    def capacity(self) -> Capacity | None:
        return self._capacity

    @capacity.setter
    def capacity(self, capacity: Capacity | None) -> None:
        now = self._clock()
        with self._lock:
            self._capacity = capacity
            self._rpm = self._tpm = None
            if capacity is not None and capacity.rpm is not None:
                self._rpm = _Bucket(capacity.rpm, capacity.burst_s, at_least=1, now=now)
            if capacity is not None and capacity.tpm is not None:
                self._tpm = _Bucket(capacity.tpm, capacity.burst_s, at_least=0, now=now)

    def stats(self) -> StubStats:
        with self._lock:
            return StubStats(accepted=self._accepted, rejected=sum(self._rejected_by.values()),
                             rejected_by=dict(self._rejected_by),
                             max_in_flight=self._max_in_flight, in_flight=len(self._slots))

    def reset_stats(self) -> None:
        with self._lock:
            self._accepted = 0
            self._rejected_by = dict.fromkeys(self._rejected_by, 0)
            self._max_in_flight = len(self._slots)

    def release(self, slot: int) -> None:
        with self._lock:
            self._slots.pop(slot, None)

    def admit(self, wire: Wire, body: dict[str, Any]) -> _Verdict:
        now = self._clock()
        with self._lock:
            capacity, rpm, tpm = self._capacity, self._rpm, self._tpm
            cost = estimate_tokens(body) if tpm is not None else 0
            full = (capacity is not None and capacity.concurrency is not None
                    and len(self._slots) >= capacity.concurrency)
            # Checked first: a call that could never be let in is told so, whatever else.
            too_large = tpm is not None and cost > tpm.per_minute
            refused: _LimitName | None = None
            if too_large:
                refused = "tpm"
            elif full:
                refused = "concurrency"
            elif rpm is not None and rpm.wait(1, now) > 0:
                refused = "rpm"
            elif tpm is not None and tpm.wait(cost, now) > 0:
                refused = "tpm"
            if refused is None:
                if rpm is not None:
                    rpm.take(1, now)
                if tpm is not None:
                    tpm.take(cost, now)
                latency = capacity.latency_s if capacity is not None else 0.0
                slot = next(self._ids)
                self._slots[slot] = now + latency
                self._accepted += 1
                self._max_in_flight = max(self._max_in_flight, len(self._slots))
                return _Verdict(slot=slot, headers=self._headers(wire, now),
                                latency_s=latency)
            assert capacity is not None  # nothing is refused without a capacity model
            self._rejected_by[refused] += 1
            if capacity.count_rejected and rpm is not None:
                rpm.take(1, now)
            headers = self._headers(wire, now)
            if too_large:
                headers["x-should-retry"] = "false"
                message = (f"stub capacity: request too large on tokens per min (TPM): Limit "
                           f"{capacity.tpm:g}, Requested {cost}. The input or output tokens "
                           "must be reduced in order to run successfully.")
                return _Verdict(slot=None, headers=headers, message=message)
            waits = [rpm.wait(1, now) if rpm is not None else 0.0,
                     tpm.wait(cost, now) if tpm is not None else 0.0]
            if full:
                waits.append(min(self._slots.values()) - now)
            wait = max(waits)
            # Rounded up, as providers send it; the epsilon keeps 2.0000000001 at 2.
            headers["retry-after"] = str(max(1, math.ceil(wait - 1e-9)))
            return _Verdict(slot=None, headers=headers,
                            message=_refusal(refused, capacity, cost, wait))

    def _headers(self, wire: Wire, now: float) -> dict[str, str]:
        states = []
        if self._rpm is not None:
            states.append(self._rpm.state("requests", now))
        if self._tpm is not None:
            states.append(self._tpm.state("tokens", now))
        return wire.ratelimit_headers(states) if states else {}


def _refusal(refused: _LimitName, capacity: Capacity, cost: int, wait: float) -> str:
    if refused == "concurrency":
        return (f"stub capacity: too many concurrent requests (limit {capacity.concurrency})."
                f" Please try again in {wait:.3g}s.")
    if refused == "rpm":
        return (f"stub capacity: rate limit reached on requests per min (RPM): Limit "
                f"{capacity.rpm:g}, Requested 1. Please try again in {wait:.3g}s.")
    return (f"stub capacity: rate limit reached on tokens per min (TPM): Limit "
            f"{capacity.tpm:g}, Requested {cost}. Please try again in {wait:.3g}s.")


async def _disconnected_within(receive: Receive, seconds: float) -> bool:
    """Wait ``seconds``; True as soon as the client disconnects instead."""

    async def disconnect() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass

    try:
        await asyncio.wait_for(disconnect(), seconds)
    except TimeoutError:
        return False
    return True


class Admitted(Response):
    """An admitted call's response: sent after the latency, its slot held until it is."""

    def __init__(
        self,
        inner: Response,
        *,
        latency_s: float,
        headers: dict[str, str],
        release: Callable[[], None],
    ) -> None:
        # Not Response.__init__: the inner response owns the status, headers and body.
        self.status_code = inner.status_code
        self.background = None
        self.inner = inner
        self.latency_s = latency_s
        self.raw_headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
        self.release = release

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start" and self.raw_headers:
                message = {**message, "headers": [*message.get("headers", []), *self.raw_headers]}
            await send(message)

        try:
            if self.latency_s > 0 and await _disconnected_within(receive, self.latency_s):
                return
            await self.inner(scope, receive, send_with_headers)
        finally:
            self.release()
