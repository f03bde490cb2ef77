"""Session commands: list and delete an agent's sessions, follow one live (`tail`)."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.text import Text

from agentd.cli._common import (
    NameArg,
    SessionOption,
    VerboseOption,
    connect,
    echo_json,
    err,
    fail,
    more_command,
    out,
)
from agentd.cli._render import error_line, error_of, event_lines, sessions_table
from agentd.cli._safe import dumps
from agentd.client import APIError, SSEEvent


def sessions(
    ctx: typer.Context,
    name: NameArg,
    limit: Annotated[int | None, typer.Option(
        "--limit", "-n", min=1, max=1000, metavar="N",
        help="A page of at most N sessions (the next page's command is printed after "
             "it). Default: every session, or 100 with --match or --after.",
        show_default=False)] = None,
    match: Annotated[str | None, typer.Option(
        "--match", "-m", metavar="TEXT", help="Only sessions whose keys contain TEXT "
                                              "(any case).", show_default=False)] = None,
    after: Annotated[str | None, typer.Option(
        "--after", metavar="CURSOR", help="The page after this cursor (the hint the page "
                                          "before printed).", show_default=False)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the sessions as JSON.")] = False,
) -> None:
    """List an agent's sessions, most recent activity first: key, event count,
    created, last updated.

    A session's events are numbered 1, 2, 3, ...; EVENTS is the last one, the
    number to give [bold]agentd tail --after[/].

    With --limit, --match or --after, one page, and the command for the next page
    after it (on stderr with --json, whose stdout is the JSON array of sessions).

    [bold]Examples[/]
      $ agentd sessions demo
      $ agentd sessions demo --limit 50 --match user:
      $ agentd sessions demo --json | jq -r '.[].key'
    """
    paged = limit is not None or match is not None or after is not None
    page: dict[str, Any] = {}
    with connect(ctx) as client:
        if paged:
            try:
                page = client.sessions_page(name, limit=limit or 100, after=after, q=match)
            except APIError as exc:
                if _names_field(exc, "query.after"):
                    fail("--after: not a cursor this daemon gave; use the command a page "
                         f"of sessions printed after it, as it is [{exc.code}]")
                raise
            found: list[dict[str, Any]] = page.get("sessions", [])
        else:
            found = client.list_sessions(name)
    if as_json:
        echo_json(found)
    elif not found and match is not None:
        out().print(Text(f"no sessions of agent {name} match {match!r}" +
                         (" after this cursor" if after else ""), style="dim"),
                    soft_wrap=True)
    elif not found:
        out().print(Text(f"no sessions of agent {name} after this cursor", style="dim")
                    if after else
                    f"[dim]agent {escape(name)} has no sessions yet; "
                    f"[bold]agentd send {escape(name)} MESSAGE[/] starts one[/]",
                    soft_wrap=True)
    else:
        out().print(sessions_table(found))
    if page.get("next_after"):
        words = ["agentd", "sessions", name, "--after", page["next_after"]]
        if limit is not None:
            words += ["--limit", str(limit)]
        if match is not None:
            words += ["--match", match]
        more_command(words, as_json, lead=f"{len(found)} shown, more")


def delete_session(
    ctx: typer.Context,
    name: NameArg,
    key: Annotated[str, typer.Argument(help="Session key, e.g. user:42.", show_default=False)],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Delete one session and its events; its active run is cancelled.

    The agent and its other sessions stay. A later message to the same key
    starts a new, empty session.

    [bold]Examples[/]
      $ agentd delete-session demo user:42
      $ agentd delete-session demo cli --yes
    """
    if not yes:
        typer.confirm(
            f"Delete session {key!r} of agent {name!r} with its events and runs?", abort=True
        )
    with connect(ctx) as client:
        client.delete_session(name, key)
    out().print(
        f"deleted session [bold]{escape(key)}[/] of agent [bold]{escape(name)}[/]", soft_wrap=True
    )


def _event_of(frame: SSEEvent) -> dict[str, Any] | None:
    """The committed Event a frame carries; None for token previews and anything else."""
    data = frame.data
    if frame.event == "token" or not isinstance(data, dict):
        return None
    return data if "kind" in data and "seq" in data else None


