"""The `usage` command: model calls, tokens and cost from the daemon's usage ledger."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from agentd.cli._common import connect, echo_json, out
from agentd.cli._render import money

#: The summed columns: (key, header).
_SUMS = (("calls", "CALLS"), ("input_tokens", "INPUT"), ("output_tokens", "OUTPUT"),
         ("cached_tokens", "CACHED"), ("cache_write_tokens", "CACHE WRITE"))
_GROUPS = ("agent", "tenant", "model", "day", "month")


def usage_table(rows: list[dict[str, Any]]) -> Table:
    """One line per group: the grouped-by keys (in the order asked), then the sums."""
    table = Table(show_edge=False, pad_edge=False)
    groups = [g for g in (rows[0] if rows else {}) if g in _GROUPS]
    for group in groups:
        table.add_column(group.upper(), style="bold" if group == "agent" else "", no_wrap=True)
    for _, header in _SUMS:
        table.add_column(header, justify="right")
    table.add_column("COST", justify="right")
    for row in rows:
        table.add_row(
            *[Text(str(row.get(g) or "-")) for g in groups],
            *[f"{int(row.get(key) or 0):,}" for key, _ in _SUMS],
            money(row.get("cost_usd")),
        )
    return table


def totals_line(report: dict[str, Any]) -> str:
    """``total: 3 calls, 1,200 input, 80 output, 0 cached, 0 cache-write tokens, $0.0042
    (since ...)``: the cached and cache-written tokens are part of the input."""
    totals = report.get("totals") or {}
    line = (f"total: {int(totals.get('calls') or 0):,} calls, "
            f"{int(totals.get('input_tokens') or 0):,} input, "
            f"{int(totals.get('output_tokens') or 0):,} output, "
            f"{int(totals.get('cached_tokens') or 0):,} cached, "
            f"{int(totals.get('cache_write_tokens') or 0):,} cache-write tokens, "
            f"{money(totals.get('cost_usd'))}")
    span = [f"{word} {report[word]}" for word in ("since", "until") if report.get(word)]
    return f"{line} ({', '.join(span)})" if span else line


def usage(
    ctx: typer.Context,
    agent: Annotated[
        str | None,
        typer.Option("--agent", metavar="NAME", help="Only this agent (deleted ones too).",
                     show_default=False),
    ] = None,
    tenant: Annotated[
        str | None,
        typer.Option("--tenant", metavar="TENANT", help="Only this tenant.",
                     show_default=False),
    ] = None,
    since: Annotated[
        str | None,
        typer.Option("--since", metavar="YYYY-MM-DD", help="First day counted (UTC).",
                     show_default=False),
    ] = None,
    until: Annotated[
        str | None,
        typer.Option("--until", metavar="YYYY-MM-DD", help="Last day counted (UTC).",
                     show_default=False),
    ] = None,
    by: Annotated[
        str | None,
        typer.Option("--by", metavar="agent,model", show_default=False,
                     help="Group by a comma list of agent, tenant, model, day, month "
                          "[dim]\\[default: totals only][/]"),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the report as JSON.")
    ] = False,
) -> None:
    """Show model calls, tokens and cost (list price, USD), summed and grouped.

    Every model call is recorded per UTC day, agent and model with the step that
    made it; usage stays after its agent is deleted. Days are inclusive.

    [bold]Examples[/]
      $ agentd usage
      $ agentd usage --by agent,model --since 2025-06-01
      $ agentd usage --agent demo --by day
      $ agentd usage --by month --json | jq '.totals.cost_usd'
    """
    with connect(ctx) as client:
        report = client.usage(agent=agent, tenant=tenant, since=since, until=until, by=by)
    if as_json:
        echo_json(report)
        return
    console = out()
    rows = report.get("usage") or []
    if by and rows:
        console.print(usage_table(rows))
    elif by:
        console.print("[dim]no usage recorded for this selection[/]")
    console.print(escape(totals_line(report)), soft_wrap=True)
