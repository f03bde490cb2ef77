"""SQLite's process-wide configuration (agentd.store.tune_sqlite), checked in a fresh
Python process each: it must run before anything opens a database, and it changes
the library for the whole process."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

#: Run in the child: opens a database through Python's sqlite3 (WAL, as the engine
#: does) and one through the library itself, and reports what the library says.
_PROBE = textwrap.dedent("""
    import ctypes, json, sqlite3, sys, threading, _sqlite3
    tuned = None
    if sys.argv[2] == "tune":
        from agentd.store import tune_sqlite
        tuned = tune_sqlite()
    path = sys.argv[1]
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, v TEXT)")
    errors = []

    def work(n):
        # One connection per thread, as the engine's threads have: writes and reads
        # of the same WAL database at once.
        try:
            own = sqlite3.connect(path, isolation_level=None, timeout=30)
            for i in range(200):
                own.execute("BEGIN IMMEDIATE")
                own.execute("INSERT INTO t (v) VALUES (?)", (f"{n}-{i}",))
                own.execute("COMMIT")
                own.execute("SELECT count(*) FROM t").fetchone()
            own.close()
        except Exception as exc:
            errors.append(repr(exc))

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    rows = conn.execute("SELECT count(*) FROM t").fetchone()[0]
    lib = ctypes.CDLL(_sqlite3.__file__)
    lib.sqlite3_memory_used.restype = ctypes.c_int64
    lib.sqlite3_db_mutex.restype = ctypes.c_void_p
    db = ctypes.c_void_p()
    assert lib.sqlite3_open_v2(b":memory:", ctypes.byref(db), 6, None) == 0
    mutex = lib.sqlite3_db_mutex(db)
    lib.sqlite3_close(db)
    print(json.dumps({"tuned": tuned, "rows": rows, "errors": errors,
                      "memory_used": lib.sqlite3_memory_used(),
                      "connection_mutex": mutex is not None}))
""")


def _probe(tmp_path: Path, mode: str) -> dict[str, object]:
    done = subprocess.run([sys.executable, "-c", _PROBE, str(tmp_path / f"{mode}.db"), mode],
                          capture_output=True, text=True, timeout=120, check=True)
    result: dict[str, object] = json.loads(done.stdout)
    return result


def test_tuned_sqlite_drops_the_connection_mutex_and_the_memory_statistics(
        tmp_path: Path) -> None:
    tuned = _probe(tmp_path, "tune")
    assert tuned["tuned"] is True
    # Multi-thread mode: a connection has no mutex of its own.
    assert tuned["connection_mutex"] is False
    # No memory statistics: the library counts nothing.
    assert tuned["memory_used"] == 0
    # Connections of their own in four threads at once, one WAL database: every
    # write landed, nothing failed.
    assert tuned["errors"] == []
    assert tuned["rows"] == 800


def test_sqlite_as_built_keeps_both(tmp_path: Path) -> None:
    """The control: without tune_sqlite the same probe sees the library's defaults
    (so the checks above can fail)."""
    plain = _probe(tmp_path, "plain")
    assert plain["tuned"] is None
    assert plain["connection_mutex"] is True
    assert isinstance(plain["memory_used"], int) and plain["memory_used"] > 0
    assert plain["errors"] == [] and plain["rows"] == 800
