"""A small Telegram Bot API client over httpx, that never lets the token out.

The token travels in every request's path (``/bot<token>/<method>``), so every error
this module raises is built from parts that cannot hold it (the method, the status,
Telegram's ``description``, the exception's type), and anything else is passed
through :func:`redact`. httpx's own request log lines are redacted by
:class:`RedactTokens`, installed on the ``httpx`` and ``httpcore`` loggers while the
channel runs.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from typing import Any

import httpx
import orjson

__all__ = ["BotAPI", "BotAPIError", "RedactTokens", "redact"]

_BOT_PATH = re.compile(r"/(?:file/)?bot[^/\s\"']+")


def redact(text: str, token: str | None = None) -> str:
    """``text`` with any Bot API path's token (and ``token`` anywhere) replaced."""
    if token:
        text = text.replace(token, "<token>")
    return _BOT_PATH.sub(lambda m: m.group(0).split("bot", 1)[0] + "bot<token>", text)


class RedactTokens(logging.Filter):
    """Rewrites log records whose text holds a Bot API path (httpx logs every
    request's URL at INFO)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            text = record.getMessage()
        except Exception:  # a record whose arguments do not format: left alone
            return True
        if "/bot" in text:
            record.msg, record.args = redact(text), None
        return True


@dataclass(kw_only=True)
class BotAPIError(Exception):
    """A Bot API call that failed. ``retry_after``: a 429's wait (seconds);
    ``permanent``: retrying the same call cannot help (a 4xx other than 429)."""

    method: str
    status: int | None
    description: str
    retry_after: float | None = None
    permanent: bool = False

    def __str__(self) -> str:
        status = f"HTTP {self.status}" if self.status is not None else "no answer"
        return f"{self.method}: {status}: {self.description}"


class BotAPI:
    """One bot's calls. ``token_env`` names the variable holding the token, read at
    each call (a changed token needs no restart)."""

    def __init__(self, client: httpx.AsyncClient, api_base: str, token_env: str, *,
                 timeout_s: float) -> None:
        self.client = client
        self.api_base = api_base.rstrip("/")
        self.token_env = token_env
        self.timeout_s = timeout_s

    def _token(self, method: str) -> str:
        token = os.environ.get(self.token_env, "").strip()
        if not token:
            raise BotAPIError(method=method, status=None, permanent=True,
                              description=f"the bot token variable {self.token_env} is "
                                          "not set where the daemon runs")
        return token

    async def call(self, method: str, payload: dict[str, Any]) -> Any:
        """One call; its ``result``, or :class:`BotAPIError`."""
        token = self._token(method)
        try:
            body = orjson.dumps(payload)
        except orjson.JSONEncodeError as exc:
            raise BotAPIError(method=method, status=None, permanent=True,
                              description=f"the call cannot be encoded: {exc}") from None
        try:
            response = await self.client.post(
                f"{self.api_base}/bot{token}/{method}", content=body,
                headers={"Content-Type": "application/json"}, timeout=self.timeout_s)
        except httpx.TimeoutException:
            raise BotAPIError(method=method, status=None,
                              description=f"no answer within {self.timeout_s:g} s") from None
        except httpx.HTTPError as exc:
            raise BotAPIError(method=method, status=None,
                              description=redact(f"{type(exc).__name__}: {exc}", token)
                              ) from None
        try:
            answer = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            answer = None
        if not isinstance(answer, dict):
            raise BotAPIError(method=method, status=response.status_code,
                              description="the answer is not a Bot API JSON object",
                              permanent=False)
        if response.status_code == 200 and answer.get("ok") is True:
            return answer.get("result")
        description = redact(str(answer.get("description") or "error")[:500], token)
        parameters = answer.get("parameters")
        retry_after = None
        if isinstance(parameters, dict) and isinstance(parameters.get("retry_after"),
                                                       int | float):
            retry_after = float(parameters["retry_after"])
        status = response.status_code
        raise BotAPIError(method=method, status=status, description=description,
                          retry_after=retry_after if status == 429 else None,
                          permanent=400 <= status < 500 and status != 429)

    async def download(self, file_path: str, write: Any, max_bytes: int) -> int:
        """Stream the file at ``file_path`` (from getFile) into ``write`` (called with
        each chunk), refusing more than ``max_bytes``; the bytes written."""
        token = self._token("download")
        size = 0
        try:
            async with self.client.stream(
                    "GET", f"{self.api_base}/file/bot{token}/{file_path}",
                    timeout=self.timeout_s) as response:
                if response.status_code != 200:
                    raise BotAPIError(method="download", status=response.status_code,
                                      description="the file could not be downloaded",
                                      permanent=400 <= response.status_code < 500
                                      and response.status_code != 429)
                async for chunk in response.aiter_bytes():
                    size += len(chunk)
                    if size > max_bytes:
                        raise BotAPIError(method="download", status=200, permanent=True,
                                          description=f"larger than {max_bytes} bytes")
                    await write(chunk)
        except httpx.TimeoutException:
            raise BotAPIError(method="download", status=None,
                              description=f"no answer within {self.timeout_s:g} s") from None
        except httpx.HTTPError as exc:
            raise BotAPIError(method="download", status=None,
                              description=redact(f"{type(exc).__name__}: {exc}", token)
                              ) from None
        return size
