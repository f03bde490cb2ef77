"""Shared fixtures: settings under a temp home, stores on SQLite and PostgreSQL, a runtime."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import quote

import psycopg
import pytest

from agentd.config import Settings
from agentd.llm.scripted import clear_queue
from agentd.runtime import Runtime
from agentd.sandbox import prepare_workspace
from agentd.security.tokens import read_token
from agentd.store import Store, open_store

PG_URL = os.environ.get("AGENTD_TEST_POSTGRES_URL")


@pytest.fixture(autouse=True)
def _isolate(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    # No test reads the developer's ~/.agentd or real provider keys.
    monkeypatch.setenv("AGENTD_HOME", str(tmp_path / "home"))
    for var in ("AGENTD_TOKEN", "AGENTD_DATABASE_URL", "AGENTD_URL", "OPENAI_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    clear_queue()
    yield
    clear_queue()


def bearer(settings: Settings) -> dict[str, str]:
    """The Authorization header with the bootstrap token ``create_app`` made in the
    settings' home (call it after building the app); none when the settings name
    tokens of their own (the test sends them itself)."""
    if settings.tokens:
        return {}
    token = read_token(settings.home)
    assert token, "no bootstrap token: build the app first"
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    """An empty workspace, the sandbox's own (given to its uid under root)."""
    root = tmp_path / "ws"
    root.mkdir(mode=0o700)
    prepare_workspace(root)
    return root


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(home=tmp_path / "home", demo_agent=False, shutdown_grace_s=2.0)


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL schema per test (skipped without AGENTD_TEST_POSTGRES_URL)."""
    if not PG_URL:
        pytest.skip("AGENTD_TEST_POSTGRES_URL is not set")
    schema = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    sep = "&" if "?" in PG_URL else "?"
    yield f"{PG_URL}{sep}options={quote(f'-csearch_path={schema}')}"
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'agentd.db'}"
    url: str = request.getfixturevalue("pg_url")
    return url


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[Store]:
    st = await open_store(store_url)
    yield st
    await st.close()


@pytest.fixture
async def runtime(settings: Settings, store_url: str) -> AsyncIterator[Runtime]:
    settings.database_url = store_url
    rt = await Runtime.open(settings)
    yield rt
    await rt.close()
