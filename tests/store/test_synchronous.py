"""``[store] synchronous``: one setting, the dialect's own levels (SQLite's ``PRAGMA
synchronous``, PostgreSQL's ``synchronous_commit``), set on every connection the store
opens and read back from them; a level of the other dialect, an unknown one, and the
deprecated ``sqlite_synchronous`` disagreeing with it are refused when the settings
are read, naming what is wrong. (Through a real daemon: tests/e2e/test_synchronous_e2e.py.)
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from agentd.config import Settings, settings_problem
from agentd.settings.store import POSTGRES_LEVELS, SQLITE_LEVELS
from agentd.store import StoreOptions, Tx, _postgres, _sqlite, engine_for_url, open_store

#: What each dialect reports its level as.
_SHOW = {"sqlite": "PRAGMA synchronous", "postgresql": "SHOW synchronous_commit"}
_SQLITE_NAMES = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}


def _dialect(url: str) -> str:
    return "sqlite" if url.startswith("sqlite") else "postgresql"


def _level(tx: Tx, dialect: str) -> str:
    row = tx.one(_SHOW[dialect])
    assert row is not None
    value = row[0]
    return _SQLITE_NAMES[value] if dialect == "sqlite" else str(value)


async def _levels_of_every_connection(store: Any, dialect: str, readers: int
                                      ) -> list[str]:
    """The level the writing connection reports, then ``readers`` reading connections'
    (held at a barrier at once, so that each read is on a connection of its own)."""
    written = await store.engine.write(lambda tx: _level(tx, dialect))
    barrier = threading.Barrier(readers, timeout=60)

    def read(tx: Tx) -> str:
        barrier.wait()
        return _level(tx, dialect)

    read_back = await asyncio.gather(*(store.engine.read(read) for _ in range(readers)))
    return [written, *read_back]


async def _check_every_connection(url: str, level: str) -> None:
    store = await open_store(url, StoreOptions(synchronous=level.swapcase()))
    try:
        assert store.synchronous == level
        # SQLite: all four reader threads; PostgreSQL: four connections of the pool.
        seen = await _levels_of_every_connection(store, _dialect(url), readers=4)
    finally:
        await store.close()
    assert seen == [level] * 5


@pytest.mark.parametrize("level", ["NORMAL", "FULL"])
async def test_every_sqlite_connection_runs_at_the_level_asked(level: str, tmp_path: Path
                                                               ) -> None:
    await _check_every_connection(f"sqlite:///{tmp_path}/a.db", level)


@pytest.mark.postgres
@pytest.mark.parametrize("level", ["off", "local", "on"])
async def test_every_postgresql_connection_runs_at_the_level_asked(level: str, pg_url: str
                                                                   ) -> None:
    await _check_every_connection(pg_url, level)


@pytest.mark.postgres
async def test_postgresql_runs_at_on_whatever_the_connection_string_says(
        pg_url: str) -> None:
    """The server's, the role's or the URL's default is not agentd's: without a level
    set it runs at ``on`` (here the URL asks for ``off`` for every session)."""
    url = pg_url + "%20-csynchronous_commit%3Doff"
    store = await open_store(url)
    try:
        seen = await _levels_of_every_connection(store, "postgresql", readers=3)
        assert store.synchronous == "on"
    finally:
        await store.close()
    assert seen == ["on"] * 4


async def test_a_sqlite_store_without_a_level_syncs_every_commit(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # tests/conftest.py runs the suite's stores at NORMAL: undone, the default is the
    # product's again (this test reads no settings: nothing else undone matters).
    monkeypatch.undo()
    store = await open_store(f"sqlite:///{tmp_path}/a.db")
    try:
        seen = await _levels_of_every_connection(store, "sqlite", readers=2)
    finally:
        await store.close()
    assert seen == ["FULL"] * 3
    # FULL waits on the disk: its writes run on a thread of their own.
    assert getattr(store.engine, "writer", None) == "thread"


@pytest.mark.parametrize(("url", "level", "message"), [
    ("sqlite:///{tmp}/a.db", "remote_apply", "SQLite's synchronous must be NORMAL or FULL"),
    ("sqlite:///{tmp}/a.db", "EXTRA", "SQLite's synchronous must be NORMAL or FULL"),
    ("sqlite:///{tmp}/a.db", "OFF", "SQLite's synchronous must be NORMAL or FULL"),
    ("postgresql://127.0.0.1/none", "FULL", "PostgreSQL's synchronous must be one of"),
    ("postgresql://127.0.0.1/none", "sometimes", "PostgreSQL's synchronous must be one of"),
])
def test_an_engine_refuses_a_level_its_dialect_has_not(
        url: str, level: str, message: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=message):
        engine_for_url(url.format(tmp=tmp_path), StoreOptions(synchronous=level))


def test_the_settings_and_the_engines_take_the_same_levels() -> None:
    assert set(SQLITE_LEVELS) == set(_sqlite.LEVELS)
    assert set(POSTGRES_LEVELS) == set(_postgres.LEVELS)


# -- the settings ------------------------------------------------------------------------


def _settings(home: Path, toml: str = "", **env: str) -> Settings:
    with pytest.MonkeyPatch.context() as mp:
        for name, value in env.items():
            mp.setenv(name, value)
        home.mkdir(parents=True, exist_ok=True)
        (home / "agentd.toml").write_text(toml)
        return Settings(_env_file=None)  # type: ignore[call-arg]


def _problem(home: Path, toml: str = "", **env: str) -> str:
    """What reading the settings says is wrong with ``toml`` and ``env``."""
    with pytest.raises(ValidationError) as caught:
        _settings(home, toml, **env)
    return settings_problem(caught.value)


PG = {"AGENTD_DATABASE_URL": "postgresql://agentd@db.internal/agentd"}


@pytest.mark.parametrize(("toml", "env", "expected"), [
    ('[store]\nsynchronous = "remote_apply"\n', {},
     "store.synchronous: 'remote_apply' is a PostgreSQL level, but the store in use is "
     "SQLite (database_url); SQLite takes NORMAL, FULL"),
    ('[store]\nsynchronous = "FULL"\n', PG,
     "store.synchronous: 'FULL' is a SQLite level, but the store in use is PostgreSQL "
     "(database_url); PostgreSQL takes remote_apply, on, remote_write, local, off"),
    ('[store]\nsynchronous = "off"\n', {},
     "store.synchronous: OFF is refused on SQLite: an OS crash or power loss can corrupt "
     "the database"),
    ('[store]\nsynchronous = "extra"\n', {},
     "store.synchronous: EXTRA syncs exactly what FULL syncs in WAL mode"),
    ('[store]\nsynchronous = "sometimes"\n', PG,
     "store.synchronous: unknown level 'sometimes': SQLite takes NORMAL, FULL; PostgreSQL "
     "takes remote_apply, on, remote_write, local, off"),
    ('[store]\nsynchronous = 2\n', {}, "store.synchronous: Input should be a valid string"),
    ('[store]\nsync = "FULL"\n', {}, "store.sync: Extra inputs are not permitted"),
    ("", {"AGENTD_STORE": '{"synchronous": "on"}'},
     "store.synchronous: 'on' is a PostgreSQL level, but the store in use is SQLite"),
    ('sqlite_synchronous = "OFF"\n', {}, "sqlite_synchronous: OFF is refused on SQLite"),
    ('sqlite_synchronous = "FULL"\n[store]\nsynchronous = "NORMAL"\n', {},
     "store.synchronous = 'NORMAL' and the deprecated sqlite_synchronous = 'FULL' "
     "(AGENTD_SQLITE_SYNCHRONOUS) disagree: remove sqlite_synchronous"),
    ('[store]\nsynchronous = "on"\n', {**PG, "AGENTD_SQLITE_SYNCHRONOUS": "FULL"},
     "store.synchronous = 'on' and the deprecated sqlite_synchronous = 'FULL' "
     "(AGENTD_SQLITE_SYNCHRONOUS) disagree"),
])
def test_a_level_the_store_does_not_take_is_one_clear_line(
        toml: str, env: dict[str, str], expected: str, tmp_path: Path) -> None:
    problem = _problem(tmp_path / "home", toml, **env)
    assert problem.startswith(expected), problem
    assert "\n" not in problem and "Value error" not in problem


@pytest.mark.parametrize(("toml", "env", "asked"), [
    ("", {}, None),
    ('[store]\nsynchronous = "normal"\n', {}, "normal"),
    ("", {"AGENTD_STORE": '{"synchronous": "FULL"}'}, "FULL"),
    ('[store]\nsynchronous = "Remote_Apply"\n', PG, "Remote_Apply"),
    ('[store]\nsynchronous = "off"\n', PG, "off"),
])
def test_the_level_reaches_the_store(toml: str, env: dict[str, str], asked: str | None,
                                     tmp_path: Path) -> None:
    settings = _settings(tmp_path / "home", toml, **env)
    assert settings.store_options().synchronous == asked
    assert settings.deprecations() == []


@pytest.mark.parametrize(("toml", "env", "asked", "effect"), [
    ("", {"AGENTD_SQLITE_SYNCHRONOUS": "normal"}, "NORMAL",
     "it sets [store] synchronous = 'NORMAL'"),
    ('sqlite_synchronous = "EXTRA"\n', {}, "FULL", "it sets [store] synchronous = 'FULL'"),
    ('sqlite_synchronous = "FULL"\n[store]\nsynchronous = "full"\n', {}, "full",
     "it sets [store] synchronous = 'FULL'"),
    ("", {**PG, "AGENTD_SQLITE_SYNCHRONOUS": "FULL"}, None,
     "it has no effect on PostgreSQL"),
])
def test_the_deprecated_setting_still_works_and_says_so(
        toml: str, env: dict[str, str], asked: str | None, effect: str,
        tmp_path: Path) -> None:
    settings = _settings(tmp_path / "home", toml, **env)
    assert settings.store_options().synchronous == asked
    [warning] = settings.deprecations()
    assert warning.startswith("sqlite_synchronous (AGENTD_SQLITE_SYNCHRONOUS) is deprecated")
    assert effect in warning

