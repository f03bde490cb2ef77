"""``webhook`` checks: the facts POSTed, signed, to a host the operator allows; the
answer's JSON body is the verdict.

The URL passes :class:`agentd.security.hosts.HostRules` (``[hooks] allow_hosts``, the
same rules as outbound webhooks) when the agent is saved and again before every
request; the request goes to the address that was checked, never follows a redirect,
and is signed with Standard Webhooks headers (``webhook-id``, ``webhook-timestamp``,
``webhook-signature``) under the secret in ``[hooks] secret_env``'s variable.
"""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import orjson
from standardwebhooks import Webhook

from agentd.runtime.hooks import CheckCall, CheckFailed
from agentd.security.hosts import HostRules, Refused
from agentd.version import __version__

__all__ = ["MAX_ANSWER", "post"]

USER_AGENT = f"agentd-hooks/{__version__}"
#: The most of an answer read; a longer one is garbage.
MAX_ANSWER = 64 * 1024


def _headers(secret: str, delivery: str, body: str, now: float) -> dict[str, str]:
    timestamp = math.floor(now)
    try:
        signature = Webhook(secret).sign(delivery, datetime.fromtimestamp(timestamp, UTC),
                                         body)
    except Exception:  # (not base64: the operator's variable holds something else)
        raise CheckFailed("the signing secret ([hooks] secret_env) is not a "
                          "'whsec_' + base64 secret") from None
    return {"content-type": "application/json", "user-agent": USER_AGENT,
            "webhook-id": delivery, "webhook-timestamp": str(timestamp),
            "webhook-signature": signature}


async def post(client: httpx.AsyncClient, rules: HostRules, call: CheckCall,
               secret: str | None) -> Any:
    """The receiver's answer (parsed JSON); :class:`CheckFailed` for a refused URL,
    a network error, a non-2xx status or an answer that is not JSON."""
    url = call.check.url or ""
    if not secret:
        raise CheckFailed("no signing secret: the daemon's [hooks] secret_env variable "
                          "is not set")
    try:
        target = rules.check_url(url)
        address = await asyncio.to_thread(rules.address, target)
    except Refused as exc:
        # (the rules are the webhooks'; the list they read here is [hooks]')
        raise CheckFailed(f"refused: {exc}".replace("[webhooks] allow", "[hooks] allow")
                          ) from None
    except (OSError, UnicodeError) as exc:
        raise CheckFailed(f"cannot resolve the host of {url!r}: {exc}") from None
    parts = urlsplit(url)
    netloc = f"[{address}]" if ":" in address else address
    sent_to = urlunsplit((parts.scheme, f"{netloc}:{target.port}", parts.path or "/",
                          parts.query, ""))
    body = orjson.dumps(call.payload(), default=str).decode()
    headers = _headers(secret, f"hk_{uuid.uuid4().hex}", body, time.time())
    headers["host"] = parts.netloc.rpartition("@")[2]
    request = client.build_request(
        "POST", sent_to, content=body.encode(), headers=headers,
        timeout=call.check.timeout_s,
        extensions={"sni_hostname": target.host} if target.scheme == "https" else {})
    try:
        response = await client.send(request, stream=True)
        try:
            if not 200 <= response.status_code < 300:
                raise CheckFailed(f"the receiver answered HTTP {response.status_code}")
            answer = bytearray()
            async for chunk in response.aiter_bytes():
                answer += chunk
                if len(answer) > MAX_ANSWER:
                    raise CheckFailed(f"the answer is longer than {MAX_ANSWER} bytes")
        finally:
            await response.aclose()
    except httpx.HTTPError as exc:
        raise CheckFailed(f"{type(exc).__name__}: {exc}"[:300]) from None
    try:
        return orjson.loads(bytes(answer))
    except orjson.JSONDecodeError:
        raise CheckFailed("the answer is not JSON") from None
