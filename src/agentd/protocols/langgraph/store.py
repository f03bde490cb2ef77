"""The Agent Protocol door's store, kept in agents' long-term memory entries.

A namespace ``(agent, *labels)`` is that agent's own memory: an item is one entry
tagged ``langgraph`` whose metadata holds ``lg_ns`` (the labels joined by ``.``) and
``lg_key``, and whose content is the value as JSON (so the agent's memory search and
recall find it, and it goes through memory's checks: sizes, NUL, the agent's memory
settings). An entry that is tainted (written by a tainted run, or marked so) carries
``tainted`` (why) in its item. Searches and namespace listings read at most
:data:`SCAN` entries of each agent. See docs/protocols/langgraph.md.
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from agentd.assembly import Runtime
from agentd.doors.access import filter_agents, require_agent, runtime_of
from agentd.doors.http import json_response
from agentd.errors import AgentNotFound, InvalidInput, NotFound
from agentd.memory.entries import EntryIn
from agentd.protocols._common import json_body
from agentd.protocols.langgraph._wire import (
    NamespaceSearch,
    StoreGet,
    StorePut,
    StoreSearch,
    iso,
    parse,
    unsupported,
)
from agentd.protocols.langgraph.routes import PREFIX
from agentd.store.entries import EntryChange, EntryFilter, EntryRecord

__all__ = ["SCAN", "router"]

router = APIRouter(prefix=PREFIX + "/store", tags=["langgraph"], include_in_schema=False)
TAG = "langgraph"
#: The most entries a search or a namespace listing reads per agent.
SCAN = 1000


class ItemNotFound(NotFound):
    code = "item_not_found"


def _split(namespace: list[str], field: str, *, exact: bool) -> tuple[str, str]:
    """``(agent, labels joined)``; a namespace must start with an agent's name."""
    if not namespace:
        raise InvalidInput("a namespace starts with the agent whose memory holds it",
                           field=field)
    # The labels after the agent's name are joined with '.'; the name itself may hold
    # one (a tenant's agents are named '<tenant>.<name>').
    for index, label in enumerate(namespace):
        if not label or ("." in label and index) or len(label) > 64:
            raise InvalidInput(f"namespace label {label!r:.70} must be 1-64 characters "
                               "without '.'", field=field)
    if exact and len(namespace) > 16:
        raise InvalidInput("a namespace has at most 16 labels", field=field)
    return namespace[0], ".".join(namespace[1:])


async def _agent(request: Request, name: str, field: str) -> str:
    """The agent a namespace starts with; 404 for none, or one outside the token's
    scope (the same answer)."""
    try:
        await require_agent(request, name)
        return (await runtime_of(request).stored_agent(name)).name
    except AgentNotFound:
        raise NotFound(f"no agent {name!r}: a namespace starts with the agent whose "
                       "memory holds it", code="namespace_not_found",
                       details={"errors": [{"field": field, "message": "no such agent"}]}
                       ) from None


async def _find(runtime: Runtime, agent: str, labels: str, key: str) -> EntryRecord | None:
    found = await runtime.list_memory(agent, filters=EntryFilter(
        tags_all=(TAG,), metadata={"lg_ns": labels, "lg_key": key}), limit=1)
    return found[0] if found else None


def _item(agent: str, entry: EntryRecord, score: float | None = None) -> dict[str, Any]:
    labels = str(entry.metadata.get("lg_ns", ""))
    try:
        value = orjson.loads(entry.content)
    except orjson.JSONDecodeError:
        value = {"content": entry.content}  # rewritten by hand through memory's API
    item: dict[str, Any] = {
        "namespace": [agent, *(labels.split(".") if labels else [])],
        "key": entry.metadata.get("lg_key"), "value": value,
        "created_at": iso(entry.created_at), "updated_at": iso(entry.updated_at)}
    if score is not None:
        item["score"] = score
    if entry.tainted:
        # Written from outside (a tainted run, a marked import): the reader must know
        # it is not to be trusted, as agentd's own memory API says.
        item["tainted"] = entry.tainted
    return item


