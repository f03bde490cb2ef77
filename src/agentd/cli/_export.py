"""``agentd export``: finished runs, and preference pairs, as JSON lines (streamed)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.text import Text

from agentd.cli._common import connect, err, fail, write_lines

__all__ = ["export_app"]

export_app = typer.Typer(
    help="Runs as data: finished runs and preference pairs as JSON lines.",
    no_args_is_help=True)

Agent = Annotated[str | None, typer.Option(
    "--agent", "-a", help="Only this agent's runs.", show_default=False)]
Status = Annotated[list[str] | None, typer.Option(
    "--status", "-s", help="Only runs that ended so (repeat, or comma-separated): "
                           "completed, failed, cancelled, interrupted.",
    show_default=False)]
Since = Annotated[str | None, typer.Option(
    "--since", help="Only runs created at or after this ISO 8601 date or time (UTC).",
    show_default=False)]
Until = Annotated[str | None, typer.Option(
    "--until", help="Only runs created before this ISO 8601 date or time (UTC).",
    show_default=False)]
Limit = Annotated[int | None, typer.Option(
    "--limit", "-n", min=1, help="At most this many runs (newest first).",
    show_default=False)]
MaxChars = Annotated[int | None, typer.Option(
    "--max-chars", min=0, help="Cut any string longer than this (0: keep all; "
                               "default 65536).", show_default=False)]
Output = Annotated[Path | None, typer.Option(
    "--output", "-o", metavar="FILE", help="Write here instead of stdout (replaced only "
                                           "once the export is complete).",
    show_default=False, dir_okay=False)]


def _check(*paths: Path | None) -> None:
    for path in paths:
        if path is not None and not path.parent.is_dir():
            fail(f"{path.parent}: no such directory")


def _statuses(status: list[str] | None) -> list[str] | None:
    return [s.strip() for item in status or () for s in item.split(",") if s.strip()] or None


@export_app.command("traces")
def traces(
    ctx: typer.Context, agent: Agent = None, status: Status = None, since: Since = None,
    until: Until = None, limit: Limit = None, max_chars: MaxChars = None,
    output: Output = None,
    context: Annotated[bool, typer.Option(
        "--context", help="Also the conversation the model had before each run (reads "
                          "each run's session up to it).")] = False,
    pairs: Annotated[Path | None, typer.Option(
        "--pairs", metavar="FILE", help="Also write the preference pairs of the same "
                                        "runs to FILE.", show_default=False,
        dir_okay=False)] = None,
    denied: Annotated[bool, typer.Option(
        "--denied", help="With --pairs: also pair a denied call with the model's next "
                         "step.")] = False,
) -> None:
    """Write finished runs as JSON lines, newest first: messages, tool calls and their
    outcomes, model calls, output, usage, cost and error.

    [bold]Examples[/]
      $ agentd export traces -o runs.jsonl --since 2026-11-01
      $ agentd export traces --agent demo --status failed -n 100 | jq .error
      $ agentd export traces -o runs.jsonl --pairs pairs.jsonl
    """
    _check(output, pairs)
    with connect(ctx) as client:
        with client.export_runs(agent=agent, status=_statuses(status), since=since,
                                until=until, limit=limit, context=context,
                                max_chars=max_chars) as lines:
            runs = write_lines(lines, output)
        if pairs is not None:
            with client.export_pairs(agent=agent, status=_statuses(status), since=since,
                                     until=until, limit=limit, denied=denied,
                                     max_chars=max_chars) as lines:
                found = write_lines(lines, pairs)
            err().print(Text(f"{found} preference pair(s) to {pairs}"), soft_wrap=True)
    if output is not None:
        err().print(Text(f"{runs} run(s) to {output}"), soft_wrap=True)


@export_app.command("pairs")
def pairs_(
    ctx: typer.Context, agent: Agent = None, status: Status = None, since: Since = None,
    until: Until = None, limit: Limit = None, max_chars: MaxChars = None,
    output: Output = None,
    denied: Annotated[bool, typer.Option(
        "--denied", help="Also pair a denied call (rejected) with the model's next step "
                         "(chosen).")] = False,
) -> None:
    """Write preference pairs (prompt, chosen, rejected: the conversational format
    TRL's DPOTrainer reads) from approvals: a tool call approved with edited arguments
    (chosen) against the call as the model wrote it (rejected).

    [bold]Examples[/]
      $ agentd export pairs -o pairs.jsonl
      $ agentd export pairs --agent demo --denied --since 2026-11-01
    """
    _check(output)
    with connect(ctx) as client, client.export_pairs(
            agent=agent, status=_statuses(status), since=since, until=until, limit=limit,
            denied=denied, max_chars=max_chars) as lines:
        found = write_lines(lines, output)
    if output is not None:
        err().print(Text(f"{found} preference pair(s) to {output}"), soft_wrap=True)
