"""The operator's ``[store]``: how durable a commit is before it is acknowledged.

``synchronous`` is one setting whose values are the dialect's own: SQLite's
``PRAGMA synchronous`` (``NORMAL`` or ``FULL``; the database is always in WAL mode) or
PostgreSQL's ``synchronous_commit``. A level of the other dialect is refused at start,
naming the store in use (docs/operations.md, "Durability", says what each survives).
"""

from __future__ import annotations

from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, field_validator

__all__ = [
    "POSTGRES_LEVELS",
    "SQLITE_LEVELS",
    "StoreConfig",
    "asked_level",
    "check_level",
    "deprecations",
    "dialect_of",
    "store_level",
]

#: SQLite's levels, in WAL mode: ``NORMAL`` syncs the WAL at checkpoints only, ``FULL``
#: at every commit. ``EXTRA`` syncs exactly what ``FULL`` does in WAL mode, and ``OFF``
#: can corrupt the database on an OS crash or power loss: both are refused.
SQLITE_LEVELS = ("NORMAL", "FULL")
#: PostgreSQL's ``synchronous_commit``, strongest first (the last three differ from
#: ``on`` only where the server has synchronous standbys, ``off`` never corrupts).
POSTGRES_LEVELS = ("remote_apply", "on", "remote_write", "local", "off")

_NAMES = {"sqlite": "SQLite", "postgresql": "PostgreSQL"}
_REFUSED = {
    "EXTRA": "EXTRA syncs exactly what FULL syncs in WAL mode (the only mode agentd "
             "uses): use FULL",
    "OFF": "OFF is refused on SQLite: an OS crash or power loss can corrupt the "
           "database; NORMAL (no sync per commit, never corrupt) is the fastest level",
}


def dialect_of(url: str) -> str | None:
    """``sqlite`` or ``postgresql`` for a database URL the store takes; None for any
    other (the store says what is wrong with it when it opens)."""
    scheme = urlsplit(url).scheme.lower()
    if scheme == "sqlite":
        return "sqlite"
    if scheme in ("postgresql", "postgres", "postgresql+psycopg"):
        return "postgresql"
    return None


def _find(levels: tuple[str, ...], value: str) -> str | None:
    """``value`` as it is spelt in ``levels`` (any case), or None."""
    word = value.strip().lower()
    return next((level for level in levels if level.lower() == word), None)


def store_level(dialect: str, value: str) -> str:
    """``value`` in the spelling of ``dialect``'s levels (any case is taken);
    ValueError, naming the store, for a level it does not take. (The engines check
    again: :mod:`agentd.store._sqlite`, :mod:`agentd.store._postgres`.)"""
    mine, other = ((SQLITE_LEVELS, POSTGRES_LEVELS) if dialect == "sqlite"
                   else (POSTGRES_LEVELS, SQLITE_LEVELS))
    level = _find(mine, value)
    if level is not None:
        return level
    if dialect == "sqlite" and value.strip().upper() in _REFUSED:
        raise ValueError(_REFUSED[value.strip().upper()])
    if _find(other, value) is not None:
        theirs = "PostgreSQL" if dialect == "sqlite" else "SQLite"
        raise ValueError(
            f"{value!r} is a {theirs} level, but the store in use is {_NAMES[dialect]} "
            f"(database_url); {_NAMES[dialect]} takes " + ", ".join(mine))
    raise ValueError(f"unknown level {value!r}: SQLite takes "
                     + ", ".join(SQLITE_LEVELS) + "; PostgreSQL takes "
                     + ", ".join(POSTGRES_LEVELS))


class StoreConfig(BaseModel):
    """The store's durability (``[store]`` in agentd.toml, ``AGENTD_STORE`` as JSON)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: When a commit is acknowledged: SQLite ``NORMAL`` or ``FULL``, PostgreSQL's
    #: ``synchronous_commit`` (``on``, ``off``, ``local``, ``remote_write``,
    #: ``remote_apply``); any case. None: the store's default (SQLite ``FULL``,
    #: PostgreSQL ``on``).
    synchronous: str | None = None

    @field_validator("synchronous", mode="before")
    @classmethod
    def _known(cls, value: object) -> object:
        if isinstance(value, str) and _find(SQLITE_LEVELS + POSTGRES_LEVELS, value) is None:
            store_level("sqlite", value)  # raises: EXTRA's message, or the unknown one's
        return value  # (the engine spells it its dialect's way)


def check_level(database_url: str, wanted: str | None, alias: str | None) -> None:
    """ValueError when ``[store] synchronous`` (``wanted``) is not a level of the store
    ``database_url`` names (naming it), or when it and the deprecated
    ``sqlite_synchronous`` (``alias``, checked already) are both set to different
    levels (on PostgreSQL, both set at all)."""
    dialect = dialect_of(database_url)
    if alias is not None and wanted is not None and (
            dialect == "postgresql" or wanted.strip().upper() != alias):
        raise ValueError(
            f"store.synchronous = {wanted!r} and the deprecated sqlite_synchronous = "
            f"{alias!r} (AGENTD_SQLITE_SYNCHRONOUS) disagree: remove sqlite_synchronous")
    if wanted is not None and dialect is not None:
        try:
            store_level(dialect, wanted)
        except ValueError as exc:
            raise ValueError(f"store.synchronous: {exc}") from None


def asked_level(database_url: str, wanted: str | None, alias: str | None) -> str | None:
    """The level to ask the store for: ``wanted``, else ``alias`` on SQLite (it has no
    effect on PostgreSQL); None: the store's default."""
    if wanted is not None:
        return wanted  # (the engine takes any case)
    return alias if dialect_of(database_url) == "sqlite" else None


def deprecations(database_url: str, alias: str | None) -> list[str]:
    """What the daemon logs at start about the deprecated ``sqlite_synchronous``."""
    if alias is None:
        return []
    effect = (f"it sets [store] synchronous = {alias!r}"
              if dialect_of(database_url) == "sqlite" else "it has no effect on PostgreSQL")
    return [f"sqlite_synchronous (AGENTD_SQLITE_SYNCHRONOUS) is deprecated and will be "
            f"removed: {effect}; set synchronous in [store] instead (docs/configuration.md)"]