@router.put("/items")
async def put_item(request: Request) -> Response:
    runtime = runtime_of(request)
    body: StorePut = parse(StorePut, await json_body(request))
    if body.ttl is not None:
        raise unsupported("body.ttl", "an item's ttl")
    if body.value is None:
        raise InvalidInput("value must be an object (delete an item with DELETE)",
                           field="body.value")
    name, labels = _split(body.namespace, "body.namespace", exact=True)
    agent = await _agent(request, name, "body.namespace")
    content = orjson.dumps(body.value).decode()
    existing = await _find(runtime, agent, labels, body.key)
    if existing is None:
        await runtime.add_memory(agent, [EntryIn(
            content=content, tags=(TAG,), metadata={"lg_ns": labels, "lg_key": body.key})])
    else:
        await runtime.update_memory(agent, existing.id, EntryChange(content=content),
                                    expect_version=existing.version)
    return Response(status_code=204)


@router.get("/items")
async def get_item(request: Request) -> Response:
    runtime = runtime_of(request)
    params = request.query_params
    namespace = params.get("namespace", "")
    body: StoreGet = parse(StoreGet, {"namespace": namespace.split(".") if namespace
                                      else [], "key": params.get("key", "")})
    name, labels = _split(body.namespace, "query.namespace", exact=True)
    agent = await _agent(request, name, "query.namespace")
    entry = await _find(runtime, agent, labels, body.key)
    if entry is None:
        raise ItemNotFound(f"no item {body.key!r} in namespace {namespace!r}")
    return json_response(_item(agent, entry))


@router.delete("/items")
async def delete_item(request: Request) -> Response:
    runtime = runtime_of(request)
    body: StoreGet = parse(StoreGet, await json_body(request))
    name, labels = _split(body.namespace, "body.namespace", exact=True)
    agent = await _agent(request, name, "body.namespace")
    entry = await _find(runtime, agent, labels, body.key)
    if entry is not None:
        await runtime.delete_memory(agent, entry.id)
    return Response(status_code=204)


def _under(labels: str, prefix: str) -> bool:
    return not prefix or labels == prefix or labels.startswith(prefix + ".")


def _matches(value: Any, wanted: dict[str, Any]) -> bool:
    return isinstance(value, dict) and all(value.get(k) == v for k, v in wanted.items())


@router.post("/items/search")
async def search_items(request: Request) -> Response:
    """Items under a namespace prefix (its first label: the agent), by meaning and
    words with ``query`` (agentd's memory search), else newest first; ``filter``
    compares top-level fields of the value."""
    runtime = runtime_of(request)
    body: StoreSearch = parse(StoreSearch, await json_body(request))
    name, prefix = _split(body.namespace_prefix, "body.namespace_prefix", exact=False)
    agent = await _agent(request, name, "body.namespace_prefix")
    flt = EntryFilter(tags_all=(TAG,))
    scored: list[tuple[EntryRecord, float | None]]
    if body.query:
        hits = await runtime.search_memory(agent, body.query, limit=100, filters=flt)
        scored = [(hit.entry, hit.score) for hit in hits]
    else:
        scored = [(e, None) for e in await runtime.list_memory(agent, filters=flt,
                                                                limit=SCAN)]
    items = [_item(agent, e, score) for e, score in scored
             if _under(str(e.metadata.get("lg_ns", "")), prefix)]
    if body.filter:
        items = [i for i in items if _matches(i["value"], body.filter)]
    return json_response({"items": items[body.offset:body.offset + body.limit]})


@router.post("/namespaces")
async def list_namespaces(request: Request) -> Response:
    runtime = runtime_of(request)
    body: NamespaceSearch = parse(NamespaceSearch, await json_body(request))
    prefix = body.prefix or []
    if prefix:
        _split(prefix, "body.prefix", exact=False)
        agents = [await _agent(request, prefix[0], "body.prefix")]
    else:
        agents = [a.name for a in filter_agents(request, await runtime.list_agents())]
    found: set[tuple[str, ...]] = set()
    for agent in agents:
        for entry in await runtime.list_memory(agent, filters=EntryFilter(tags_all=(TAG,)),
                                               limit=SCAN):
            labels = str(entry.metadata.get("lg_ns", ""))
            space = (agent, *(labels.split(".") if labels else []))
            if tuple(prefix) != space[:len(prefix)]:
                continue
            if body.suffix and list(space[-len(body.suffix):]) != body.suffix:
                continue
            found.add(space[:body.max_depth] if body.max_depth else space)
    ordered = sorted(found)
    return json_response({"namespaces": [list(s) for s in
                                          ordered[body.offset:body.offset + body.limit]]})
