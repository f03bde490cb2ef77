"""Every operation the property calls: each path of the OpenAPI document (classified by
tests/server/test_access_routes.py's rules, plus the identity routes) and the doors'
(OpenAI, MCP, A2A, the Agent Protocol; the WebSocket, the feed and a session's SSE
stream are driven by the test itself), each with what decides who may call it.

An operation names its *target*, the one value the scope decides on: an agent
(``name``), an object of an agent by id (``run_id``...), a tenant or a token. Each call
is made twice by the same caller when the target is hidden from it, once as it is and
once with a ghost that does not exist (the same kind of value), and the two answers
must be the same once the two values are made the same.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tests.isolation._world import SKILL, THREAD
from tests.server.test_access_routes import BODIES, GHOST_IDS, ID_PARAMS, classify

from agentd.protocols.mcp import session_uri
from agentd.protocols.mcp._front import LEGACY_VERSION

__all__ = ["GHOSTS", "GHOST_TENANT", "GHOST_TOKEN", "ID_PARAMS", "Op", "catalogue", "fill"]

#: Ghost values of each kind of target (agents: drawn from these names).
GHOSTS = ("nobody", "ghost", "ax-nobody")
GHOST_TENANT = "tghost"
GHOST_TOKEN = "ghost-token"


@dataclass(frozen=True)
class Op:
    """One operation: ``path`` and ``body`` are templates (``{param}``)."""

    door: str
    method: str
    path: str
    #: The value the scope decides on: ``name`` (an agent), an id (``run_id``...),
    #: ``tenant``, ``token``; None for lists and daemon-wide reads.
    target: str | None
    body: Any = None
    query: Mapping[str, str] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)
    #: What an allowed call answers: ``same`` (as the admin's), ``visible`` (a write:
    #: not what a missing target gets), ``list`` (the admin's, filtered), ``daemon``
    #: (nothing of a hidden agent), ``create`` (POST /v1/agents).
    expect: str = "same"
    #: For a list: (key of the items, field naming each item's agent); "" key: the
    #: answer is the list. For tenants and tokens the field names them.
    items: tuple[str, str] | None = None
    #: The weakest role that may call it at all, and whether it needs every agent.
    right: str = "viewer"
    unscoped: bool = False
    #: Applied last (it changes who the callers are or what the world holds).
    late: bool = False

    @property
    def key(self) -> str:
        return f"{self.door} {self.method} {self.path}"

    @property
    def every_caller(self) -> bool:
        """Whether every token calls it in each world (on a target it may not use,
        and, for those that need a role, as drawn): what these answer depends most on
        what kind of token asks (how it is bound, its role, where it comes from)."""
        return self.right != "viewer" or (self.door == "api" and (
            self.method, self.path) in (("POST", "/v1/agents"), ("POST", "/v1/tokens"),
                                        ("GET", "/v1/tenants/{tenant}")))

    @property
    def changes_world(self) -> bool:
        """Whether an allowed call may change the agents or tokens there are."""
        return self.path in ("/v1/agents", "/v1/agents/{name}") or self.path.startswith(
            ("/v1/tokens", "/v1/tenants"))

    @property
    def write(self) -> bool:
        """What a viewer may not send (docs/security.md, "Roles")."""
        return self.method != "GET" and not self.path.endswith("/memory/search")


def fill(template: Any, values: Mapping[str, str]) -> Any:
    """``template`` with each ``{param}`` in its strings replaced by its value."""
    if isinstance(template, str):
        return re.sub(r"\{(\w+)\}", lambda m: values.get(m.group(1), m.group(0)), template)
    if isinstance(template, list):
        return [fill(item, values) for item in template]
    if isinstance(template, dict):
        return {k: fill(v, values) for k, v in template.items()}
    return template


#: Bodies of the native writes test_access_routes leaves empty (its refusals come
#: before the body is read; an allowed call here should do what it says).
_BODIES: dict[tuple[str, str], Any] = {
    **BODIES,
    ("POST", "/v1/agents/{name}/sessions/{key}/checkpoints"): {"name": "c2"},
    ("POST", "/v1/agents/{name}/sessions/{key}/restore"): {"seq": 1},
    ("POST", "/v1/agents/{name}/sessions/{key}/fork"): {"key": "forked", "seq": 1},
    ("PUT", "/v1/agents/{name}/sessions/{key}/policy"): {"rules": []},
    ("PATCH", "/v1/agents/{name}/memory/blocks/{label}"): {"value": "changed"},
    ("POST", "/v1/agents/{name}/memory/blocks/{label}/restore"): {"version": 1},
    ("POST", "/v1/agents/{name}/memory/blocks/{label}/attach"): {"agent": "{name}"},
    ("PATCH", "/v1/agents/{name}/memory/entries/{entry_id}"): {"content": "changed"},
    ("PATCH", "/v1/agents/{name}/heartbeat"): {"enabled": False},
    ("POST", "/v1/checkpoints/{checkpoint_id}/restore"): {},
    ("POST", "/v1/tokens"): {"name": "made-by-{caller}", "role": "viewer",
                             "tenant": "{tenant}"},
    ("POST", "/v1/tenants"): {"name": "tnew"},
    ("PATCH", "/v1/tenants/{name}"): {"description": "changed"},
    ("POST", "/v1/agents"): {"name": "{name}"},
}
#: Values every call has (a session, a block, a skill and a snapshot ref).
FIXED = {"key": "chat", "label": "persona", "skill": SKILL, "ref": "HEAD"}
#: Query parameters that show every item of a list.
_QUERIES = {"/v1/usage": {"by": "agent,tenant"}, "/v1/runs": {"limit": "200"},
            "/v1/agents": {"limit": "200"}}
#: Native lists: (key of the items, field naming each one's agent).
_LISTS = {"/v1/agents": ("agents", "name"), "/v1/runs": ("runs", "agent"),
          "/v1/approvals": ("approvals", "agent"), "/v1/schedules": ("schedules", "agent"),
          "/v1/webhooks": ("webhooks", "agent"), "/v1/usage": ("usage", "agent"),
          "/v1/tenants": ("tenants", "name"), "/v1/tokens": ("tokens", "name"),
          "/v1/evals/suites": ("suites", "agent")}
#: Admin-only operations, and those that need an operator; either needs a scope of
#: every agent (a scoped admin holds no daemon-wide right: docs/security.md).
_ADMIN = {("POST", "/v1/tenants"), ("PATCH", "/v1/tenants/{name}"),
          ("DELETE", "/v1/tenants/{name}"), ("GET", "/v1/audit"),
          ("GET", "/v1/audit/verify")}
_OPERATOR = {("POST", "/v1/skills"), ("DELETE", "/v1/skills/{skill}")}
#: Native operations that are not per agent nor a list, and are left out here.
_LEFT_OUT = {("GET", "/v1/events"): "the live feed: test_the_feed_carries_only_...",
             ("POST", "/v1/channels/telegram/{name}/webhook"): "public (Telegram's "
                                                                "secret, not a token)",
             ("POST", "/v1/skills"): "a zip body: test_daemon_wide_writes_need_... (the "
                                     "role and scope rule is DELETE's, walked here)",
             ("POST", "/v1/admin/reload"): "the daemon's configuration, not an agent's: "
                                           "every kind of token in tests/server/"
                                           "test_reload.py (an unscoped admin only)"}
#: Operations that change who the callers are, or delete what others are about.
_LATE = {("POST", "/v1/tokens/{name}/rotate"), ("DELETE", "/v1/tokens/{name}"),
         ("DELETE", "/v1/agents/{name}"), ("DELETE", "/v1/tenants/{name}"),
         ("DELETE", "/v1/agents/{name}/sessions/{key}"),
         ("POST", "/v1/agents/{name}/sessions/{key}/restore"),
         ("POST", "/v1/checkpoints/{checkpoint_id}/restore")}


def _native(method: str, path: str) -> Op | None:
    """The operation of one path of the OpenAPI document (None: left out here)."""
    if (method, path) in _LEFT_OUT:
        return None
    body = _BODIES.get((method, path))
    late = (method, path) in _LATE
    right = "admin" if (method, path) in _ADMIN else (
        "operator" if (method, path) in _OPERATOR else "viewer")
    common: dict[str, Any] = {"body": body, "late": late, "right": right,
                              "unscoped": right != "viewer"}
    if path.startswith("/v1/tokens"):
        target = "token" if "{name}" in path else ("tenant" if method == "POST" else None)
        path = path.replace("{name}", "{token}")
        expect = "list" if target is None else "visible"
        return Op("api", method, path, target, expect=expect, items=_LISTS.get(path),
                  **common)
    if path.startswith("/v1/tenants"):
        path = path.replace("{name}", "{tenant}")
        target = "tenant" if "{tenant}" in path else None
        expect = ("list" if method == "GET" else "visible") if target is None else (
            "same" if method == "GET" else "visible")
        return Op("api", method, path, target, expect=expect, items=_LISTS.get(path),
                  **common)
    if path == "/v1/agents" and method == "POST":
        return Op("api", method, path, "name", expect="create", **common)
    if path == "/v1/evals/suites" and method == "POST":
        # (the agent is named in the body: a suite of an agent the caller may not use
        # is refused as one of an agent that does not exist)
        return Op("api", method, path, "name", expect="visible", **{
            **common, "body": {"agent": "{name}", "name": "made-by-{caller}"}})
    kind = classify(method, path)
    if kind == "agent":
        return Op("api", method, path, "name", expect="same" if method == "GET" or
                  path.endswith("/memory/search") else "visible", **common)
    if kind == "owned":
        target = next(p for p in ID_PARAMS if f"{{{p}}}" in path)
        return Op("api", method, path, target,
                  expect="same" if method == "GET" else "visible", **common)
    if (method == "GET" and "{" not in path) or kind == "skip":
        expect = "list" if path in _LISTS else "daemon"
        return Op("api", method, path, None, expect=expect, items=_LISTS.get(path),
                  query=_QUERIES.get(path, {}), **common)
    raise AssertionError(f"{method} {path}: no isolation rule in tests/isolation/_ops.py; "
                         "decide who may call it and add it")


#: Tokens no wider than their maker: one of every agent (any role), an admin.
WIDER = (Op("api", "POST", "/v1/tokens", None, expect="visible", right="member",
            unscoped=True, body={"name": "wide-{caller}", "role": "viewer"}),
         Op("api", "POST", "/v1/tokens", None, expect="visible", right="admin",
            unscoped=True, body={"name": "admin-{caller}", "role": "admin"}))


def _mcp(method: str, params: dict[str, Any]) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": 7, "method": method, "params": params}


_MCP_HEADERS = {"Content-Type": "application/json",
                "Accept": "application/json, text/event-stream",
                "MCP-Protocol-Version": LEGACY_VERSION}
_THREAD = "{name}:" + THREAD
#: The protocol version the A2A door speaks (without it every call is -32009).
A2A_HEADERS = {"A2A-Version": "1.0"}
_LG_INPUT = {"assistant_id": "{name}", "input": {"messages": "hi"}}
_A2A_SEND = {"jsonrpc": "2.0", "id": 1, "method": "SendMessage", "params": {"message": {
    "role": "ROLE_USER", "messageId": "m-{name}", "parts": [{"text": "hi"}]}}}

#: The doors' operations (paths outside the OpenAPI document).
DOORS: tuple[Op, ...] = (
    Op("openai", "GET", "/v1/models", None, expect="list", items=("data", "id")),
    Op("openai", "GET", "/v1/models/{name}", "name"),
    Op("openai", "POST", "/v1/chat/completions", "name", expect="visible", body={
        "model": "{name}", "messages": [{"role": "user", "content": "hi"}]}),
    Op("openai", "POST", "/v1/responses", "name", expect="visible",
       body={"model": "{name}", "input": "hi"}),
    Op("openai", "POST", "/v1/chat/completions", "name", expect="visible", body={
        "model": "{name}", "stream": True, "messages": [{"role": "user",
                                                         "content": "hi"}]}),
    Op("openai", "GET", "/v1/responses/resp_{run_id}", "run_id"),
    Op("openai", "POST", "/v1/responses/resp_{run_id}/cancel", "run_id", expect="visible"),
    Op("mcp", "POST", "/mcp", None, expect="list", items=("result.tools", "name"),
       body=_mcp("tools/list", {}), headers=_MCP_HEADERS),
    Op("mcp", "POST", "/mcp", "name", expect="visible", headers=_MCP_HEADERS,
       body=_mcp("tools/call", {"name": "{name}",
                                "arguments": {"message": "hi", "session": "chat"}})),
    Op("mcp", "POST", "/mcp", "name", headers=_MCP_HEADERS, body=_mcp(
        "resources/read", {"uri": session_uri("{name}", "chat").replace(
            "%7Bname%7D", "{name}")})),
    Op("mcp", "POST", "/mcp", None, expect="list", headers=_MCP_HEADERS,
       items=("result.contents.0.text.approvals", "agent"),
       body=_mcp("resources/read", {"uri": "agentd://approvals"})),
    Op("a2a", "GET", "/a2a/{name}/.well-known/agent-card.json", "name"),
    Op("a2a", "POST", "/a2a/{name}", "name", expect="visible", body=_A2A_SEND,
       headers=A2A_HEADERS),
    Op("a2a", "POST", "/a2a/{name}", "name", headers=A2A_HEADERS, body={
        "jsonrpc": "2.0", "id": 2, "method": "GetTask", "params": {"id": "{run_id}"}}),
    Op("langgraph", "POST", "/langgraph/assistants/search", None, expect="list",
       items=("", "assistant_id"), body={"limit": 100}),
    Op("langgraph", "POST", "/langgraph/assistants/count", None, expect="list",
       items=("#", "assistant_id"), body={}),
    Op("langgraph", "GET", "/langgraph/assistants/{name}", "name"),
    Op("langgraph", "POST", "/langgraph/threads/search", None, expect="list",
       items=("", "metadata.graph_id"), body={"limit": 100}),
    Op("langgraph", "POST", "/langgraph/threads/count", None, expect="list",
       items=("#", "metadata.graph_id"), body={}),
    Op("langgraph", "POST", "/langgraph/threads", "name", expect="visible",
       body={"graph_id": "{name}"}),
    Op("langgraph", "GET", "/langgraph/threads/" + _THREAD, "name"),
    Op("langgraph", "GET", "/langgraph/threads/" + _THREAD + "/state", "name"),
    Op("langgraph", "GET", "/langgraph/threads/" + _THREAD + "/runs", "name"),
    Op("langgraph", "POST", "/langgraph/threads/" + _THREAD + "/runs/wait", "name",
       expect="visible", body=_LG_INPUT),
    Op("langgraph", "POST", "/langgraph/runs/wait", "name", expect="visible",
       body=_LG_INPUT),
    Op("langgraph", "POST", "/langgraph/runs/stream", "name", expect="visible",
       body=_LG_INPUT),
    Op("langgraph", "PUT", "/langgraph/store/items", "name", expect="visible", body={
        "namespace": ["{name}", "notes"], "key": "k2", "value": {"x": 1}}),
    Op("langgraph", "GET", "/langgraph/store/items", "name",
       query={"namespace": "{name}.notes", "key": "k"}),
    Op("langgraph", "POST", "/langgraph/store/items/search", "name",
       body={"namespace_prefix": ["{name}"]}),
    Op("langgraph", "POST", "/langgraph/store/namespaces", None, expect="list",
       items=("namespaces", "0"), body={}),
    Op("langgraph", "DELETE", "/langgraph/store/items", "name", expect="visible",
       late=True, body={"namespace": ["{name}", "notes"], "key": "k"}),
)


def catalogue(document: dict[str, Any]) -> list[Op]:
    """Every operation: the OpenAPI document's (each must have a rule) and the doors'."""
    ops = [op for path, item in sorted(document["paths"].items()) for method in item
           if (op := _native(method.upper(), path)) is not None]
    return [*ops, *WIDER, *DOORS]


def ghost_of(target: str, drawn: int, like: str = "") -> str:
    """A ghost value of the kind ``target`` (an agent's: of the shape of ``like``, a
    name with its ``tN.`` prefix: the doors read a name's shape before they look it up,
    the same whether it exists)."""
    if target == "name":
        prefix, dot, _ = like.rpartition(".")
        return f"{prefix}{dot}{GHOSTS[drawn % len(GHOSTS)]}"
    if target == "tenant":
        return GHOST_TENANT
    if target == "token":
        return GHOST_TOKEN
    return GHOST_IDS[target]


#: For reference by the test: the values every call has.
__all__ += ["A2A_HEADERS", "DOORS", "FIXED", "ghost_of"]
