"""`agentd schedule add|list|show|pause|resume|delete|next|fires`: messages an agent
gets on a clock, over the HTTP API (``agentd.client``).

A schedule's content may have been written by an agent's tool, so it is printed as
plain ``Text`` on the safe console, never parsed as markup.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from agentd.cli._common import AgentArg, JsonFlag, connect, echo_json, fail, out
from agentd.cli._render import short, when

__all__ = ["schedule_app"]

schedule_app = typer.Typer(
    name="schedule",
    help="Schedules: messages an agent gets on a cron expression, an interval or once "
         "at a time; each fire time runs exactly once.",
    no_args_is_help=True,
    rich_markup_mode="rich",
)

IdArg = Annotated[str, typer.Argument(metavar="ID", help="The schedule's id (sch_...).",
                                      show_default=False)]


def _timing(item: dict[str, Any]) -> str:
    if item.get("cron"):
        return f"cron {item['cron']} ({item.get('timezone')})"
    if item.get("every_s"):
        return f"every {item['every_s']:g}s"
    return f"at {item.get('at')}"


def _state(item: dict[str, Any]) -> Text:
    if item.get("enabled"):
        return Text("enabled" if item.get("next_fire_at") else "finished")
    return Text(f"paused: {item.get('paused_reason') or ''}".rstrip(": "),
                style="yellow")


def _table(items: list[dict[str, Any]], width: int = 200) -> Table:
    """One line per schedule, never wrapped: the id whole (to copy into `schedule
    show`), each header whole; under 120 columns the session and content are left out
    (`schedule show ID` has them). At 80 columns the headers had shrunk to "…" and the
    content wrapped a letter a line."""
    wide = width >= 120
    # One agent's (`schedule list AGENT`) need not say whose they are when narrow.
    agents = wide or len({item["agent"] for item in items}) > 1
    table = Table(show_edge=False, pad_edge=False)
    longest = max((len(str(item["id"])) for item in items), default=2)
    table.add_column("ID", no_wrap=True, min_width=longest)
    if agents:
        table.add_column("AGENT", no_wrap=True, overflow="ellipsis", min_width=5,
                         max_width=24 if wide else 10)
    timings = max((len(_timing(item)) for item in items), default=4)
    table.add_column("WHEN", no_wrap=True, overflow="ellipsis",
                     min_width=min(timings, 40) if wide else 4)
    table.add_column("NEXT (UTC)", no_wrap=True, min_width=10)
    table.add_column("STATE", no_wrap=True, overflow="ellipsis", min_width=7)
    if wide:
        table.add_column("SESSION", no_wrap=True, overflow="ellipsis", min_width=7)
        table.add_column("CONTENT", no_wrap=True, overflow="ellipsis", min_width=7)
    for item in items:
        nxt = when(item.get("next_fire_at")) or "-"
        cells = [Text(str(item["id"]))]
        if agents:
            cells.append(Text(str(item["agent"])))
        cells += [Text(_timing(item)), Text(nxt if wide else nxt[5:16] or "-"),
                  _state(item)]
        if wide:
            cells += [Text(str(item.get("session") or "(new each fire)")),
                      Text(short(str(item.get("content") or ""), 60))]
        table.add_row(*cells)
    return table


def _show(item: dict[str, Any]) -> None:
    console = out()
    console.print(Text(f"{item['id']} (agent {item['agent']}): {_timing(item)}"),
                  soft_wrap=True)
    console.print(Text("state: ") + _state(item), soft_wrap=True)
    console.print(Text(f"next: {item.get('next_fire_at') or '-'}"), soft_wrap=True)
    for at in item.get("next") or []:
        console.print(Text(f"  {at}"), soft_wrap=True)
    console.print(Text(f"session: {item.get('session') or '(a new one each fire)'}; "
                       f"overlap: {item.get('overlap')}; missed: {item.get('missed')}; "
                       f"fires: {item.get('fires')}, missed: {item.get('missed_count')}, "
                       f"skipped: {item.get('skipped_count')}, failures in a row: "
                       f"{item.get('failures')}"), soft_wrap=True)
    console.print(Text(f"content: {item.get('content')}"), soft_wrap=True)


@schedule_app.command("add")
def add(
    ctx: typer.Context,
    agent: AgentArg,
    content: Annotated[str, typer.Argument(metavar="MESSAGE", help="What each fire sends.",
                                           show_default=False)],
    cron: Annotated[str | None, typer.Option("--cron", metavar="EXPR",
                                             help='5 fields, e.g. "0 9 * * 1-5".',
                                             show_default=False)] = None,
    every: Annotated[float | None, typer.Option("--every", metavar="SECONDS",
                                                help="Fire every this many seconds.",
                                                show_default=False)] = None,
    at: Annotated[str | None, typer.Option("--at", metavar="TIME",
                                           help="Fire once at this ISO 8601 time.",
                                           show_default=False)] = None,
    tz: Annotated[str | None, typer.Option("--tz", metavar="ZONE",
                                           help="IANA time zone (default UTC).",
                                           show_default=False)] = None,
    session: Annotated[str | None, typer.Option(
        "--session", "-s", metavar="KEY",
        help="The session every fire goes to (default: a new one per fire).",
        show_default=False)] = None,
    overlap: Annotated[str | None, typer.Option(
        "--overlap", metavar="MODE", help="skip, enqueue or interrupt.",
        show_default=False)] = None,
    missed: Annotated[str | None, typer.Option(
        "--missed", metavar="POLICY", help="skip, once or all.", show_default=False)] = None,
    jitter: Annotated[float | None, typer.Option("--jitter", metavar="SECONDS",
                                                 show_default=False)] = None,
    ends_at: Annotated[str | None, typer.Option("--until", metavar="TIME",
                                                help="No fire after this time.",
                                                show_default=False)] = None,
    as_json: JsonFlag = False,
) -> None:
    """Add a schedule to an agent (exactly one of --cron, --every, --at).

    [bold]Examples[/]
      $ agentd schedule add demo "Morning summary" --cron "0 9 * * 1-5" --tz Europe/Berlin
      $ agentd schedule add demo "ping" --every 3600 --session ops
      $ agentd schedule add demo "Call Ann" --at 2030-01-31T09:00:00+01:00
    """
    if sum(x is not None for x in (cron, every, at)) != 1:
        fail("give exactly one of --cron, --every and --at", 2)
    with connect(ctx) as client:
        made = client.create_schedule(agent, content, cron=cron, every_s=every, at=at,
                                      timezone=tz, session=session, overlap=overlap,
                                      missed=missed, jitter_s=jitter, ends_at=ends_at)
    if as_json:
        echo_json(made)
    else:
        out().print(Text(f"scheduled {made['id']}: {_timing(made)}, next "
                         f"{made.get('next_fire_at') or '-'}"), soft_wrap=True)


@schedule_app.command("list")
def list_(
    ctx: typer.Context,
    agent: Annotated[str | None, typer.Argument(metavar="[AGENT]",
                                                help="Only this agent's.",
                                                show_default=False)] = None,
    as_json: JsonFlag = False,
) -> None:
    """List schedules (of one agent, or of every agent)."""
    with connect(ctx) as client:
        items = list(client.list_schedules(agent))
    if as_json:
        echo_json(items)
    elif not items:
        out().print("no schedules")
    else:
        console = out()
        console.print(_table(items, console.width))


@schedule_app.command("show")
def show(ctx: typer.Context, schedule_id: IdArg, as_json: JsonFlag = False) -> None:
    """Show one schedule."""
    with connect(ctx) as client:
        item = client.get_schedule(schedule_id)
    echo_json(item) if as_json else _show(item)


@schedule_app.command("next")
def next_(
    ctx: typer.Context,
    schedule_id: IdArg,
    count: Annotated[int, typer.Option("--count", "-n", min=1, max=100, metavar="N",
                                       help="How many fire times.")] = 5,
    as_json: JsonFlag = False,
) -> None:
    """The schedule's next fire times (UTC)."""
    with connect(ctx) as client:
        item = client.get_schedule(schedule_id, next=count)
    if as_json:
        echo_json(item.get("next") or [])
    elif not item.get("next"):
        out().print("no more fire times (paused or finished)")
    else:
        for when in item["next"]:
            out().print(Text(when))


