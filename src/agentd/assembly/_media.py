"""Images and files in, wired: the daemon's :class:`~agentd.media.Media` and what a
message carrying them adds to its acceptance (its parts in the ``message.user``
event, its blobs written in the same transaction)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from agentd.config import Settings
from agentd.errors import InvalidInput, NotFound
from agentd.llm.catalog import Catalog
from agentd.media import Attachments, Media, UrlFetcher
from agentd.sandbox.egress import EgressRules
from agentd.store import Quota, Store, Tx
from agentd.store import blobs as _blobs
from agentd.store.log import Accepted
from agentd.store.records import AgentRecord, NewBlob

__all__ = ["check_vision", "make_media", "resolve", "with_blobs"]

Also = Callable[[Tx, Accepted], None]


def make_media(settings: Settings, rules: EgressRules) -> Media:
    config = settings.attachments
    fetcher = UrlFetcher(rules=rules, hosts=tuple(config.fetch_hosts) or True,
                         timeout_s=config.fetch_timeout_s, enabled=config.fetch_urls)
    return Media(config.limits(), fetcher, max_total_bytes=config.max_message_bytes)


def check_vision(catalog: Catalog, agent: AgentRecord, attachments: Attachments) -> None:
    """Refuse images and PDFs for a model the catalog says takes none (before anything
    is written)."""
    if not attachments.needs_vision():
        return
    info = catalog.get(agent.model)
    if info is not None and info.vision is False:  # (as Runtime.takes_images)
        raise InvalidInput(
            f"model {agent.model!r} (agent {agent.name!r}) takes no images or PDFs "
            "(the model catalog's vision = false); send text, or use a model that "
            "takes them", code="model_no_vision", field="content")


async def resolve(store: Store, tenant: str, attachments: Attachments) -> None:
    """Fill in the parts named by a blob's hash from the tenant's own blobs: a hash it
    holds none of (another tenant's, or none at all) is a 404, whatever else exists."""
    if not attachments.by_hash:
        return
    found = await store.blob_meta(tenant, [p.get("blob", "") for p in attachments.by_hash])
    for part in attachments.by_hash:
        sha = part.get("blob", "")
        meta = found.get(sha)
        if meta is None:
            raise NotFound(f"blob {sha} not found", code="blob_not_found")
        media_type, size, width, height = meta
        image = media_type.startswith("image/")
        if part["type"] == "image" and not image:
            raise InvalidInput(f"blob {sha} is {media_type}, not an image",
                               code="invalid_media", field="content")
        part["type"] = "image" if image else "file"
        part["media_type"], part["size"] = media_type, size
        if width is not None and height is not None:
            part["width"], part["height"] = int(width), int(height)
    attachments.blobs = [b for b in attachments.blobs if b.data is not None] + [
        NewBlob(sha256=sha, media_type=found[sha][0], size=found[sha][1])
        for sha in {p.get("blob", "") for p in attachments.by_hash}
        if not any(b.sha256 == sha for b in attachments.blobs if b.data is not None)]


def with_blobs(store: Store, tenant: str, attachments: Attachments,
               origin: Mapping[str, Any] | None, also: Also | None,
               quota: Quota | None) -> tuple[dict[str, Any], Also]:
    """The message's ``origin`` with its parts, and an ``also`` that writes its blobs
    (and their references) in the accepting transaction, then ``also``."""
    blobs, dialect = list(attachments.blobs), store.dialect

    def write(tx: Tx, accepted: Accepted) -> None:
        _blobs.put(tx, accepted.session.id, tenant, blobs, store.clock.time(),
                   quota=quota, dialect=dialect)
        if also is not None:
            also(tx, accepted)

    return {**(origin or {}), "parts": attachments.parts}, write
