"""Images' and files' bytes, kept once per tenant by their SHA-256, outside the log.

A message or a tool result that carries an image names it in its event by reference
(``{"type": "image", "blob": SHA256, ...}``); its bytes are a row of ``blobs``
(tenant, hash), and ``blob_refs`` records that the session refers to it. Both are
written in the transaction of the event (:func:`put`), so an event never names a
blob that is not there, and a refused write leaves neither. A session reads a blob
only through a reference of its own (:func:`read`): a hash is never enough, and
another tenant's copy is another row it has no reference to.

Deleting sessions (one, an agent's, expired ones) drops their references with them
(the foreign key cascades) and, in the same transaction, every blob they were the
last to refer to (:func:`held` before, :func:`release` after). On PostgreSQL a
writer locks the blob's row before it adds a reference (the upsert in :func:`put`)
and a deleter locks the rows it may drop before it looks for references left: one
of them waits for the other, so a blob is never dropped while a reference to it is
being committed, and never kept with none. Both lock after the session's row (a
writer appends first), and several blobs in one order (by tenant and hash).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from agentd.errors import NotFound
from agentd.store import quota as _quota
from agentd.store.engine import Tx
from agentd.store.quota import Quota
from agentd.store.records import NewBlob

__all__ = ["copy_refs", "get", "held", "put", "read", "release"]

_Key = tuple[str, str]


def put(tx: Tx, session_id: str, tenant: str, blobs: Sequence[NewBlob], now: float, *,
        quota: Quota | None = None, dialect: str = "sqlite") -> None:
    """Keep ``blobs`` for ``tenant`` (each once: a blob it holds already is reused) and
    refer ``session_id`` to them; a blob given by hash only must be one the tenant
    holds (else NotFound ``blob_not_found``, and nothing of the transaction is kept).
    ``quota``: the tenant's ``storage_bytes``, checked after."""
    added = False
    for blob in sorted(blobs, key=lambda b: b.sha256):
        if blob.data is None:
            # Locks the row (PostgreSQL), like the upsert: see the module's docstring.
            tx.execute("UPDATE blobs SET created_at = created_at WHERE tenant = ? "
                       "AND sha256 = ?", (tenant, blob.sha256))
            if tx.rowcount == 0:
                raise NotFound(f"blob {blob.sha256} not found", code="blob_not_found")
        else:
            tx.execute(
                "INSERT INTO blobs (tenant, sha256, media_type, size, width, height, data, "
                "created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (tenant, sha256) "
                "DO UPDATE SET created_at = blobs.created_at",
                (tenant, blob.sha256, blob.media_type, blob.size, blob.width, blob.height,
                 blob.data, now))
            added = True
        tx.execute("INSERT INTO blob_refs (session_id, tenant, sha256) VALUES (?, ?, ?) "
                   "ON CONFLICT (session_id, sha256) DO NOTHING",
                   (session_id, tenant, blob.sha256))
    if added:
        _quota.check(tx, quota, dialect)


def read(tx: Tx, session_id: str, hashes: Iterable[str]) -> dict[str, bytes]:
    """The bytes of the blobs ``session_id`` refers to, of those named (a hash it
    does not refer to is left out)."""
    wanted = sorted(set(hashes))
    if not wanted:
        return {}
    rows = tx.all(
        "SELECT r.sha256, b.data FROM blob_refs r JOIN blobs b ON b.tenant = r.tenant "
        f"AND b.sha256 = r.sha256 WHERE r.session_id = ? AND r.sha256 IN "
        f"({', '.join('?' * len(wanted))})", (session_id, *wanted))
    return {str(r[0]): bytes(r[1]) for r in rows}


def get(tx: Tx, session_id: str, sha256: str) -> tuple[str, bytes] | None:
    """One blob the session refers to: its media type and bytes (None: no such
    reference, whoever else holds a blob of that hash)."""
    row = tx.one(
        "SELECT b.media_type, b.data FROM blob_refs r JOIN blobs b ON b.tenant = r.tenant "
        "AND b.sha256 = r.sha256 WHERE r.session_id = ? AND r.sha256 = ?",
        (session_id, sha256))
    return None if row is None else (str(row[0]), bytes(row[1]))


def held(tx: Tx, where: str, params: Sequence[object]) -> list[_Key]:
    """The blobs the sessions matching ``where`` (a condition on ``sessions``) refer
    to: read before deleting them, handed to :func:`release` after."""
    rows = tx.all("SELECT DISTINCT r.tenant, r.sha256 FROM blob_refs r JOIN sessions "
                  f"ON sessions.id = r.session_id WHERE {where}", params)
    return [(str(r[0]), str(r[1])) for r in rows]


def release(tx: Tx, keys: Iterable[_Key], dialect: str) -> int:
    """Delete those of ``keys`` no session refers to any more; how many went."""
    gone = 0
    for tenant, sha256 in sorted(set(keys)):
        if dialect == "postgresql":
            # Wait for a writer adding a reference now (it holds the row: put()); the
            # look below, a statement of its own, then sees what it committed.
            tx.execute("SELECT 1 FROM blobs WHERE tenant = ? AND sha256 = ? FOR UPDATE",
                       (tenant, sha256))
        tx.execute("DELETE FROM blobs WHERE tenant = ? AND sha256 = ? AND NOT EXISTS "
                   "(SELECT 1 FROM blob_refs r WHERE r.tenant = blobs.tenant "
                   "AND r.sha256 = blobs.sha256)", (tenant, sha256))
        gone += max(tx.rowcount, 0)
    return gone


def copy_refs(tx: Tx, source: str, target: str, dialect: str) -> None:
    """Refer ``target`` to every blob ``source`` refers to (a fork: the references
    are copied, the bytes are not)."""
    if dialect == "postgresql":
        # As a writer does (put()): the rows first, so that a delete of the source
        # under way either finishes first (and they are gone) or waits for this.
        tx.execute("SELECT 1 FROM blobs b JOIN blob_refs r ON b.tenant = r.tenant AND "
                   "b.sha256 = r.sha256 WHERE r.session_id = ? ORDER BY b.tenant, "
                   "b.sha256 FOR UPDATE OF b", (source,))
    tx.execute("INSERT INTO blob_refs (session_id, tenant, sha256) SELECT ?, r.tenant, "
               "r.sha256 FROM blob_refs r JOIN blobs b ON b.tenant = r.tenant AND "
               "b.sha256 = r.sha256 WHERE r.session_id = ? ON CONFLICT (session_id, "
               "sha256) DO NOTHING", (target, source))
