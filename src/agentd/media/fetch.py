"""Images and files given by URL, fetched by the daemon under the rules of ``http_fetch``.

A client may name an image by its URL (``{"type": "image", "url": ...}``, OpenAI's
``image_url``, an A2A file part's ``uri``). The daemon fetches it itself, as it
would for an agent's ``http_fetch``: every URL and every redirect is checked against
the operator's hosts (``[attachments] fetch_hosts``) and, before connecting, every
address its host resolves to by the egress check (:func:`agentd.sandbox.egress.check`:
no loopback, private, link-local or metadata address unless the operator lists that
endpoint in ``[sandbox] private_endpoints``, never the daemon's own port), and the
connection goes to the address checked, so a DNS answer that changes in between
cannot redirect it. The body is read up to the part's size limit and the whole fetch
is bounded in time. Every refusal is a 4xx naming the URL; ``data:`` URLs are decoded
here too.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from dataclasses import dataclass
from urllib.parse import unquote_to_bytes, urljoin, urlsplit, urlunsplit

import httpx

from agentd.errors import AgentdError, InvalidInput, PayloadTooLarge, ToolError
from agentd.sandbox.egress import EgressRules, Grant, check_async
from agentd.security.tls import tls_context

__all__ = ["Fetched", "UrlFetcher", "decode_base64", "decode_data_url"]

MAX_REDIRECTS = 5


@dataclass(frozen=True, slots=True)
class Fetched:
    data: bytes
    #: The media type the server (or the data URL) says, if any.
    media_type: str | None
    #: The URL's last path component (a file's name), if any.
    name: str | None = None


def decode_base64(text: str, where: str, limit: int) -> bytes:
    """Base64 (standard or URL-safe, padding optional) to bytes, refused over ``limit``
    bytes before decoding."""
    if len(text) > (limit // 3 + 2) * 4 + 64:
        raise PayloadTooLarge(f"{where}: over the limit of {limit} bytes per image or file")
    compact = "".join(text.split())
    try:
        if "-" in compact or "_" in compact:
            return base64.urlsafe_b64decode(compact + "=" * (-len(compact) % 4))
        return base64.b64decode(compact + "=" * (-len(compact) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput(f"{where}: not valid base64", code="invalid_media",
                           field=where) from None


def decode_data_url(url: str, where: str, limit: int) -> Fetched:
    """A ``data:`` URL's bytes and media type."""
    head, sep, body = url.partition(",")
    if not sep or not head.lower().startswith("data:"):
        raise InvalidInput(f"{where}: a data URL is data:<type>;base64,<data>",
                           code="invalid_media", field=where)
    params = head[5:].split(";")
    media_type = params[0].strip() or None
    if any(p.strip().lower() == "base64" for p in params[1:]):
        return Fetched(decode_base64(body, where, limit), media_type)
    data = unquote_to_bytes(body)
    if len(data) > limit:
        raise PayloadTooLarge(f"{where}: over the limit of {limit} bytes per image or file")
    return Fetched(data, media_type)


class UrlFetcher:
    """Fetches the URLs clients give (see the module's docstring)."""

    def __init__(self, *, rules: EgressRules, hosts: Grant = True, timeout_s: float = 20.0,
                 enabled: bool = True) -> None:
        self.rules = rules
        self.hosts = hosts
        self.timeout_s = timeout_s
        self.enabled = enabled

    async def fetch(self, url: str, where: str, limit: int) -> Fetched:
        """The bytes at ``url`` (``http``, ``https`` or ``data``), at most ``limit``."""
        if url[:5].lower() == "data:":
            return decode_data_url(url, where, limit)
        if not self.enabled:
            raise InvalidInput(f"{where}: this daemon does not fetch URLs "
                               "([attachments] fetch_urls); send the bytes",
                               code="url_refused", field=where)
        try:
            async with asyncio.timeout(self.timeout_s):
                return await self._fetch(url, where, limit)
        except TimeoutError:
            raise InvalidInput(f"{where}: {_shown(url)} did not answer within "
                               f"{self.timeout_s:g}s", code="url_failed",
                               field=where) from None

    async def _fetch(self, url: str, where: str, limit: int) -> Fetched:
        async with httpx.AsyncClient(follow_redirects=False, trust_env=False,
                                     verify=tls_context(), timeout=self.timeout_s) as client:
            for _ in range(MAX_REDIRECTS + 1):
                request = await self._request(client, url, where)
                try:
                    response = await client.send(request, stream=True)
                except httpx.HTTPError as exc:
                    raise InvalidInput(f"{where}: fetching {_shown(url)} failed: {exc}",
                                       code="url_failed", field=where) from None
                try:
                    location = response.headers.get("location")
                    if response.is_redirect and location:
                        url = urljoin(url, location)
                        continue
                    if response.status_code != 200:
                        raise InvalidInput(f"{where}: {_shown(url)} answered HTTP "
                                           f"{response.status_code}", code="url_failed",
                                           field=where)
                    data = await _body(response, where, limit)
                    name = urlsplit(url).path.rsplit("/", 1)[-1] or None
                    return Fetched(data, response.headers.get("content-type"), name)
                finally:
                    await response.aclose()
        raise InvalidInput(f"{where}: more than {MAX_REDIRECTS} redirects from "
                           f"{_shown(url)}", code="url_failed", field=where)

    async def _request(self, client: httpx.AsyncClient, url: str, where: str
                       ) -> httpx.Request:
        try:
            parts = urlsplit(url)
            hostname = parts.hostname
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            raise InvalidInput(f"{where}: not a valid URL: {url[:200]!r}",
                               code="url_refused", field=where) from None
        if parts.scheme not in ("http", "https") or not hostname:
            raise InvalidInput(f"{where}: not an http(s) or data URL: {_shown(url)}",
                               code="url_refused", field=where)
        host = hostname.lower()
        try:
            address = await check_async(host, port, self.hosts, self.rules)
        except ToolError as exc:
            # (The grant's wording is an agent's: the operator's setting here.)
            why = exc.message.replace("settings.policy.network",
                                      "[attachments] fetch_hosts")
            raise InvalidInput(f"{where}: {_shown(url)} refused: {why}",
                               code="url_refused", field=where) from None
        except AgentdError as exc:
            raise InvalidInput(f"{where}: {_shown(url)} refused: {exc.message}",
                               code="url_refused", field=where) from None
        netloc = f"[{address}]" if ":" in address else address
        target = urlunsplit((parts.scheme, f"{netloc}:{port}", parts.path or "/",
                             parts.query, ""))
        return client.build_request(
            "GET", target, headers={"Host": parts.netloc.rpartition("@")[2],
                                    "Accept": "image/*, application/pdf, text/*;q=0.5"},
            extensions={"sni_hostname": host} if parts.scheme == "https" else {})


async def _body(response: httpx.Response, where: str, limit: int) -> bytes:
    length = response.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise PayloadTooLarge(f"{where}: {int(length)} bytes, over the limit of {limit} "
                              "bytes per image or file")
    data = bytearray()
    async for chunk in response.aiter_bytes():
        data += chunk
        if len(data) > limit:
            raise PayloadTooLarge(f"{where}: over the limit of {limit} bytes per image "
                                  "or file")
    return bytes(data)


def _shown(url: str) -> str:
    """A URL as an error names it: no credentials, at most 200 characters."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return repr(url[:200])
    netloc = parts.netloc.rpartition("@")[2]
    shown = urlunsplit((parts.scheme, netloc, parts.path, "", ""))
    return shown if len(shown) <= 200 else shown[:200] + "..."
