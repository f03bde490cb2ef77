"""``[store] synchronous`` through the real daemon (``agentd serve``, a process of its
own, reading agentd.toml): the level its store's connection reports (``GET
/v1/overview``, ``store.synchronous``), the deprecated variable, and a level the store
does not take stopping ``agentd serve`` with one line and nothing written."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.conftest import free_port
from tests.daemons import WAIT_S, Daemon, ForkServer, Spawn

pytestmark = pytest.mark.e2e

STORE = '[store]\nsynchronous = "{}"\n'


def _overview_level(daemon: Daemon) -> str:
    with daemon.client() as client:
        overview = client.get("/v1/overview")
        assert overview.status_code == 200, overview.text
        level: str = overview.json()["store"]["synchronous"]
        return level


def _configure(home: Path, toml: str) -> None:
    home.mkdir(mode=0o700, exist_ok=True)
    (home / "agentd.toml").write_text(toml)


@pytest.mark.parametrize(("toml", "level"), [
    ("", "FULL"),  # the default: every commit synced before it is acknowledged
    (STORE.format("normal"), "NORMAL"),
])
def test_a_sqlite_daemon_runs_at_the_level_of_its_config_file(
        spawn: Spawn, home: Path, toml: str, level: str) -> None:
    _configure(home, toml)
    daemon = spawn()
    assert _overview_level(daemon) == level
    assert f"store: sqlite, synchronous = {level}" in daemon.log()
    assert "is deprecated" not in daemon.log()


@pytest.mark.postgres
def test_a_postgresql_daemon_runs_at_the_level_of_its_config_file(
        spawn: Spawn, home: Path, pg_url: str) -> None:
    _configure(home, STORE.format("off"))
    # (a node id of its own: the harness reads no settings of a PostgreSQL home)
    daemon = spawn(env={"AGENTD_DATABASE_URL": pg_url, "AGENTD_NODE_ID": "pg-node"})
    assert _overview_level(daemon) == "off"
    assert "store: postgresql, synchronous = off" in daemon.log()


def test_the_deprecated_variable_still_sets_the_level_and_says_so_once(
        spawn: Spawn) -> None:
    daemon = spawn(env={"AGENTD_SQLITE_SYNCHRONOUS": "normal"})
    assert _overview_level(daemon) == "NORMAL"
    warnings = [line for line in daemon.log().splitlines() if "is deprecated" in line]
    assert len(warnings) == 1, warnings
    assert "WARNING" in warnings[0]
    assert "sqlite_synchronous (AGENTD_SQLITE_SYNCHRONOUS) is deprecated" in warnings[0]
    assert "set synchronous in [store] instead" in warnings[0]


PG_ELSEWHERE = {"AGENTD_DATABASE_URL": "postgresql://agentd@127.0.0.1:1/agentd"}


@pytest.mark.parametrize(("toml", "env", "line"), [
    (STORE.format("remote_apply"), {},
     "store.synchronous: 'remote_apply' is a PostgreSQL level, but the store in use is "
     "SQLite (database_url); SQLite takes NORMAL, FULL"),
    (STORE.format("FULL"), PG_ELSEWHERE,
     "store.synchronous: 'FULL' is a SQLite level, but the store in use is PostgreSQL "
     "(database_url); PostgreSQL takes remote_apply, on, remote_write, local, off"),
    (STORE.format("EXTRA"), {},
     "store.synchronous: EXTRA syncs exactly what FULL syncs in WAL mode (the only mode "
     "agentd uses): use FULL"),
    (STORE.format("NORMAL"), {"AGENTD_SQLITE_SYNCHRONOUS": "FULL"},
     "store.synchronous = 'NORMAL' and the deprecated sqlite_synchronous = 'FULL' "
     "(AGENTD_SQLITE_SYNCHRONOUS) disagree: remove sqlite_synchronous"),
])
def test_a_level_the_store_does_not_take_stops_serve_with_one_line(
        tmp_path: Path, home: Path, toml: str, env: dict[str, str], line: str) -> None:
    _configure(home, toml)
    log = tmp_path / "serve.log"
    environment = Daemon(home, log, env=env, args=()).env
    proc = ForkServer.get().start(["serve", "--port", str(free_port())],
                                  env=environment, cwd=tmp_path, log_path=log)
    assert proc.wait(timeout=WAIT_S) != 0
    output = log.read_text().strip()
    assert output == f"error: invalid agentd configuration: {line}", output
    # Nothing written: no database, no token, no pid file.
    assert sorted(p.name for p in home.iterdir()) == ["agentd.toml"]
