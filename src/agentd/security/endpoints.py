"""Endpoints a credential of the operator's may be sent to: scheme, host and port.

A token the operator lists for a remote endpoint (``[a2a] remote_tokens``) goes to that
endpoint only, never to another port of the same host (another service, perhaps one
an agent started or a tenant runs) and never over plain http unless the operator
wrote ``http://``: a request the model aims elsewhere, or a network path that reads
plain text, must not carry it. So an entry is read as exactly one endpoint:

=========================  ==============================
``HOST``                   ``https://HOST:443``
``HOST:PORT``              ``https://HOST:PORT``
``https://HOST[:PORT]``    as written (443 by default)
``http://HOST[:PORT]``     plain http, as written (80)
=========================  ==============================

Anything else is refused when the config is read (a clear error, the daemon does not
start): a path, query or user name (the token would go to the whole endpoint, not to
what they seem to narrow it to), another scheme, a port out of range, ``HOST:80``
without a scheme (https on http's port: the operator most likely meant ``http://``,
which must be said), and two entries for the same endpoint.
"""

from __future__ import annotations

from urllib.parse import urlsplit

__all__ = ["endpoint", "endpoint_of"]

_DEFAULT_PORTS = {"https": 443, "http": 80}


def endpoint_of(scheme: str, host: str, port: int) -> str:
    """The canonical form ``scheme://host:port`` (host lower case, an IPv6 address in
    brackets) that an entry and a request URL are compared in."""
    host = host.lower()
    return f"{scheme.lower()}://{f'[{host}]' if ':' in host else host}:{port}"


def endpoint(text: str) -> str:
    """The canonical endpoint an entry names (see the module's table); ValueError
    saying what is wrong otherwise."""
    if not text or text != text.strip():
        raise ValueError(f"{text!r} is not an endpoint (HOST, HOST:PORT or "
                         "https://HOST:PORT; http://HOST:PORT for plain http)")
    explicit = "://" in text
    try:
        parts = urlsplit(text if explicit else f"https://{text}")
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"{text!r} is not an endpoint: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise ValueError(f"{text!r}: the scheme must be https or http")
    if not parts.hostname:
        raise ValueError(f"{text!r} names no host")
    if parts.username is not None or parts.password is not None:
        raise ValueError(f"{text!r}: an endpoint holds no user name or password")
    if parts.path not in ("", "/") or parts.query or parts.fragment or text.endswith("?"):
        raise ValueError(f"{text!r}: a token is listed for an endpoint (scheme, host and "
                         "port), not for a path or query: write the endpoint alone")
    if port == 0:
        raise ValueError(f"{text!r}: port 0 is no port")
    if not explicit and port == _DEFAULT_PORTS["http"]:
        raise ValueError(f"{text!r}: without a scheme an entry means https; write "
                         f"'http://{text}' to send the token over plain http (or "
                         f"'https://{text}')")
    return endpoint_of(scheme, parts.hostname, port or _DEFAULT_PORTS[scheme])
