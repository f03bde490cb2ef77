"""SQLite's process-wide configuration, set once by the daemon before it opens a
database (:func:`tune_sqlite`).

Debian's SQLite, like most distributions', is built in serialized mode with memory
statistics on. Every call into the library then takes the connection's mutex, and
every allocation and free takes the allocator's mutex to keep the statistics: a
waited echo turn's two commits took and released SQLite's mutexes about 370 times
(callgrind: 178,595 ``sqlite3_mutex_enter`` in the writer thread for 480 turns).
The daemon needs neither:

* **multi-thread mode** (``SQLITE_CONFIG_MULTITHREAD``): a connection is used by one
  thread at a time. The engine's connections are: the writer's is used by the
  writer thread (or the event loop), each reader thread has its own, the checkpoint
  thread its own. SQLite keeps its process-wide mutexes (the open files' list that
  WAL's locks between connections rely on); only the per-connection ones go.
* **no memory statistics** (``SQLITE_CONFIG_MEMSTATUS`` off): nothing here reads
  ``sqlite3_memory_used`` or sets a soft heap limit.

Together they took the writer thread's instructions a turn from about 474,000 to
430,000 (``bench/instructions.py --paths echo_load --threads``; docs/benchmarks.md).

The configuration can only be changed while the library is shut down (Python's
``sqlite3`` initializes it on import), so :func:`tune_sqlite` shuts it down first:
it must run before any connection is opened in the process, which is why only the
daemon's entry point calls it (``agentd.server.daemon.run``), not the engine: a
process that embeds the store (the tests, a benchmark) keeps SQLite as it was built.
"""

from __future__ import annotations

import ctypes
import logging

__all__ = ["tune_sqlite"]

log = logging.getLogger(__name__)

#: ``sqlite3_config`` options (sqlite3.h).
_CONFIG_MULTITHREAD = 2
_CONFIG_MEMSTATUS = 9
_OK = 0


def _library() -> ctypes.CDLL | None:
    """The SQLite that Python's ``sqlite3`` uses: looked up through its extension
    module, whose handle resolves symbols in the module and then in the libraries
    it links (the system's libsqlite3, or the copy built into the module)."""
    try:
        import _sqlite3

        return ctypes.CDLL(_sqlite3.__file__)
    except (ImportError, OSError, AttributeError, TypeError):
        return None


def tune_sqlite() -> bool:
    """Put SQLite in multi-thread mode with its memory statistics off (see the
    module's docstring); True when both took. Call it once, before anything in the
    process opens a database; it changes nothing (False) where the library cannot be
    reached or refuses."""
    lib = _library()
    if lib is None:
        log.debug("SQLite left as built: its library could not be reached")
        return False
    try:
        shutdown, config, initialize = (lib.sqlite3_shutdown, lib.sqlite3_config,
                                        lib.sqlite3_initialize)
    except AttributeError:
        log.debug("SQLite left as built: sqlite3_config is not exported")
        return False
    for function in (shutdown, config, initialize):
        function.restype = ctypes.c_int
    if shutdown() != _OK:
        log.debug("SQLite left as built: it could not be shut down")
        return False
    try:
        threads = int(config(ctypes.c_int(_CONFIG_MULTITHREAD)))
        memstatus = int(config(ctypes.c_int(_CONFIG_MEMSTATUS), ctypes.c_int(0)))
    finally:
        initialized = int(initialize())
    if initialized != _OK:  # (the next connection initializes it again, or says why)
        log.warning("SQLite did not initialize again after its configuration (%d)",
                    initialized)
    tuned: bool = threads == _OK and memstatus == _OK
    if not tuned:
        log.debug("SQLite refused a setting (multi-thread %d, memstatus %d)", threads,
                  memstatus)
    return tuned
