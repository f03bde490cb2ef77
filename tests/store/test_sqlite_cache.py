"""The store's settings (``sqlite_writer``, ``sqlite_cache_mb``, ``pgvector``, and the
deprecated ``sqlite_synchronous``; ``[store] synchronous``: test_synchronous.py): typed
daemon settings, from ``agentd.toml`` or the same ``AGENTD_*`` variables as before,
checked when the settings are read and again by the engine; the writer's page cache set
on the writing connection only."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from agentd.config import Settings
from agentd.store import StoreOptions, engine_for_url
from agentd.store._sqlite import SqliteEngine


@pytest.mark.parametrize("value", ["0", "1", "-5", "abc", "65537", "1.5"])
def test_a_bad_cache_size_is_refused_naming_the_setting(
        value: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("AGENTD_SQLITE_CACHE_MB", value)
    with pytest.raises(ValidationError, match="sqlite_cache_mb"):
        Settings(home=tmp_path)


@pytest.mark.parametrize("value", [0, 1, 65537, True, "64"])
def test_the_engine_checks_the_cache_size_too(value: object, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="sqlite_cache_mb"):
        SqliteEngine(str(tmp_path / "a.db"), cache_mb=value)  # type: ignore[arg-type]


@pytest.mark.parametrize(("variable", "value"), [("AGENTD_SQLITE_SYNCHRONOUS", "SOMETIMES"),
                                                 ("AGENTD_SQLITE_WRITER", "fiber")])
def test_bad_modes_are_refused_naming_the_setting(
        variable: str, value: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValidationError, match=variable.removeprefix("AGENTD_").lower()):
        Settings(home=tmp_path)


def test_the_variables_reach_the_engine_in_any_case(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("AGENTD_SQLITE_SYNCHRONOUS", "full")
    monkeypatch.setenv("AGENTD_SQLITE_CACHE_MB", "8")
    monkeypatch.setenv("AGENTD_PGVECTOR", "0")
    settings = Settings(home=tmp_path)
    assert settings.pgvector is False
    engine = engine_for_url(f"sqlite:///{tmp_path}/a.db", settings.store_options())
    assert isinstance(engine, SqliteEngine)
    # FULL fsyncs each commit: its writer is a thread unless told otherwise.
    assert (engine.synchronous, engine.writer, engine.cache_mb) == ("FULL", "thread", 8)
    # NORMAL does not: its writer is the event loop's.
    normal = engine_for_url(f"sqlite:///{tmp_path}/b.db", StoreOptions(synchronous="normal"))
    assert isinstance(normal, SqliteEngine)
    assert (normal.synchronous, normal.writer, normal.cache_mb) == ("NORMAL", "loop", 64)


@pytest.mark.parametrize(("options", "pages"), [(StoreOptions(), -64 * 1024),
                                                (StoreOptions(sqlite_cache_mb=8), -8 * 1024)])
async def test_the_writer_gets_the_cache_and_readers_keep_the_default(
        options: StoreOptions, pages: int, tmp_path: Path) -> None:
    engine = engine_for_url(f"sqlite:///{tmp_path}/a.db", options)
    await engine.start()
    try:
        written = await engine.write(lambda tx: tx.all("PRAGMA cache_size"))
        read = await engine.read(lambda tx: tx.all("PRAGMA cache_size"))
    finally:
        await engine.close()
    assert written[0][0] == pages
    assert read[0][0] == -2000
