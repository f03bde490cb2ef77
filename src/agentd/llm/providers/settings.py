"""Model settings shared by the providers: base URL, API key, retry hints (the
settings' types and ranges are :class:`~agentd.llm.settings.ModelSettings`'s).

Kept apart from the provider modules so that resolving one provider does not import
another provider's SDK.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping
from typing import Any

import aiohttp
from aiohttp import http_writer

from agentd.errors import InvalidModel
from agentd.llm.registry import ProviderInfo
from agentd.llm.settings import ModelSettings


def connection_cause(exc: BaseException) -> BaseException | None:
    """The connection error under ``exc`` that is not a timeout (a refused or reset
    connection, a name that does not resolve), if any. The SDKs' aiohttp transport
    reports every aiohttp connection error as httpx's ``ConnectTimeout`` (its map
    takes the first match), which the SDKs turn into a timeout: the cause says what
    it was."""
    cause = exc.__cause__ or exc.__context__
    for _ in range(8):
        if cause is None:
            return None
        if isinstance(cause, aiohttp.ClientConnectionError) and not isinstance(
                cause, TimeoutError):
            return cause
        cause = cause.__cause__ or cause.__context__
    return None

log = logging.getLogger(__name__)


def send_bodies_whole() -> None:
    """Let aiohttp hand a request's headers and body to the transport as they are
    (``writelines``) instead of joining them into one new string first.

    aiohttp joins them on every Python before 3.12.9 (``SKIP_WRITELINES``) to stay
    clear of a bug in the ``writelines`` that asyncio's own transports gained in 3.12.0
    to 3.12.8 and 3.13.0 to 3.13.1. Before 3.12 the stdlib's ``writelines`` is that
    very join, so the switch changes nothing there; uvloop's (the daemon's loop) sends
    the pieces with one ``writev``. The join is no small thing for a long session: its
    body is hundreds of kilobytes, a little larger at every call, so glibc maps fresh
    pages for each copy and the kernel zeroes them (a POST of 341 KB: 0.71 ms of the
    client's CPU with the join, 0.23 without; docs/design-notes.md, "One copy of the
    body, not two"). Only on a Python without the bug; called when a provider's client
    is made (no import-time side effects)."""
    if sys.version_info < (3, 12) and http_writer.SKIP_WRITELINES:
        http_writer.SKIP_WRITELINES = False

__all__ = [
    "api_key",
    "base_url",
    "env_prefix",
    "key_of",
    "model_settings",
    "refuse_inline_key",
    "retry_after",
]


def refuse_inline_key(settings: Mapping[str, Any]) -> None:
    if "api_key" in settings:
        raise InvalidModel(
            "settings.api_key is not allowed: settings are stored and shown by the API; "
            "put the key in an environment variable and name it in settings.api_key_env"
        )


def env_prefix(provider: ProviderInfo) -> str:
    return "AGENTD_" + provider.name.upper().replace("-", "_")


def base_url(provider: ProviderInfo, settings: ModelSettings) -> str | None:
    """``settings.base_url``, else ``AGENTD_<PROVIDER>_BASE_URL``, else the default."""
    env_name = f"{env_prefix(provider)}_BASE_URL"
    url = ((settings.base_url or "").strip() or os.environ.get(env_name, "").strip()
           or provider.base_url)
    if not url and provider.name == "openai-compatible":
        raise InvalidModel(
            "provider 'openai-compatible' needs a base URL: set settings.base_url "
            f"(for example 'http://127.0.0.1:8000/v1') or the {env_name} environment variable"
        )
    return url or None


def api_key(provider: ProviderInfo, settings: ModelSettings) -> str | None:
    """The key from the variable named by ``settings.api_key_env``, else the provider's."""
    configured = settings.api_key_env
    env_name = configured if configured is not None else provider.api_key_env
    if not env_name:
        return None
    key = os.environ.get(env_name, "").strip()
    # A key named explicitly in settings is required even where the provider needs none.
    if not key and (provider.needs_key or configured is not None):
        raise InvalidModel(
            f"provider {provider.name!r} needs an API key: set the {env_name} environment "
            "variable where the daemon runs"
        )
    return key or None


def key_of(provider: ProviderInfo, settings: ModelSettings) -> tuple[str | None, str | None]:
    """The API key for a model, and when it is needed but missing, what its calls are
    to say instead. Unlike :func:`api_key` this never raises: a model is built when an
    agent is saved, and "set the X variable" then would tell any token which of the
    daemon's variables exist. The calls fail (``model_auth``) without naming it; the
    daemon's log names it for the operator."""
    if provider.key_secret is not None:
        if provider.key is not None:
            return provider.key, None
        return None, (f"provider {provider.name!r} takes its key from the agent's secret "
                      f"{provider.key_secret!r}, which this run could not have (set it: "
                      "agentd secret set)")
    try:
        return api_key(provider, settings), None
    except InvalidModel as exc:
        log.warning("%s", exc.message)
        return None, (f"provider {provider.name!r} has no API key on this daemon (its "
                      "operator sets one; the daemon's log says which variable)")


def model_settings(settings: Mapping[str, Any]) -> ModelSettings:
    """The model-call keys of an agent's settings, checked (``agentd.llm.settings``);
    an inline key is refused first, saying where keys go."""
    refuse_inline_key(settings)
    return ModelSettings.pick(settings)


def retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds from ``retry-after-ms`` (OpenAI's, finer) or ``Retry-After``; None if
    absent or an HTTP date."""
    millis = headers.get("retry-after-ms")
    if millis is not None:
        try:
            return float(millis) / 1000.0
        except ValueError:
            pass
    raw = headers.get("retry-after")
    try:
        return float(raw) if raw is not None else None
    except ValueError:  # an HTTP date; the SDKs' own retries understand it
        return None
