"""/v1/usage and /v1/agents/{name}/usage: sums from the usage ledger.

Every model call's tokens and cost are recorded per UTC day, agent and model in the
same commit as the step that made it; these routes add them up, grouped and
filtered. Usage is kept by agent name and outlives the agent, so an unknown name in
``?agent=`` is an empty report, not an error.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from agentd.doors.access import access_of
from agentd.doors.http import json_response
from agentd.errors import InvalidInput
from agentd.server.routes._deps import ERRORS, runtime_of
from agentd.server.schemas import UsageOut
from agentd.store.records import USAGE_GROUPS

__all__ = ["router"]

router = APIRouter(tags=["usage"])

_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")
_SUMS = ("calls", "input_tokens", "output_tokens", "cached_tokens", "cache_write_tokens",
         "cost_usd")

_SINCE = Query(default=None, description="First day counted, YYYY-MM-DD (UTC), inclusive.",
               json_schema_extra={"format": "date"})
_UNTIL = Query(default=None, description="Last day counted, YYYY-MM-DD (UTC), inclusive.",
               json_schema_extra={"format": "date"})
_TENANT = Query(default=None, description="Only this tenant's usage.")
_BY = Query(default=None, description="Group by a comma-separated list of agent, tenant, "
                                      "model, day, month (default: totals only).",
            examples=["agent,model"])


def _day(value: str | None, field: str) -> str | None:
    if value is None:
        return None
    try:
        if not _DAY.fullmatch(value):
            raise ValueError(value)
        dt.date.fromisoformat(value)
    except ValueError:
        raise InvalidInput(f"{field} must be a date, YYYY-MM-DD (got {value!r})",
                           field=f"query.{field}") from None
    return value


def _groups(by: str | None) -> list[str]:
    groups = [g.strip() for g in (by or "").split(",") if g.strip()]
    unknown = [g for g in groups if g not in USAGE_GROUPS]
    if unknown:
        raise InvalidInput(f"cannot group usage by {', '.join(map(repr, unknown))}; "
                           f"choose from {', '.join(USAGE_GROUPS)}", field="query.by")
    return groups


def _regroup(rows: list[dict[str, Any]], groups: list[str]) -> list[dict[str, Any]]:
    """``rows`` (grouped finer) summed again by ``groups`` only, in their order."""
    sums: dict[tuple[Any, ...], dict[str, Any]] = {}
    if not groups:  # totals only: one row, as the ledger's own query answers
        sums[()] = {**{k: 0 for k in _SUMS[:-1]}, "cost_usd": 0.0}
    for row in rows:
        key = tuple(row[g] for g in groups)
        out = sums.get(key)
        if out is None:
            sums[key] = {**{g: row[g] for g in groups}, **{k: row[k] for k in _SUMS}}
        else:
            for k in _SUMS:
                out[k] += row[k]
    for out in sums.values():
        out["cost_usd"] = round(out["cost_usd"], 6)
    return sorted(sums.values(), key=lambda r: tuple(str(r[g]) for g in groups))


async def _report(request: Request, *, agent: str | None, tenant: str | None,
                  since: str | None, until: str | None, by: str | None) -> Response:
    since, until = _day(since, "since"), _day(until, "until")
    if since is not None and until is not None and since > until:
        raise InvalidInput(f"since ({since}) is after until ({until})", field="query.since")
    groups = _groups(by)
    access = access_of(request.scope)
    if access.everything:
        rows = await runtime_of(request).usage_report(
            group_by=groups, since=since, until=until, agent=agent, tenant=tenant)
    else:
        # A scoped token's share: the ledger's rows (each names its agent and tenant)
        # filtered by the scope's patterns, so deleted agents' usage counts too.
        rows = await runtime_of(request).usage_report(
            group_by=[*groups, *(g for g in ("agent", "tenant") if g not in groups)],
            since=since, until=until, agent=agent, tenant=tenant)
        rows = _regroup([r for r in rows if access.allows(r["agent"], r["tenant"])],
                        groups)
    totals: dict[str, Any] = {k: sum(r[k] for r in rows) for k in _SUMS}
    totals["cost_usd"] = round(totals["cost_usd"], 6)
    # By hand: a row's keys come in the order of ``by`` (the CLI's columns), which a
    # model would reorder. test_openapi_contract.py checks it against UsageOut.
    return json_response({"usage": rows, "totals": totals, "since": since, "until": until})


@router.get("/v1/usage", response_model=UsageOut, responses=ERRORS(422))
async def usage(
    request: Request,
    agent: str | None = Query(default=None, description="Only this agent's usage (by name; "
                                                        "deleted agents keep theirs)."),
    tenant: str | None = _TENANT,
    since: str | None = _SINCE,
    until: str | None = _UNTIL,
    by: str | None = _BY,
) -> Response:
    """Calls, tokens and cost from the usage ledger, summed per group (``by``) over an
    inclusive range of UTC days, with the totals."""
    return await _report(request, agent=agent, tenant=tenant, since=since, until=until,
                         by=by)


@router.get("/v1/agents/{name}/usage", response_model=UsageOut, responses=ERRORS(404, 422))
async def agent_usage(
    name: str,
    request: Request,
    tenant: str | None = _TENANT,
    since: str | None = _SINCE,
    until: str | None = _UNTIL,
    by: str | None = _BY,
) -> Response:
    """``GET /v1/usage?agent={name}`` for an agent that exists (404 otherwise)."""
    await runtime_of(request).stored_agent(name)  # 404; a read, it wakes nobody
    return await _report(request, agent=name, tenant=tenant, since=since, until=until,
                         by=by)