def tail(
    ctx: typer.Context,
    name: Annotated[str | None, typer.Argument(
        help="Agent name (with --all: only this agent's sessions).",
        show_default=False)] = None,
    session: SessionOption = "cli",
    every: Annotated[bool, typer.Option(
        "--all", help="Follow every session of every agent (or of NAME): live only, "
        "each line prefixed with agent/session.")] = False,
    after: Annotated[
        int | None,
        typer.Option(
            "--after",
            min=0,
            metavar="SEQ",
            help="First replay the events after SEQ (0: the whole history). "
            "[dim]\\[default: only new events][/]",
            show_default=False,
        ),
    ] = None,
    count: Annotated[
        int | None,
        typer.Option(
            "--count",
            "-n",
            min=1,
            metavar="N",
            help="Exit after N events have been shown.",
            show_default=False,
        ),
    ] = None,
    verbose: VerboseOption = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print each event as one line of JSON (JSON Lines).")
    ] = False,
) -> None:
    """Follow a session's events live, shown as [bold]history[/] shows them; or,
    with [bold]--all[/], every session's.

    Without [bold]--after[/] it shows only events that happen from now on. It
    runs until Ctrl-C, or until [bold]--count[/] N events have been shown (events
    hidden without --verbose do not count). After a dropped connection or a
    daemon restart it carries on where it left off. The session must exist:
    its first message creates it.

    [bold]Examples[/]
      $ agentd tail demo
      $ agentd tail demo --session user:42 --after 0
      $ agentd tail demo --json --count 5 | jq -c '[.seq, .kind]'
      $ agentd tail --all
      $ agentd tail demo --all --json | jq -c '[.session, .kind]'
    """
    if every:
        if after is not None:
            raise typer.BadParameter("the feed of every session is live only",
                                     param_hint="--after")
        _tail_all(ctx, name, count=count, verbose=verbose, as_json=as_json)
        return
    if name is None:
        raise typer.BadParameter("give an agent's name, or --all for every agent",
                                 param_hint="NAME")
    console = out()
    shown = 0
    with connect(ctx) as client:
        # Read the session first even with --after: a typo or a daemon that is down
        # then fails at once, where follow() would keep trying to reconnect.
        current = client.get_session(name, session)
        if after is None:
            after = int(current.get("last_seq") or 0)
        frames = client.follow(name, session, after=after)
        try:
            for frame in frames:
                event = _event_of(frame)
                if event is None:
                    if frame.event == "error":  # an error that is not a run.failed event
                        err().print(
                            f"[bold red]error:[/] {escape(error_line(error_of(frame.data)))}"
                        )
                    continue
                if as_json:
                    typer.echo(dumps(event))
                else:
                    lines = event_lines(event, verbose=verbose)
                    if not lines:
                        continue
                    for line in lines:
                        console.print(line, soft_wrap=True)
                shown += 1
                if count is not None and shown >= count:
                    break
        except KeyboardInterrupt:
            pass  # Ctrl-C is how a user stops following; not an error.
        finally:
            frames.close()


def _tail_all(ctx: typer.Context, agent: str | None, *, count: int | None, verbose: bool,
              as_json: bool) -> None:
    console = out()
    shown = 0
    with connect(ctx) as client:
        if agent is not None:
            client.get_agent(agent)  # a typo fails at once
        frames = client.feed(agent)
        try:
            for frame in frames:
                data = frame.data if isinstance(frame.data, dict) else {}
                if frame.event == "lagged":
                    err().print(f"[yellow](missed {escape(str(data.get('dropped')))} events: "
                                "this terminal was too slow)[/]")
                    continue
                if "kind" not in data:
                    continue
                if as_json:
                    typer.echo(dumps(data))
                else:
                    lines = event_lines(data, verbose=verbose)
                    if not lines:
                        continue
                    where = Text(f"{data.get('agent')}/{data.get('session')} ",
                                 style="bold magenta")
                    for line in lines:
                        console.print(Text.assemble(where, line), soft_wrap=True)
                shown += 1
                if count is not None and shown >= count:
                    break
        except KeyboardInterrupt:
            pass
        finally:
            frames.close()


def _names_field(exc: APIError, field: str) -> bool:
    """Whether the daemon's refusal names ``field`` (``details.errors``)."""
    problems = exc.details.get("errors")
    return isinstance(problems, list) and any(
        isinstance(p, dict) and p.get("field") == field for p in problems)
