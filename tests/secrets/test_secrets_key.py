"""The key that seals secrets: from AGENTD_SECRETS_KEY or a file made 0600; a wrong,
malformed or exposed key is a clear error, never a value opened with the wrong key."""

from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import Any

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


async def test_an_agents_values_are_kept_a_while_and_changes_here_seen_at_once(
        tmp_path: Path, store_url: str) -> None:
    """The values a run's redaction preloads are read once per agent and
    ``VALUES_TTL_S`` (not once per run); a secret set or deleted through this daemon
    is seen by the next run at once; another daemon's change within the period."""
    from agentd.secrets.service import VALUES_TTL_S
    from agentd.testing import FakeClock

    clock = FakeClock()
    store = await open_store(store_url)
    reads: list[tuple[str, str]] = []
    secret_store = SecretStore(store.engine)
    usable = secret_store.usable

    async def counted(*, tenant: str, agent: str) -> Any:
        reads.append((tenant, agent))
        return await usable(tenant=tenant, agent=agent)

    secret_store.usable = counted  # type: ignore[method-assign]
    here = Secrets(secret_store, key_file=tmp_path / "k", environ={KEY_ENV: _key()},
                   tenant_exists=lambda t: True, clock=clock.time)
    elsewhere = Secrets(SecretStore(store.engine), key_file=tmp_path / "k",
                        environ=dict(here.environ), tenant_exists=lambda t: True)
    try:
        assert await here.values(tenant="default", agent="a") == {}
        assert await here.values(tenant="default", agent="a") == {}
        assert reads == [("default", "a")]
        await here.set(name="K", value=VALUE, tenant="default", agent=None, actor="t",
                       role="admin")
        assert await here.values(tenant="default", agent="a") == {"K": VALUE}
        await elsewhere.set(name="L", value=VALUE + "-2", tenant="default", agent=None,
                            actor="t", role="admin")
        assert await here.values(tenant="default", agent="a") == {"K": VALUE}
        await clock.advance(VALUES_TTL_S)
        assert await here.values(tenant="default", agent="a") == {
            "K": VALUE, "L": VALUE + "-2"}
        await here.delete(name="K", tenant="default", agent=None, actor="t", role="admin")
        assert await here.values(tenant="default", agent="a") == {"L": VALUE + "-2"}
    finally:
        await store.engine.close()
