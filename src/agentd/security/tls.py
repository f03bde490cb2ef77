"""The certificates the daemon's outbound HTTPS clients verify servers with.

httpx loads a CA bundle (certifi's) into a new SSL context for every client it makes,
about 15 ms of CPU each; the daemon makes a client per webhook service, Telegram
channel, ``http_fetch`` call and agent's model. :func:`tls_context` loads it once per
process and every client shares it (an ``SSLContext`` is safe to share between clients
and threads).
"""

from __future__ import annotations

import functools
import ssl

import httpx

__all__ = ["tls_context"]


@functools.cache
def tls_context(*, trust_env: bool = False) -> ssl.SSLContext:
    """What ``httpx.AsyncClient(trust_env=...)`` verifies with, made once per value:
    the default context with certifi's certificates, or with ``trust_env`` those of
    ``SSL_CERT_FILE`` / ``SSL_CERT_DIR`` when set (as the daemon started: read once)."""
    return httpx.create_ssl_context(trust_env=trust_env)
