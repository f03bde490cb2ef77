"""Token scopes on the request side: the :class:`~agentd.security.access.Access` of a
request, and the checks every route and door makes with it.

One rule everywhere: an agent outside the request's scope is answered exactly like an
agent that does not exist (``AgentNotFound``, the store's own message), and anything
of it found by id (a run, a checkpoint, a schedule, an approval...) like an id that
does not exist (that object's own not-found). Nothing is written before the check.

=============================  ======================================================
:func:`agent_in_scope`         the app's dependency: every route under
                               ``/v1/agents/{name}`` checks ``name`` before anything
:func:`require_agent`          one agent by name (404 ``agent_not_found``)
:func:`require_owner`          an object of an agent found by id: raise its own 404
:func:`require_run`            a run by id (404 ``run_not_found``)
:func:`visible_agents`         a list route's agents (None: every agent)
:func:`require_new_agent`      creating or changing an agent keeps it in the scope
:func:`require_candidate`      a fork's or eval run's settings keep the agent there
:func:`require_unscoped`       daemon-wide writes (skills) are for unscoped tokens
:func:`runtime_of`             the runtime a request reaches (the one way in)
:func:`whole_tenant`           a scope holding every agent of a tenant (its secrets)
=============================  ======================================================
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from starlette.requests import HTTPConnection
from starlette.types import Scope

from agentd.assembly import Runtime
from agentd.doors.http import actor, principal_of
from agentd.errors import AgentdError, AgentNotFound, Forbidden, RunNotFound
from agentd.security.access import EVERYTHING, Access, Scopes, tenant_of
from agentd.security.identity import DAEMON_WIDE, RIGHTS, Principal, Right, rank
from agentd.store.records import AgentRecord

__all__ = ["AGENT_PATH", "access_of", "agent_in_scope", "filter_agents", "may_use",
           "new_agent_settings", "not_found", "refused", "require_agent",
           "require_candidate", "require_new_agent", "require_owner", "require_right",
           "require_run", "require_unscoped", "runtime_of", "visible_agents", "whole_tenant"]

def runtime_of(request: HTTPConnection) -> Runtime:
    """The runtime a request reaches: every door's one way to the agents."""
    runtime: Runtime = request.app.state.runtime
    return runtime


#: The route template prefix whose ``{name}`` :func:`agent_in_scope` checks.
AGENT_PATH = "/v1/agents/{name}"


def access_of(scope: Scope) -> Access:
    """The access of the request ``scope``: its principal's (a named token's scope, a
    configured token's ``[access]``); every agent for a request without a token."""
    principal = scope.get("state", {}).get("principal")
    if isinstance(principal, Principal):
        return principal.access
    app = scope.get("app")
    scopes: Scopes | None = getattr(getattr(app, "state", None), "scopes", None)
    if not scopes:
        return EVERYTHING
    token = scope.get("state", {}).get("token")
    return scopes.of(token if isinstance(token, str) else None)


def _runtime(conn: HTTPConnection) -> Runtime:
    runtime: Runtime = conn.app.state.runtime
    return runtime


def not_found(name: str) -> AgentNotFound:
    """What a request about an agent outside its scope is told: what the store says
    of an agent that does not exist."""
    return AgentNotFound(f"agent {name!r} not found")


async def may_use(conn: HTTPConnection, name: str, access: Access | None = None) -> bool:
    """Whether the request may use the agent ``name`` (False for one that does not
    exist, when its tenant had to be read)."""
    access = access or access_of(conn.scope)
    if access.everything:
        return True
    if not access.allows_name(name):
        return False
    if not access.needs_tenant:
        return True
    try:
        agent = await _runtime(conn).stored_agent(name)
    except AgentNotFound:
        return False
    return access.allows_agent(agent)


def refused(conn: HTTPConnection | Scope, error: AgentdError, reason: str | None = None
            ) -> None:
    """Tell the audit log of a refusal (the app's ``on_refused``), once per error."""
    scope = conn.scope if isinstance(conn, HTTPConnection) else conn
    record = getattr(getattr(scope.get("app"), "state", None), "on_refused", None)
    if record is not None and not getattr(error, "audited", False):
        error.audited = True  # type: ignore[attr-defined]
        record(scope, error, reason)


async def require_agent(conn: HTTPConnection, name: str) -> None:
    """``AgentNotFound`` unless the request may use the agent ``name``. For a scoped
    token whose scope has tenants this reads the agent (an agent that does not exist
    gets the store's own answer, the same)."""
    access = access_of(conn.scope)
    if access.everything:
        return
    if not access.allows_name(name):
        error = not_found(name)
        refused(conn, error, f"agent {name!r} is outside the token's scope")
        raise error
    if access.needs_tenant:
        agent = await _runtime(conn).stored_agent(name)
        if not access.allows_agent(agent):
            error = not_found(name)
            refused(conn, error, f"agent {name!r} is outside the token's scope")
            raise error


async def require_owner(conn: HTTPConnection, agent: str, error: AgentdError) -> None:
    """Raise ``error`` (the object's own not-found) unless the request may use
    ``agent``, the agent the object belongs to."""
    if not await may_use(conn, agent):
        refused(conn, error, f"it belongs to agent {agent!r}, outside the token's scope")
        raise error


async def require_run(conn: HTTPConnection, run_id: str) -> None:
    """``RunNotFound`` (the store's own) unless ``run_id`` is a run of an agent the
    request may use (nothing is read for an unscoped token)."""
    if access_of(conn.scope).everything:
        return
    _, agent, _ = await _runtime(conn).get_run(run_id)
    await require_owner(conn, agent, RunNotFound(f"run {run_id!r} not found"))


