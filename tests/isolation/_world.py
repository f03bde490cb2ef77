"""A world for the isolation property: tenants, agents with one of each of their
objects, and the tokens that call them, drawn by hypothesis and made through the API.

The model here is written from the rules in docs/security.md (1b, "Identity"), not
from ``agentd.security.access``: it is what the property holds the daemon to.

- Tenants ``t0`` ... ``t3`` (2-4 of them), made by the admin through ``/v1/tenants``.
- Agents: made by the admin (any name, in a tenant or in none; a ``tN.`` name only in
  tenant ``tN``, as the daemon requires) or by a token bound to the tenant
  (``tN.<name>``).
  Each gets a completed run, a run waiting for an approval, a checkpoint, a schedule,
  a webhook with a delivery, a memory entry and block (``tests/server/_scopes.seed``),
  a LangGraph thread and store item.
- Tokens: the configuration's (:data:`CONFIGURED`, with ``[access]`` scopes and roles)
  and named ones of any role, bound to a tenant, to agent patterns, or both.
"""

from __future__ import annotations

import fnmatch
import uuid
from dataclasses import dataclass, field
from typing import Any

import httpx
from hypothesis import strategies as st
from tests.server._scopes import ADMIN, Seeded, auth, seed
from tests.skills._kit import good_files, zip_of

__all__ = ["CONFIGURED", "ROLES", "SETTINGS", "SKILL", "THREAD", "AgentSpec", "Built", "Caller",
           "TokenSpec", "WorldSpec", "build", "worlds"]

ROLES = ("viewer", "member", "operator", "admin")
TENANTS = ("t0", "t1", "t2", "t3")
#: The skill the daemon has.
SKILL = "pdf-tools"
#: The LangGraph thread each agent has: ``<agent>:<THREAD>``.
THREAD = str(uuid.UUID(int=7))


@dataclass(frozen=True)
class Caller:
    """A token as the model sees it: its role and scope."""

    label: str
    text: str
    role: str
    tenants: tuple[str, ...] | None = None
    agents: tuple[str, ...] | None = None
    source: str = "config"

    @property
    def everything(self) -> bool:
        return self.tenants is None and self.agents is None

    def may(self, name: str, tenant: str | None) -> bool:
        """Whether the token may use an agent ``name`` in ``tenant``."""
        if self.agents is not None and not any(
                fnmatch.fnmatchcase(name, p) for p in self.agents):
            return False
        return self.tenants is None or (tenant is not None and any(
            fnmatch.fnmatchcase(tenant, p) for p in self.tenants))

    def sees_tenant(self, tenant: str) -> bool:
        """Whether ``/v1/tenants`` shows it ``tenant``."""
        if self.everything:
            return True
        return self.tenants is not None and any(
            fnmatch.fnmatchcase(tenant, p) for p in self.tenants)

    def rank(self) -> int:
        return ROLES.index(self.role)


#: The configuration's tokens (``token-N``: the N-th of ``tokens``) with their scopes.
CONFIGURED: tuple[Caller, ...] = (
    Caller("token-1", "iso-t0-member-0123456789", "member", tenants=("t0",)),
    Caller("token-2", "iso-t1-names-0123456789", "member", agents=("t1.*",)),
    Caller("token-3", ADMIN, "admin"),
    Caller("token-4", "iso-t1t2-viewer-01234567", "viewer", tenants=("t1", "t2")),
    Caller("token-5", "iso-a-t0t2-member-0123456", "member", agents=("a*",),
           tenants=("t0", "t2")),
    Caller("token-6", "iso-all-viewer-0123456789", "viewer"),
    Caller("token-7", "iso-all-member-0123456789", "member"),
)


def _access(caller: Caller) -> dict[str, Any]:
    entry: dict[str, Any] = {"role": caller.role}
    if caller.tenants is not None:
        entry["tenants"] = list(caller.tenants)
    if caller.agents is not None:
        entry["agents"] = list(caller.agents)
    return entry


#: What the daemon's settings say of them (``settings_for(..., **SETTINGS)``).
SETTINGS: dict[str, Any] = {
    "tokens": [c.text for c in CONFIGURED],
    "access": {c.label: _access(c) for c in CONFIGURED if c.label != "token-3"},
}


@dataclass(frozen=True)
class AgentSpec:
    name: str
    tenant: str | None
    #: ``admin``, or ``tenant``: made by a member token bound to its tenant.
    maker: str


@dataclass(frozen=True)
class TokenSpec:
    name: str
    role: str
    tenant: str | None
    agents: tuple[str, ...] | None


@dataclass(frozen=True)
class WorldSpec:
    tenants: tuple[str, ...]
    agents: tuple[AgentSpec, ...]
    tokens: tuple[TokenSpec, ...]

    def tenant_of(self, name: str) -> str | None:
        return next(a.tenant for a in self.agents if a.name == name)


