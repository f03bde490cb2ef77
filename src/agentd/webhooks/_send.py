"""One attempt at one delivery: signed, sent to the address that was checked, its
outcome (delivered, or when to try again) worked out.

Signing follows Standard Webhooks (https://www.standardwebhooks.com/), with its
reference implementation (the ``standardwebhooks`` package): ``webhook-id`` (the
delivery id, the same on every attempt), ``webhook-timestamp`` (this attempt's time,
epoch seconds) and ``webhook-signature`` (``v1,`` + base64 HMAC-SHA256 under the
subscription's secret of ``id.timestamp.body``). A receiver that checks the signature
and refuses a timestamp more than a few minutes off cannot be replayed an old request.
"""

from __future__ import annotations

import asyncio
import email.utils
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urlsplit, urlunsplit

import httpx
from standardwebhooks import Webhook

from agentd.security.hosts import HostRules, Refused
from agentd.version import __version__

__all__ = ["Outcome", "attempt", "backoff_s", "retry_after_s", "sign"]

USER_AGENT = f"agentd-webhooks/{__version__}"
_ERROR_MAX = 500


@dataclass(frozen=True, slots=True)
class Outcome:
    delivered: bool
    status_code: int | None = None
    error: str | None = None
    #: Seconds the receiver asked to wait (``Retry-After``), if it did.
    retry_after_s: float | None = None


def sign(secret: str, delivery: str, timestamp: int, body: str) -> str:
    """The ``webhook-signature`` header of ``body`` sent as ``delivery`` at ``timestamp``."""
    return Webhook(secret).sign(delivery, datetime.fromtimestamp(timestamp, UTC), body)


def headers_for(secret: str, delivery: str, body: str, now: float) -> dict[str, str]:
    timestamp = math.floor(now)
    return {"content-type": "application/json", "user-agent": USER_AGENT,
            "webhook-id": delivery, "webhook-timestamp": str(timestamp),
            "webhook-signature": sign(secret, delivery, timestamp, body)}


def retry_after_s(value: str | None, now: float) -> float | None:
    """A ``Retry-After`` header (seconds, or an HTTP date) as seconds from ``now``."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(float(when.timestamp()) - now, 0.0)


def backoff_s(failures: int, *, base_s: float, max_s: float,
              rand: Callable[[], float]) -> float:
    """The wait after the ``failures``-th failed attempt in a row: exponential, capped,
    with half of it random (so receivers that come back are not hit all at once)."""
    full: float = min(max_s, base_s * float(2 ** min(max(failures - 1, 0), 60)))
    return full / 2 + rand() * full / 2


def _cut(text: str) -> str:
    return text if len(text) <= _ERROR_MAX else text[:_ERROR_MAX - 1] + "…"


async def attempt(client: httpx.AsyncClient, rules: HostRules, *, url: str, secret: str,
                  delivery: str, body: str, timeout_s: float,
                  clock: Callable[[], float] = time.time,
                  traceparent: str | None = None) -> Outcome:
    """Send one attempt, within ``timeout_s`` from resolving the host to the answer's
    status; never raises for what the network or the receiver does. ``traceparent``:
    the W3C header to send (the event's run in its trace)."""
    try:
        async with asyncio.timeout(timeout_s):
            return await _attempt(client, rules, url=url, secret=secret,
                                  delivery=delivery, body=body, timeout_s=timeout_s,
                                  clock=clock, traceparent=traceparent)
    except TimeoutError:
        return Outcome(delivered=False, error=f"no answer within {timeout_s:g}s")


async def _attempt(client: httpx.AsyncClient, rules: HostRules, *, url: str, secret: str,
                   delivery: str, body: str, timeout_s: float,
                   clock: Callable[[], float], traceparent: str | None) -> Outcome:
    try:
        target = rules.check_url(url)
        # (a lookup that hangs is left to its thread when the timeout cuts it off)
        address = await asyncio.to_thread(rules.address, target)
    except Refused as exc:
        return Outcome(delivered=False, error=_cut(f"refused: {exc}"))
    except (OSError, UnicodeError) as exc:
        return Outcome(delivered=False, error=_cut(f"cannot resolve {url!r}: {exc}"))
    parts = urlsplit(url)
    netloc = f"[{address}]" if ":" in address else address
    sent_to = urlunsplit((parts.scheme, f"{netloc}:{target.port}", parts.path or "/",
                          parts.query, ""))
    headers = headers_for(secret, delivery, body, clock())
    headers["host"] = parts.netloc.rpartition("@")[2]
    if traceparent:
        headers["traceparent"] = traceparent
    request = client.build_request(
        "POST", sent_to, content=body.encode(), headers=headers,
        timeout=timeout_s,
        extensions={"sni_hostname": target.host} if target.scheme == "https" else {})
    try:
        response = await client.send(request, stream=True)
        # The answer's body is not read (it is the receiver's, and unbounded).
        await response.aclose()
    except httpx.HTTPError as exc:
        return Outcome(delivered=False, error=_cut(f"{type(exc).__name__}: {exc}"))
    code = response.status_code
    if 200 <= code < 300:
        return Outcome(delivered=True, status_code=code)
    return Outcome(delivered=False, status_code=code, error=f"HTTP {code}",
                   retry_after_s=retry_after_s(response.headers.get("retry-after"),
                                               clock()))