async def agent_in_scope(conn: HTTPConnection) -> None:
    """The app's dependency (``create_app``): every route whose path starts with
    ``/v1/agents/{name}`` refuses an agent outside the request's scope before its
    body, query or the agent is read. WebSockets check in their handler (a refused
    handshake has its own shape there)."""
    if conn.scope["type"] != "http":
        return
    route = conn.scope.get("route")
    if getattr(route, "path", "").startswith(AGENT_PATH):
        await require_agent(conn, conn.path_params["name"])


def filter_agents(conn: HTTPConnection, agents: Iterable[AgentRecord]) -> list[AgentRecord]:
    """The agents of ``agents`` the request may use."""
    access = access_of(conn.scope)
    return list(agents) if access.everything else [
        a for a in agents if access.allows_agent(a)]


async def visible_agents(conn: HTTPConnection) -> list[AgentRecord] | None:
    """The agents a list route may show: None for every agent (an unscoped token:
    nothing is read), else the scope's agents (one read of the agents)."""
    access = access_of(conn.scope)
    if access.everything:
        return None
    return [a for a in await _runtime(conn).list_agents() if access.allows_agent(a)]


def new_agent_settings(conn: HTTPConnection, settings: dict[str, Any]) -> dict[str, Any]:
    """``settings`` of an agent a request creates, with its token's tenant when they
    name none (a token bound to a tenant creates its agents there)."""
    principal = principal_of(conn.scope)
    if principal is not None and principal.tenant is not None and "tenant" not in settings:
        return {**settings, "tenant": principal.tenant}
    return settings


def require_new_agent(conn: HTTPConnection, name: str, settings: Mapping[str, Any],
                      before: AgentRecord | None = None) -> None:
    """Creating agent ``name`` with ``settings`` (``before``: changing it from that)
    leaves it in the request's scope, and joins it to no shared memory namespace the
    scope does not allow; Forbidden (403) saying why otherwise.

    A named token bound to a tenant (with agent patterns or without) creates only
    agents named ``<tenant>.<name>``: agent names are daemon-wide, and a name in
    another tenant's part of them would answer "exists", telling it that agent is
    there (patterns that match another tenant's agent would let it ask)."""
    principal = principal_of(conn.scope)
    if (before is None and principal is not None and principal.source == "api"
            and principal.tenant is not None
            and not name.startswith(principal.tenant + ".")):
        error = Forbidden(f"token {principal.label!r} is bound to tenant "
                          f"{principal.tenant!r}: its agents are named "
                          f"'{principal.tenant}.<name>'", details={"field": "body.name"})
        refused(conn, error)
        raise error
    access = access_of(conn.scope)
    if access.everything:
        return
    if not access.allows_settings(name, settings):
        tenant = tenant_of(settings)
        doing = "move" if before is not None else "create"
        raise Forbidden(f"token {access.token!r} may not {doing} agent {name!r} "
                        f"{'to' if before is not None else 'in'} tenant {tenant!r}: its "
                        f"scope is {access.describe}",
                        details={"field": "body.settings.tenant" if before is not None
                                 or access.allows_name(name) else "body.name"})
    added = access.new_namespaces(before.settings if before is not None else None,
                                  settings)
    if added:
        raise Forbidden(f"token {access.token!r} may not give an agent the shared memory "
                        f"namespace(s) {', '.join(map(repr, added))} (its scope's "
                        "`namespaces` do not match)",
                        details={"field": "body.settings.memory.namespaces"})


async def require_candidate(conn: HTTPConnection, name: str,
                            settings: Mapping[str, Any] | None) -> None:
    """A fork's or an eval run's ``settings`` over agent ``name``'s keep it where the
    request's scope allows (:func:`require_new_agent` of the settings it would run
    with): a candidate gains no tenant or namespace its token could not give."""
    if not settings or access_of(conn.scope).everything:
        return
    stored = await _runtime(conn).stored_agent(name)
    require_new_agent(conn, name, {**stored.settings, **settings}, stored)


def require_unscoped(conn: HTTPConnection, what: str) -> None:
    """Forbidden (403) for a scoped token: ``what`` changes the whole daemon."""
    access = access_of(conn.scope)
    if not access.everything:
        raise Forbidden(f"{what} changes every agent's daemon: token {access.token!r} is "
                        f"scoped to {access.describe}")


def require_right(conn: HTTPConnection, right: Right, what: str) -> Principal:
    """The request's principal, if its role holds ``right``; Forbidden (403) naming
    the role otherwise, Unauthorized (401) without a token."""
    principal = actor(conn.scope, what)
    if not principal.may(right) and principal.may("use") and right in DAEMON_WIDE and (
            rank(principal.role) >= rank(RIGHTS[right])):
        raise Forbidden(f"{what} needs a token whose scope is every agent (it reaches "
                        f"every tenant): token {principal.label!r} is scoped to "
                        f"{principal.access.describe}")
    if not principal.may(right):
        raise Forbidden(f"{what} needs a token of role {RIGHTS[right]!r} or above: token "
                        f"{principal.label!r} is {principal.role!r}")
    return principal


def whole_tenant(principal: Principal, tenant: str) -> bool:
    """Whether ``principal``'s scope holds every agent of ``tenant`` (and no other
    tenant binds it): what a tenant's own secrets and shared tokens need."""
    access = principal.access
    if principal.tenant is not None and principal.tenant != tenant:
        return False
    if access.everything:
        return True
    return (access.agent_patterns is None and access.tenants is not None
            and access.tenants.fullmatch(tenant) is not None)
