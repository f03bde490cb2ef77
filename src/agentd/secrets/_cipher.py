"""The key that seals secrets at rest, and sealing with it (AES-256-GCM).

The key is 32 random bytes, given base64 in ``AGENTD_SECRETS_KEY`` or kept in a file
(``secrets_key_file``, default ``<home>/secrets.key``) made 0600 at first use. Each
value is sealed with a fresh 96-bit nonce, and its tenant, agent and name as associated
data: a sealed value moved to another row fails to open instead of serving another
scope. ``key_id`` (the first 16 hex digits of the key's SHA-256) tells which key
sealed a row, so a daemon started with another key says so instead of failing to open.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import stat
from collections.abc import Mapping
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = ["KEY_ENV", "Cipher", "SecretKeyError", "load_key"]

#: The environment variable that gives the key (base64 of 32 bytes) instead of a file.
KEY_ENV = "AGENTD_SECRETS_KEY"
_NONCE = 12


class SecretKeyError(Exception):
    """The key is missing, malformed, or not the one a value was sealed with."""


def _decode(text: str, where: str) -> bytes:
    try:
        key = base64.b64decode(text.strip().encode() + b"==", altchars=b"-_")
    except (binascii.Error, ValueError) as exc:
        raise SecretKeyError(f"{where} is not base64: {exc}") from None
    if len(key) != 32:
        raise SecretKeyError(f"{where} holds {len(key)} bytes; a secrets key is 32 "
                        "(make one with: python -c 'import secrets, base64; "
                        "print(base64.b64encode(secrets.token_bytes(32)).decode())')")
    return key


def load_key(path: Path, environ: Mapping[str, str]) -> bytes:
    """The key from ``environ[KEY_ENV]``, else from ``path`` (made, 0600, when it
    does not exist: only its owner may read it)."""
    text = environ.get(KEY_ENV)
    if text:
        return _decode(text, KEY_ENV)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            raise SecretKeyError(f"{path} may be read by others (mode {mode:o}): "
                            f"chmod 600 {path}") from None
        return _decode(path.read_text(), str(path))
    key = os.urandom(32)
    with os.fdopen(fd, "w") as file:
        file.write(base64.b64encode(key).decode() + "\n")
    return key


def _aad(tenant: str, agent: str, name: str) -> bytes:
    return b"\0".join((b"agentd-secret-v1", tenant.encode(), agent.encode(),
                       name.encode()))


class Cipher:
    """Seals and opens values with one key."""

    def __init__(self, key: bytes) -> None:
        self._aead = AESGCM(key)
        self.key_id = hashlib.sha256(key).hexdigest()[:16]

    def seal(self, value: str, *, tenant: str, agent: str, name: str) -> str:
        nonce = os.urandom(_NONCE)
        sealed = self._aead.encrypt(nonce, value.encode(), _aad(tenant, agent, name))
        return base64.b64encode(nonce + sealed).decode()

    def open(self, sealed: str, *, key_id: str, tenant: str, agent: str, name: str) -> str:
        if key_id != self.key_id:
            raise SecretKeyError(f"secret {name!r} was sealed with key {key_id}, and this "
                            f"daemon's key is {self.key_id} (every node sharing a "
                            f"database needs the same key: {KEY_ENV} or "
                            "secrets_key_file)")
        raw = base64.b64decode(sealed)
        try:
            return self._aead.decrypt(raw[:_NONCE], raw[_NONCE:],
                                      _aad(tenant, agent, name)).decode()
        except InvalidTag:
            raise SecretKeyError(f"secret {name!r} does not open with this daemon's key "
                            "(changed in the database?)") from None
