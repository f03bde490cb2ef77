"""Run commands: `agentd runs` lists runs, `agentd run` shows one, `agentd cancel` stops
one, `agentd decide` settles one waiting on a tool call of unknown outcome."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from agentd.cli._common import TERMINAL_STATUSES, connect, echo_json, more_hint, out
from agentd.cli._render import (
    error_line,
    error_of,
    run_details,
    short,
    status_text,
    waiting_line,
    when,
)
from agentd.client import Client

RunIdArg = Annotated[
    str, typer.Argument(help="Run id (r_...), as printed by send --no-wait.", show_default=False)
]


def show_run(
    ctx: typer.Context,
    run_id: RunIdArg,
    as_json: Annotated[bool, typer.Option("--json", help="Print the run as JSON.")] = False,
) -> None:
    """Show a run: status, agent, session, steps, usage, output or error, and for a
    run that has not ended, what it waits for (the run ahead of it, an approval and
    the commands that decide it, a model retrying or unreachable, a tool call).

    Exits with code 0 whatever the run's status (see [bold]status[/] in the
    output, or [bold].status[/] with --json).

    [bold]Examples[/]
      $ agentd run r_0192c3d4e5f6a1b2c3d4e5f6a7
      $ agentd run "$(agentd send demo hi --no-wait)" --json | jq .status
    """
    with connect(ctx) as client:
        run = client.get_run(run_id)
        waits = [] if as_json else waits_for(client, run)
    if as_json:
        echo_json(run)
        return
    out().print(run_details(run))
    for line in waits:
        out().print(line, soft_wrap=True)


#: How far back in its session `agentd run` looks for what a running run is doing.
_TAIL = 50


def waits_for(client: Client, run: dict[str, Any]) -> list[Text]:
    """What a run that has not ended waits for, in lines: the run queued ahead of it,
    the approvals it waits on (with the commands that decide them), or what its last
    event says (a model retrying or unreachable, a rate limit, a tool call under way).
    Nothing for an ended run."""
    status, rid = run.get("status"), run.get("id")
    agent, key = str(run.get("agent", "")), str(run.get("session", ""))
    if status == "queued":
        ahead = [r for r in client.list_runs(
            agent=agent, session=key, status=["running", "waiting_approval"],
            limit=5).get("runs", []) if r.get("id") != rid]
        cause = f"run {ahead[0].get('id')} is ahead of it" if ahead else None
        return [Text(waiting_line({"reason": "queued", "cause": cause}), style="yellow")]
    if status == "waiting_approval":
        lines = []
        for request in client.approvals(agent):
            if request.get("run_id") != rid:
                continue
            lines.append(Text(f"waiting: approval of {request.get('name')}: "
                              f"{request.get('reason') or ''}", style="yellow"))
            lines.append(Text(f"  agentd approve {request.get('approval_id')}   or   "
                              f"agentd deny {request.get('approval_id')}"))
        return lines or [Text("waiting: a decision (agentd approvals)", style="yellow")]
    if status != "running":
        return []
    last = int(client.get_session(agent, key).get("last_seq") or 0)
    mine = [e for e in client.events(agent, key, after=max(0, last - _TAIL))
            if e.get("run_id") == rid]
    latest: dict[str, Any] = mine[-1] if mine else {}
    data: dict[str, Any] = latest.get("data") or {}
    if latest.get("kind") == "run.waiting":
        return [Text(waiting_line(data), style="yellow")]
    if latest.get("kind") == "tool.started":
        return [Text(f"in a tool call: {data.get('name')}"
                     f"({short(data.get('arguments') or '', 200)})", style="yellow")]
    return []


def cancel(
    ctx: typer.Context,
    run_id: RunIdArg,
    as_json: Annotated[bool, typer.Option("--json", help="Print the run as JSON.")] = False,
) -> None:
    """Cancel a queued or running run and print its final status.

    The daemon answers once the run has ended. A run that had already ended
    is left as it was, and the command still exits 0. To cancel every run of
    an agent, use [bold]agentd stop-agent NAME[/].

    [bold]Examples[/]
      $ agentd cancel r_0192c3d4e5f6a1b2c3d4e5f6a7
      $ agentd cancel "$RUN" --json | jq .status
    """
    with connect(ctx) as client:
        run = client.cancel_run(run_id)
    if as_json:
        echo_json(run)
        return
    rid = escape(str(run.get("id", run_id)))
    status = str(run.get("status", "?"))
    if status == "cancelled":
        out().print(f"run [bold]{rid}[/] is cancelled", soft_wrap=True)
    elif status in TERMINAL_STATUSES:
        ended = status
        if status == "failed":
            ended += f": {error_line(error_of(run.get('error') or {}))}"
        out().print(
            f"run [bold]{rid}[/] had already ended ({escape(ended)}); nothing to cancel",
            soft_wrap=True,
        )
    else:
        # The daemon answers only once the run has ended, so this is not expected.
        out().print(f"run [bold]{rid}[/] is {escape(status)}", soft_wrap=True)


def decide(
    ctx: typer.Context,
    run_id: RunIdArg,
    action: Annotated[
        str,
        typer.Argument(help="retry, skip or fail.", show_default=False),
    ],
    output: Annotated[
        str | None,
        typer.Option("--output", "-o", help="With skip: the result the model is given.",
                     show_default=False),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the run as JSON.")] = False,
) -> None:
    """Decide about a run waiting on a tool call of unknown outcome.

    After a crash, a non-idempotent tool call that had started but has no recorded
    result is never repeated on its own: its run waits ([bold]waiting_approval[/]).
    [bold]retry[/] runs the call again with the same effect id, [bold]skip[/] gives
    the model --output as its result, [bold]fail[/] ends the run.

    [bold]Examples[/]
      $ agentd decide r_0192c3d4e5f6a1b2c3d4e5f6a7 retry
      $ agentd decide "$RUN" skip --output "the email was sent"
    """
    if action not in ("retry", "skip", "fail"):
        raise typer.BadParameter("use retry, skip or fail", param_hint="ACTION")
    with connect(ctx) as client:
        run = client.decide_run(run_id, action, output)
    if as_json:
        echo_json(run)
        return
    out().print(f"run [bold]{escape(str(run.get('id', run_id)))}[/] is "
                f"{escape(str(run.get('status', '?')))} ({escape(action)})", soft_wrap=True)


def runs_table(found: list[dict[str, Any]], width: int = 200) -> Table:
    """One line per run. The input is shown when ``width`` leaves room for it (the
    other columns take about 100 characters), the time under 120 columns not; cut,
    never wrapped, the run id and status never cut."""
    room = width - 100
    table = Table(show_edge=False, pad_edge=False)
    # Whole, however narrow the terminal (the others give way): an id is to be copied
    # into `agentd run`, and at 80 columns it was cut to "r_01a2…".
    longest = max((len(str(run.get("id", ""))) for run in found), default=3)
    table.add_column("RUN", style="bold", no_wrap=True, min_width=longest)
    narrow = width < 120
    table.add_column("AGENT", no_wrap=True, overflow="ellipsis",
                     max_width=8 if narrow else None)
    table.add_column("SESSION", no_wrap=True, overflow="ellipsis",
                     max_width=9 if narrow else None)
    statuses = max((len(str(run.get("status", ""))) for run in found), default=6)
    table.add_column("STATUS", no_wrap=True, min_width=statuses)
    table.add_column("STEPS", justify="right", no_wrap=True, min_width=5)
    # Under 120 columns the id and status take the room (`agentd run ID` has the time).
    dated = not narrow
    if dated:
        table.add_column("CREATED", style="dim", no_wrap=True)
    if room >= 12:
        table.add_column("INPUT", no_wrap=True, overflow="ellipsis", max_width=room)
    for run in found:
        cells: list[Any] = [
            Text(str(run.get("id", ""))), Text(short(str(run.get("agent", "")), 16)),
            Text(short(str(run.get("session", "")), 24)), status_text(run.get("status")),
            str(run.get("steps", ""))]
        if dated:
            cells.append(when(run.get("created_at")))
        if room >= 12:
            cells.append(Text(short(str(run.get("input", "")), 60)))
        table.add_row(*cells)
    return table


def runs(
    ctx: typer.Context,
    agent: Annotated[str | None, typer.Option(
        "--agent", "-a", help="Only this agent's runs.", show_default=False)] = None,
    session: Annotated[str | None, typer.Option(
        "--session", "-s", help="Only this session's runs (with --agent).",
        show_default=False)] = None,
    status: Annotated[list[str] | None, typer.Option(
        "--status", help="Only runs in this status (repeat, or comma-separate): queued, "
        "running, waiting_approval, completed, failed, cancelled, interrupted.",
        show_default=False)] = None,
    since: Annotated[str | None, typer.Option(
        "--since", metavar="WHEN", help="Only runs created at or after WHEN "
        "(ISO 8601: 2025-01-31 or 2025-01-31T12:00:00Z).", show_default=False)] = None,
    limit: Annotated[int, typer.Option(
        "--limit", "-n", min=1, help="Show at most N runs.")] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="Print the runs as JSON.")] = False,
) -> None:
    """List runs, newest first, across agents and sessions.

    [bold]Examples[/]
      $ agentd runs
      $ agentd runs --agent demo --status failed
      $ agentd runs --status queued,running --limit 100 --json | jq -r '.[].id'
    """
    statuses = [s.strip() for item in status or [] for s in item.split(",") if s.strip()]
    found: list[dict[str, Any]] = []
    more = False
    with connect(ctx) as client:
        cursor: str | None = None
        while len(found) < limit:
            page = client.list_runs(agent=agent, session=session, status=statuses or None,
                                    since=since, limit=min(limit - len(found), 1000),
                                    cursor=cursor)
            found.extend(page.get("runs", []))
            cursor = page.get("next_cursor")
            more = bool(cursor)
            if not cursor:
                break
    if as_json:
        echo_json(found)
    elif not found:
        out().print("[dim]no runs match[/]")
    else:
        console = out()
        console.print(runs_table(found, console.width))
    if more:
        more_hint(f"more runs match; show more with --limit {limit * 5}", as_json)
