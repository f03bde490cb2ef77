"""/v1/agents/{name}/memory/entries and /memory/search: an agent's long-term memory."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, JsonValue, ValidationError
from starlette.responses import Response, StreamingResponse

from agentd.doors.http import loads_strict, model_response
from agentd.memory.entries import MAX_BATCH, MAX_LIMIT, MAX_TAGS, EntryIn, Hit, entry_dict
from agentd.memory.transfer import ImportReport
from agentd.server.routes._deps import ERRORS, runtime_of
from agentd.server.routes.memory import _by
from agentd.settings.memory import NAMESPACE_PATTERN
from agentd.store.entries import EntryChange, EntryFilter

__all__ = ["router"]

router = APIRouter(prefix="/v1/agents/{name}/memory", tags=["memory"])

EntryId = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$",
                              description="The entry's id (`mem_...`).")]
Namespace = Annotated[str, Field(pattern=NAMESPACE_PATTERN,
                                 description="A shared namespace in the agent's "
                                             "`settings.memory.namespaces`.")]
Tag = Annotated[str, Field(min_length=1, max_length=64)]
Scalar = str | int | float | bool | None


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class EntryBody(_In):
    content: str = Field(min_length=1, max_length=1_000_000,
                         description="The text, stored verbatim (at most the daemon's "
                                     "`memory.max_entry_chars`).")
    tags: list[Tag] = Field(default_factory=list, max_length=MAX_TAGS)
    metadata: dict[str, JsonValue] = Field(default_factory=dict,
                                           description="Any JSON object (16 KB at most).")
    namespace: Namespace | None = Field(
        default=None, description="A shared namespace; left out: the agent's own.")
    tainted: bool = Field(default=False, strict=True,
                          description="Mark the entry untrusted (content from outside): "
                                      "a run that recalls it is tainted.")


class EntriesBody(_In):
    entries: list[EntryBody] = Field(min_length=1, max_length=MAX_BATCH)


class EntryPatch(_In):
    content: str | None = Field(default=None, min_length=1, max_length=1_000_000)
    tags: list[Tag] | None = Field(default=None, max_length=MAX_TAGS)
    metadata: dict[str, JsonValue] | None = None
    tainted: bool | None = Field(default=None, strict=True,
                                 description="false clears the mark (a person vouches "
                                             "for the content).")
    version: int | None = Field(default=None, strict=True, ge=1, le=2**63 - 1,
                                description="Refuse (409) unless the entry is still at "
                                            "this version.")


class SearchBody(_In):
    query: str = Field(min_length=1, max_length=10_000)
    limit: int = Field(default=10, strict=True, ge=1, le=MAX_LIMIT)
    tags: list[Tag] = Field(default_factory=list, max_length=MAX_TAGS,
                            description="Entries having every one of these tags.")
    tags_any: list[Tag] = Field(default_factory=list, max_length=MAX_TAGS,
                                description="Entries having at least one of these.")
    metadata: dict[str, Scalar] = Field(default_factory=dict, max_length=32,
                                        description="Equality on metadata keys.")
    created_after: datetime | None = None
    created_before: datetime | None = None
    updated_after: datetime | None = None
    namespaces: list[Namespace | Annotated[str, Field(pattern=r"^$")]] | None = Field(
        default=None, max_length=33,
        description='The namespaces to search ("" is the agent\'s own); left out: its '
                    "own and every shared one in its settings.")
    vector_weight: float | None = Field(default=None, ge=0.0, le=1.0,
                                        description="Override of the agent's "
                                                    "`memory.vector_weight`.")


class Source(BaseModel):
    session: str | None
    run: str | None
    seq: int | None


class EntryOut(BaseModel):
    id: str
    namespace: str | None = Field(description="The shared namespace; null: the agent's "
                                              "own.")
    content: str
    tags: list[str]
    metadata: dict[str, Any]
    source: Source
    tainted: bool
    tainted_reason: str | None
    created_at: str
    updated_at: str
    version: int


class WrittenOut(EntryOut):
    created: bool = Field(description="false: an entry with the same normalised content "
                                      "existed, and this is it (nothing was written).")


class WrittenList(BaseModel):
    entries: list[WrittenOut]
    created: int


class EntryList(BaseModel):
    entries: list[EntryOut]
    next_before: str | None = Field(description="Pass as `before` for the next page.")


class HitOut(EntryOut):
    score: float = Field(description="The fused score (0 to 1, higher is better).")
    scores: dict[str, float | None] = Field(
        description="`text` (BM25 with the searched namespaces' own statistics) and "
                    "`vector` (cosine) of each side that found it.")


class SearchOut(BaseModel):
    results: list[HitOut]


entry_out = entry_dict


def _hit(h: Hit) -> dict[str, Any]:
    return {**entry_out(h.entry), "score": h.score,
            "scores": {"text": h.text, "vector": h.vector}}


def _in(body: EntryBody, by: str) -> EntryIn:
    return EntryIn(content=body.content, tags=body.tags, metadata=body.metadata,
                   namespace=body.namespace,
                   tainted=f"marked by {by}" if body.tainted else None)


def _body_schema() -> dict[str, Any]:
    """The body's schema written out whole: neither model is one of the document's
    components (the body is parsed by hand), so the batch's items are the single
    entry's schema itself, not a reference to it (it pointed at
    ``#/components/schemas/EntryBody``, which was not there)."""
    one = EntryBody.model_json_schema(ref_template="#/components/schemas/{model}")
    many = EntriesBody.model_json_schema(ref_template="#/components/schemas/{model}")
    one = {k: v for k, v in one.items() if k != "$defs"}
    many = {k: v for k, v in many.items() if k != "$defs"}
    many["properties"]["entries"]["items"] = one
    return {"requestBody": {"required": True, "content": {"application/json": {
        "schema": {"oneOf": [one, many]}}}}}


