"""The key that seals secrets: from AGENTD_SECRETS_KEY or a file made 0600; a wrong,
malformed or exposed key is a clear error, never a value opened with the wrong key."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest

from agentd.errors import AgentdError
from agentd.secrets import KEY_ENV, Secrets
from agentd.store import open_store
from agentd.store.secrets import SecretStore

VALUE = "value-of-the-secret-1234"


async def _service(url: str, key_file: Path, environ: dict[str, str]) -> Secrets:
    store = await open_store(url)
    return Secrets(SecretStore(store.engine), key_file=key_file, environ=environ,
                   tenant_exists=lambda t: t == "default")


def _key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


async def test_the_key_from_the_environment_and_a_wrong_key(tmp_path: Path,
                                                            store_url: str) -> None:
    key = _key()
    first = await _service(store_url, tmp_path / "unused.key", {KEY_ENV: key})
    try:
        await first.set(name="K", value=VALUE, tenant="default", agent=None, actor="t",
                        role="admin")
        assert not (tmp_path / "unused.key").exists()  # the environment's key wins
        assert await first.resolve("K", tenant="default", agent="a", use="t") == VALUE
        # Another daemon with another key says so; it never opens the value.
        other = Secrets(first.store, key_file=tmp_path / "k", environ={KEY_ENV: _key()},
                        tenant_exists=lambda t: True)
        with pytest.raises(AgentdError, match="sealed with key") as caught:
            await other.resolve("K", tenant="default", agent="a", use="t")
        assert caught.value.code == "secrets_key_error"
        assert await other.values(tenant="default", agent="a") == {}
        # A row moved to another scope does not open there (the scope is sealed in).
        await first.store.engine.write(lambda tx: tx.execute(
            "UPDATE secrets SET tenant = 'acme' WHERE name = 'K'"))
        moved = Secrets(first.store, key_file=tmp_path / "k", environ={KEY_ENV: key},
                        tenant_exists=lambda t: True)
        with pytest.raises(AgentdError, match="does not open"):
            await moved.resolve("K", tenant="acme", agent="a", use="t")
    finally:
        await first.store.engine.close()


@pytest.mark.parametrize(("environ", "mode", "message"), [
    ({KEY_ENV: "not base64!!"}, None, "not base64"),
    ({KEY_ENV: base64.b64encode(b"short").decode()}, None, "holds 5 bytes"),
    ({}, 0o644, "may be read by others"),
])
async def test_a_bad_key_is_a_clear_error_and_nothing_is_written(
        tmp_path: Path, store_url: str, environ: dict[str, str], mode: int | None,
        message: str) -> None:
    key_file = tmp_path / "secrets.key"
    if mode is not None:
        key_file.write_text(_key())
        key_file.chmod(mode)
    service = await _service(store_url, key_file, environ)
    try:
        with pytest.raises(AgentdError, match=message) as caught:
            await service.set(name="K", value=VALUE, tenant="default", agent=None,
                              actor="t", role="admin")
        assert caught.value.code == "secrets_key_error"
        assert await service.listing() == []
    finally:
        await service.store.engine.close()
