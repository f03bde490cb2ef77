"""The usage ledger's SQL: one upsert per charged step, and the sums read back.

``usage_daily`` has a row per UTC day, agent and model. A charge is an
``INSERT ... ON CONFLICT DO UPDATE`` (the same text on SQLite and PostgreSQL) run
inside the transaction that commits the step, so usage is recorded exactly when the
step is. The agent's name and tenant are overwritten by each charge: the row shows
them as they were at the day's last call.

The upsert sets the tenant only when it changed (a second statement, in the same
transaction, on the row the first left locked): SQLite rewrites the entry of an index
on every column a ``SET`` names, even to the same value, so setting ``tenant`` in
every charge wrote a page of ``usage_daily_tenant`` to the WAL in every step's commit
(one of the 19 pages an echo turn wrote).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Sequence
from typing import Any

from agentd.store.engine import Tx
from agentd.store.records import USAGE_GROUPS, UsageCharge

__all__ = ["SUMS", "charge", "report", "total", "utc_day"]

#: The summed columns, in the order rows report them.
SUMS = ("calls", "input_tokens", "output_tokens", "cached_tokens", "cache_write_tokens",
        "cost_usd")

_INSERT = (
    "INSERT INTO usage_daily (day, agent_id, agent, tenant, model, calls, input_tokens, "
    "output_tokens, cached_tokens, cache_write_tokens, cost_usd) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (day, agent_id, model) DO UPDATE SET agent = excluded.agent, "
)
_SUMS_SET = (
    "calls = usage_daily.calls + excluded.calls, "
    "input_tokens = usage_daily.input_tokens + excluded.input_tokens, "
    "output_tokens = usage_daily.output_tokens + excluded.output_tokens, "
    "cached_tokens = usage_daily.cached_tokens + excluded.cached_tokens, "
    "cache_write_tokens = usage_daily.cache_write_tokens + excluded.cache_write_tokens, "
    "cost_usd = usage_daily.cost_usd + excluded.cost_usd"
)
#: A new row, or the sums added to the row of the same tenant (the usual case). A row
#: whose tenant differs is left as it is, and nothing is counted as written (SQLite's
#: changes(), PostgreSQL's row count: a DO UPDATE its WHERE skips is neither).
_CHARGE_SAME_TENANT = _INSERT + _SUMS_SET + " WHERE usage_daily.tenant = excluded.tenant"
#: The sums added and the tenant set: when the agent moved to another tenant today.
_CHARGE = _INSERT + "tenant = excluded.tenant, " + _SUMS_SET

#: The SQL expression behind each group.
_GROUP_SQL = {"agent": "agent", "tenant": "tenant", "model": "model", "day": "day",
              "month": "substr(day, 1, 7)"}
assert tuple(_GROUP_SQL) == USAGE_GROUPS

_SUM_SQL = ", ".join(f"COALESCE(SUM({c}), 0)" for c in SUMS)


@functools.lru_cache(maxsize=4)
def _day_of(day_number: int) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(day_number * 86400))


def utc_day(at: float) -> str:
    """``YYYY-MM-DD`` of epoch seconds ``at``, in UTC (formatted once a day)."""
    return _day_of(int(at // 86400))


def charge(tx: Tx, usage: UsageCharge, at: float) -> None:
    """Add ``usage`` to its (day of ``at``, agent, model) row."""
    params = (utc_day(at), usage.agent_id, usage.agent, usage.tenant, usage.model,
              usage.calls, usage.input_tokens, usage.output_tokens, usage.cached_tokens,
              usage.cache_write_tokens, usage.cost_usd)
    tx.execute(_CHARGE_SAME_TENANT, params)
    if tx.rowcount == 0:
        # The row is another tenant's (the agent moved today): nothing was written.
        tx.execute(_CHARGE, params)


def _where(filters: Sequence[tuple[str, str | None]]) -> tuple[str, list[Any]]:
    terms, params = [], []
    for term, value in filters:
        if value is not None:
            terms.append(term)
            params.append(value)
    return (" WHERE " + " AND ".join(terms) if terms else ""), params


def report(tx: Tx, group_by: Sequence[str], since: str | None, until: str | None,
           agent: str | None, tenant: str | None) -> list[dict[str, Any]]:
    groups = list(dict.fromkeys(group_by))  # each once, in the order asked
    unknown = [g for g in groups if g not in _GROUP_SQL]
    if unknown:
        raise ValueError(f"cannot group usage by {unknown}; choose from {list(USAGE_GROUPS)}")
    where, params = _where([("day >= ?", since), ("day <= ?", until), ("agent = ?", agent),
                            ("tenant = ?", tenant)])
    exprs = [_GROUP_SQL[g] for g in groups]
    sql = f"SELECT {', '.join([*exprs, _SUM_SQL])} FROM usage_daily{where}"
    if exprs:
        sql += f" GROUP BY {', '.join(exprs)} ORDER BY {', '.join(exprs)}"
    rows = tx.all(sql, params)
    n = len(groups)
    return [{**dict(zip(groups, (str(v) for v in row[:n]), strict=True)),
             **_sums(row[n:])} for row in rows]


def _sums(values: Sequence[Any]) -> dict[str, Any]:
    # PostgreSQL sums BIGINT as NUMERIC (Decimal): back to int and float here.
    counts = {c: int(v) for c, v in zip(SUMS[:-1], values[:-1], strict=True)}
    return {**counts, "cost_usd": round(float(values[-1]), 6)}


def total(tx: Tx, since: str, agent_id: str | None, tenant: str | None) -> tuple[int, float]:
    where, params = _where([("day >= ?", since), ("agent_id = ?", agent_id),
                            ("tenant = ?", tenant)])
    row = tx.one("SELECT COALESCE(SUM(input_tokens + output_tokens), 0), "
                 f"COALESCE(SUM(cost_usd), 0) FROM usage_daily{where}", params)
    assert row is not None
    return int(row[0]), round(float(row[1]), 6)