@schedule_app.command("pause")
def pause(ctx: typer.Context, schedule_id: IdArg) -> None:
    """Pause a schedule (no fire until it is resumed)."""
    with connect(ctx) as client:
        client.pause_schedule(schedule_id)
    out().print(Text(f"paused {schedule_id}"))


@schedule_app.command("resume")
def resume(ctx: typer.Context, schedule_id: IdArg) -> None:
    """Resume a schedule (clears its paused reason; next fire worked out from now)."""
    with connect(ctx) as client:
        item = client.resume_schedule(schedule_id)
    out().print(Text(f"resumed {schedule_id}, next {item.get('next_fire_at') or '-'}"))


@schedule_app.command("delete")
def delete(ctx: typer.Context, schedule_id: IdArg) -> None:
    """Delete a schedule."""
    with connect(ctx) as client:
        client.delete_schedule(schedule_id)
    out().print(Text(f"deleted {schedule_id}"))


@schedule_app.command("fires")
def fires(ctx: typer.Context, schedule_id: IdArg, as_json: JsonFlag = False) -> None:
    """The latest fire times claimed (fired, skipped or missed), newest first."""
    with connect(ctx) as client:
        items = client.schedule_fires(schedule_id)
    if as_json:
        echo_json(items)
        return
    for item in items:
        what = (f"run {item.get('run_id')} ({item.get('run_status') or 'gone'})"
                if item.get("status") == "fired"
                else f"{item.get('status')}: {item.get('reason')}")
        out().print(Text(f"{item['fire_at']}  {what}"), soft_wrap=True)