@router.post("/entries", response_model=WrittenOut | WrittenList,
             responses={**ERRORS(403, 404, 413, 422), 201: {
                 "model": WrittenOut | WrittenList,
                 "description": "Written (200: every entry was a duplicate)"}},
             openapi_extra=_body_schema())
async def add_entries(name: str, request: Request) -> Response:
    """Store one entry, or `{"entries": [...]}` (up to 1,000) in one transaction.
    Verbatim, no model call. 201 when something was written, 200 when every entry was
    a duplicate (each answer names the entry that has the content)."""
    # Parsed here rather than as a union parameter: an error then names the field as
    # the client wrote it (body.entries.1.content), not the union's member.
    raw = loads_strict(await request.body())
    model: type[EntryBody] | type[EntriesBody] = (
        EntriesBody if isinstance(raw, dict) and "entries" in raw else EntryBody)
    try:
        body = model.model_validate(raw)
    except ValidationError as exc:
        raise RequestValidationError([{**e, "loc": ("body", *e["loc"])}
                                      for e in exc.errors()]) from None
    by = _by(request)
    items = body.entries if isinstance(body, EntriesBody) else [body]
    written = await runtime_of(request).add_memory(name, [_in(b, by) for b in items])
    status = 201 if any(created for _, created in written) else 200
    if isinstance(body, EntryBody):
        entry, created = written[0]
        return model_response(WrittenOut, {**entry_out(entry), "created": created},
                              status_code=status)
    return model_response(WrittenList, {
        "entries": [{**entry_out(e), "created": c} for e, c in written],
        "created": sum(1 for _, c in written if c)}, status_code=status)


