"""The Store's blob methods: the bytes of the images and files a session refers to
(:mod:`agentd.store.blobs`).

A mixin so that ``store.py`` stays readable; :class:`agentd.store.Store` inherits it.
"""

from __future__ import annotations

from collections.abc import Iterable

from agentd.store import blobs as _blobs
from agentd.store.engine import Engine, Tx

__all__ = ["BlobStore"]


class BlobStore:
    engine: Engine

    async def blob(self, session_id: str, sha256: str) -> tuple[str, bytes] | None:
        """A blob ``session_id`` refers to: its media type and bytes (None: the session
        refers to no blob of that hash, whoever else may hold one)."""
        return await self.engine.read(lambda tx: _blobs.get(tx, session_id, sha256))

    async def blob_data(self, session_id: str, hashes: Iterable[str]) -> dict[str, bytes]:
        """The bytes of the named blobs ``session_id`` refers to (a hash it does not
        refer to is left out)."""
        wanted = list(hashes)
        return await self.engine.read(lambda tx: _blobs.read(tx, session_id, wanted))

    async def blob_meta(self, tenant: str, hashes: Iterable[str]
                        ) -> dict[str, tuple[str, int, int | None, int | None]]:
        """What the tenant's named blobs are: media type, size, width and height (a hash
        it holds no blob of is left out: another tenant's is not its own)."""
        wanted = sorted(set(hashes))
        if not wanted:
            return {}

        def op(tx: Tx) -> dict[str, tuple[str, int, int | None, int | None]]:
            rows = tx.all("SELECT sha256, media_type, size, width, height FROM blobs WHERE "
                          f"tenant = ? AND sha256 IN ({', '.join('?' * len(wanted))})",
                          (tenant, *wanted))
            return {str(r[0]): (str(r[1]), int(r[2]), r[3], r[4]) for r in rows}

        return await self.engine.read(op)
