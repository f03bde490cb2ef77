"""The bytes of a session's images and files, loaded for its model calls.

A folded history names its images and files by reference (:class:`MediaPart`, no
bytes); before a model call the executor loads those not loaded yet, in one read of
the session's blobs, and keeps them on the parts: the provider encodes each message
once (its memo), so an image is read and encoded once per session's history, not once
per call. A blob that is gone (its session forked while being deleted) reaches the
model as a note saying so.
"""

from __future__ import annotations

from agentd.runtime.history import SessionHistory
from agentd.store import Store

__all__ = ["load_media"]

#: What stands in for bytes that could not be read.
MISSING = b""


async def load_media(store: Store, session_id: str, history: SessionHistory) -> None:
    """Load the bytes of the parts ``history`` folded in since the last call."""
    parts, history.unloaded = history.unloaded, []
    found = await store.blob_data(session_id, {p.blob for p in parts if p.data is None})
    for part in parts:
        if part.data is None:
            part.data = found.get(part.blob, MISSING)