@router.get("/entries", response_model=EntryList, responses=ERRORS(403, 404, 422))
async def list_entries(
    name: str, request: Request,
    namespace: Annotated[str | None, Query(max_length=64)] = None,
    tag: Annotated[list[str] | None, Query(max_length=MAX_TAGS)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    before: Annotated[str | None, Query(max_length=64)] = None,
) -> Response:
    """Entries newest first (the agent's own and shared ones, or one `namespace`)."""
    entries = await runtime_of(request).list_memory(
        name, namespaces=None if namespace is None else [namespace],
        filters=EntryFilter(tags_all=tuple(tag or ())), limit=limit, before=before)
    return model_response(EntryList, {
        "entries": [entry_out(e) for e in entries],
        "next_before": entries[-1].id if len(entries) == limit else None})


@router.get("/entries/{entry_id}", response_model=EntryOut, responses=ERRORS(404, 422))
async def get_entry(name: str, entry_id: EntryId, request: Request) -> Response:
    return model_response(EntryOut, entry_out(
        await runtime_of(request).get_memory(name, entry_id)))


@router.patch("/entries/{entry_id}", response_model=EntryOut,
              responses=ERRORS(404, 409, 422))
async def patch_entry(name: str, entry_id: EntryId, body: EntryPatch, request: Request
                      ) -> Response:
    """Change content, tags, metadata or the taint mark (a new version)."""
    tainted: str | None = None
    if body.tainted is not None:
        tainted = f"marked by {_by(request)}" if body.tainted else ""
    change = EntryChange(content=body.content,
                         tags=None if body.tags is None else tuple(body.tags),
                         metadata=body.metadata, tainted=tainted)
    entry = await runtime_of(request).update_memory(name, entry_id, change,
                                                    expect_version=body.version)
    return model_response(EntryOut, entry_out(entry))


@router.delete("/entries/{entry_id}", status_code=204, responses=ERRORS(404, 422))
async def delete_entry(name: str, entry_id: EntryId, request: Request) -> Response:
    await runtime_of(request).delete_memory(name, entry_id)
    return Response(status_code=204)


@router.post("/search", response_model=SearchOut, responses=ERRORS(403, 404, 422))
async def search(name: str, body: SearchBody, request: Request) -> Response:
    """Hybrid search: full text and vectors fused; filters apply to both."""
    flt = EntryFilter(
        tags_all=tuple(body.tags), tags_any=tuple(body.tags_any), metadata=body.metadata,
        created_after=body.created_after.timestamp() if body.created_after else None,
        created_before=body.created_before.timestamp() if body.created_before else None,
        updated_after=body.updated_after.timestamp() if body.updated_after else None)
    hits = await runtime_of(request).search_memory(
        name, body.query, limit=body.limit, filters=flt,
        namespaces=None if body.namespaces is None else [n or None for n in body.namespaces],
        vector_weight=body.vector_weight)
    return model_response(SearchOut, {"results": [_hit(h) for h in hits]})


@router.get("/export", responses={**ERRORS(404), 200: {
    "content": {"application/x-ndjson": {"schema": {"type": "string"}}},
    "description": "One JSON object per line: a header, the blocks, the entries."}})
async def export_memory(name: str, request: Request) -> Response:
    """The agent's memory blocks and entries (its own and its shared namespaces') as
    JSON lines, for a backup or another daemon (`POST .../memory/import`)."""
    lines = await runtime_of(request).export_memory(name)
    return StreamingResponse(lines, media_type="application/x-ndjson", headers={
        "Content-Disposition": f'attachment; filename="{name}-memory.jsonl"'})


@router.post("/import", response_model=ImportReport, responses=ERRORS(403, 404, 413, 422),
             openapi_extra={"requestBody": {"required": True, "content": {
                 "application/x-ndjson": {"schema": {"type": "string"}}}}})
async def import_memory(name: str, request: Request) -> Response:
    """Write the blocks and entries of an export. Every line is checked first: a bad
    one is refused with its number and field, and nothing is written. Entries whose
    content the agent has are skipped (counted as duplicates), so an import can be
    repeated safely."""
    body = await request.body()
    report = await runtime_of(request).import_memory(name, body)
    return model_response(ImportReport, report.model_dump())


class ConsolidateBody(_In):
    session: str | None = Field(default=None, min_length=1, max_length=200,
                                description="One session's key; left out: every session "
                                            "with new history.")


class ConsolidationOut(BaseModel):
    session: str
    seq: int = Field(description="The `memory.consolidated` event's seq.")
    from_seq: int
    to_seq: int
    model: str
    usage: dict[str, Any] | None
    entries: list[str] = Field(description="Ids of the entries written.")
    duplicates: int = Field(description="Memories the agent had already (not written).")
    blocks: list[str] = Field(description="Labels of the blocks appended to.")
    skipped: list[str] = Field(description="What the model proposed that was not used.")


class ConsolidationList(BaseModel):
    consolidations: list[ConsolidationOut] = Field(
        description="Empty when nothing new happened since the last consolidation.")


@router.post("/consolidate", response_model=ConsolidationList,
             responses=ERRORS(404, 409, 422, 502, 503))
async def consolidate(name: str, request: Request, body: ConsolidateBody | None = None
                      ) -> Response:
    """Turn the history not consolidated yet into long-term memory entries and block
    lines now (the agent's `memory.consolidation.model`, or its own). Each seq range is
    consolidated once; nothing new, nothing written."""
    done = await runtime_of(request).consolidate_memory(
        name, None if body is None else body.session)
    return model_response(ConsolidationList,
                          {"consolidations": [c.to_api() for c in done]})
