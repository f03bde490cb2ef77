"""The bytes of a session's images and files, loaded for its model calls; images tools
return, taken in.

A folded history names its images and files by reference (:class:`MediaPart`, no
bytes); before a model call the executor loads those not loaded yet, in one read of
the session's blobs, and keeps them on the parts: the provider encodes each message
once (its memo), so an image is read and encoded once per session's history, not once
per call. A blob that is gone (its session forked while being deleted) reaches the
model as a note saying so.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from agentd.errors import AgentdError
from agentd.events import PartData
from agentd.media import Media, RawPart, ToolImage, part_data
from agentd.runtime.history import SessionHistory
from agentd.store import Quota, Store, Tx
from agentd.store import blobs as _blobs
from agentd.store.records import EventRecord, NewBlob

__all__ = ["MISSING", "ToolMedia", "load_media"]

#: What stands in for bytes that could not be read.
MISSING = b""


async def load_media(store: Store, session_id: str, history: SessionHistory) -> None:
    """Load the bytes of the parts ``history`` folded in since the last call."""
    parts, history.unloaded = history.unloaded, []
    found = await store.blob_data(session_id, {p.blob for p in parts if p.data is None})
    for part in parts:
        if part.data is None:
            part.data = found.get(part.blob, MISSING)


class ToolMedia:
    """How images a tool returns are taken in (the service the composition root gives
    runs): checked like a message's (:class:`agentd.media.Media`'s limits), kept in the
    store with the call's ``tool.finished`` and counted in the tenant's
    ``storage_bytes`` quota; for a model that takes no images, a note the model can act
    on instead."""

    def __init__(self, media: Media, quota: Callable[[str], Quota | None]) -> None:
        self.media = media
        self.quota = quota

    async def take(self, images: Sequence[ToolImage], *, tool: str, vision: bool | None
                   ) -> tuple[list[PartData], list[NewBlob], str]:
        """The parts for the result, the blobs to keep, and a note for its text (the
        images it could not take, and why)."""
        if vision is False:
            return [], [], (f"\n[{tool} returned {len(images)} image(s), not shown: this "
                            "model takes no images]")
        parts: list[PartData] = []
        blobs: list[NewBlob] = []
        notes: list[str] = []
        limit = self.media.limits.max_parts
        for i, image in enumerate(images):
            where = f"{tool} image {i + 1}"
            if i >= limit:
                notes.append(f"[{len(images) - limit} more images not shown: at most "
                             f"{limit} per result]")
                break
            try:
                checked, data = await self.media.checked(RawPart(
                    kind="image", data=image.data, media_type=image.media_type,
                    name=image.name), where)
            except AgentdError as exc:
                notes.append(f"[{exc.message}]")
                continue
            parts.append(part_data(checked))
            blobs.append(NewBlob(sha256=checked.sha256, media_type=checked.media_type,
                                 size=checked.size, width=checked.width,
                                 height=checked.height, data=data))
        return parts, blobs, "".join(f"\n{n}" for n in notes)

    def writer(self, session_id: str, tenant: str, blobs: list[NewBlob], dialect: str,
               now: Callable[[], float]) -> Callable[[Tx, list[EventRecord]], None]:
        """What writes ``blobs`` with the events that name them (``Store.append``'s
        ``also``)."""
        quota = self.quota(tenant)

        def write(tx: Tx, records: list[EventRecord]) -> None:
            _blobs.put(tx, session_id, tenant, blobs, now(), quota=quota, dialect=dialect)

        return write