@st.composite
def _agents(draw: st.DrawFn, tenants: tuple[str, ...]) -> tuple[AgentSpec, ...]:
    out: list[AgentSpec] = []
    for i, tenant in enumerate(tenants):
        for j in range(draw(st.integers(1, 3))):
            maker = draw(st.sampled_from(("admin", "tenant")))
            if maker == "tenant":
                out.append(AgentSpec(f"{tenant}.bot{j}", tenant, maker))
                continue
            # The admin names agents as it likes (a `tN.` name is tenant tN's: the
            # daemon refuses one elsewhere), and may leave an agent in no tenant.
            home = draw(st.sampled_from((tenant, tenant, None)))
            names = (f"ax{i}{j}", f"by{i}{j}") + ((f"{tenant}.x{j}",) if home else ())
            out.append(AgentSpec(draw(st.sampled_from(names)), home, maker))
    return tuple(out)


@st.composite
def _tokens(draw: st.DrawFn, tenants: tuple[str, ...], agents: tuple[AgentSpec, ...]
            ) -> tuple[TokenSpec, ...]:
    patterns = sorted({*(a.name for a in agents), *(f"{t}.*" for t in tenants), "a*",
                       "*x*", "t?.bot*", "nobody"})
    out = []
    for n in range(draw(st.integers(1, 4))):
        bound = draw(st.sampled_from(("tenant", "agents", "both")))
        tenant = draw(st.sampled_from(tenants)) if bound != "agents" else None
        names = (tuple(draw(st.lists(st.sampled_from(patterns), min_size=1, max_size=3,
                                     unique=True)))
                 if bound != "tenant" else None)
        out.append(TokenSpec(f"named-{n}", draw(st.sampled_from(ROLES)), tenant, names))
    return tuple(out)


@st.composite
def worlds(draw: st.DrawFn) -> WorldSpec:
    """A world: its tenants, agents and named tokens."""
    tenants = TENANTS[:draw(st.integers(2, 4))]
    agents = draw(_agents(tenants))
    return WorldSpec(tenants, agents, draw(_tokens(tenants, agents)))


@dataclass
class Built:
    """A world as made in a daemon: its objects, and every token as a caller."""

    spec: WorldSpec
    seeded: dict[str, Seeded] = field(default_factory=dict)
    callers: list[Caller] = field(default_factory=list)
    #: Each agent's tenant as the daemon has it now (an allowed write may delete one).
    agents: dict[str, str | None] = field(default_factory=dict)

    @property
    def admin(self) -> Caller:
        return next(c for c in self.callers if c.label == "token-3")


async def _ok(response: httpx.Response, status: int = 201) -> dict[str, Any]:
    assert response.status_code == status, (
        f"{response.request.method} {response.request.url}: {response.status_code} "
        f"{response.text[:500]}")
    body: dict[str, Any] = response.json() if response.content else {}
    return body


async def _mint(api: httpx.AsyncClient, name: str, role: str, tenant: str | None,
                agents: tuple[str, ...] | None) -> Caller:
    body: dict[str, Any] = {"name": name, "role": role}
    if tenant is not None:
        body["tenant"] = tenant
    if agents is not None:
        body["agents"] = list(agents)
    made = await _ok(await api.post("/v1/tokens", headers=auth(ADMIN), json=body))
    return Caller(name, made["token"], role, None if tenant is None else (tenant,),
                  agents, source="api")


async def build(api: httpx.AsyncClient, spec: WorldSpec) -> Built:
    """Make ``spec`` through the API (the admin makes tenants and tokens)."""
    out = Built(spec, callers=list(CONFIGURED))
    # A daemon-wide skill, for the routes that give one to an agent.
    await _ok(await api.post("/v1/skills", headers={**auth(ADMIN), "Content-Type":
                                                    "application/zip"},
                             content=zip_of(good_files(SKILL))))
    for tenant in spec.tenants:
        await _ok(await api.post("/v1/tenants", headers=auth(ADMIN), json={"name": tenant}))
    makers: dict[str, Caller] = {}
    for agent in spec.agents:
        maker = None
        if agent.maker == "tenant":
            assert agent.tenant is not None
            if agent.tenant not in makers:
                makers[agent.tenant] = await _mint(api, f"maker-{agent.tenant}", "member",
                                                   agent.tenant, None)
            maker = auth(makers[agent.tenant].text)
        settings = {} if agent.tenant is None else {"tenant": agent.tenant}
        seeded = await seed(api, agent.name, maker=maker,
                            settings=settings if agent.maker == "admin" else {})
        thread = f"{agent.name}:{THREAD}"
        await _ok(await api.post(f"/langgraph/threads/{thread}/runs/wait", headers=auth(
            ADMIN), json={"assistant_id": agent.name, "input": {"messages": "hi"}}), 200)
        seeded.ids["thread_id"] = thread
        await _ok(await api.put("/langgraph/store/items", headers=auth(ADMIN), json={
            "namespace": [agent.name, "notes"], "key": "k",
            "value": {"of": agent.name}}), 204)
        out.seeded[agent.name] = seeded
        out.agents[agent.name] = agent.tenant
    out.callers += makers.values()
    for token in spec.tokens:
        out.callers.append(await _mint(api, token.name, token.role, token.tenant,
                                       token.agents))
    return out
