"""`agentd heartbeat show|set`: an agent's periodic autonomous turn."""

from __future__ import annotations

import re
from typing import Annotated, Any

import typer
from rich.text import Text

from agentd.cli._common import AgentArg, JsonFlag, connect, echo_json, fail, out

__all__ = ["heartbeat_app"]

heartbeat_app = typer.Typer(
    name="heartbeat",
    help="An agent's heartbeat: a periodic autonomous turn from a document, during its "
         "active hours; a reply that is only the OK token is logged, not delivered.",
    no_args_is_help=True,
    rich_markup_mode="rich",
)


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400}
_DURATION = re.compile(r"^([0-9]{1,7})([smhd]?)$")
_WINDOW = re.compile(r"^([0-9]{2}:[0-9]{2})-([0-9]{2}:[0-9]{2})$")


def _seconds(text: str) -> int:
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        fail(f"--every: {text!r} is not a duration (like 90s, 30m, 2h or 1d)", 2)
    return int(match.group(1)) * _UNITS[match.group(2) or "s"]


def _show(view: dict[str, Any]) -> None:
    settings, state = view.get("settings") or {}, view.get("state") or {}
    console = out()
    on = "on" if settings.get("enabled") else "off"
    console.print(Text(f"heartbeat of {view.get('agent')}: {on}, every "
                       f"{settings.get('every_s')} s, session {settings.get('session')!r}"),
                  soft_wrap=True)
    if not view.get("valid", True):
        console.print(Text("stored settings are not valid in this version: fix them with "
                           "agentd heartbeat set", style="bold yellow"))
    source = (f"document ({len(settings['document'])} characters)"
              if settings.get("document") else f"file {settings.get('file')!r}")
    console.print(Text(f"  from: {source}; ok token: {settings.get('ok_token')}"),
                  soft_wrap=True)
    hours = settings.get("active_hours")
    if hours:
        console.print(Text(f"  active: {hours.get('start')}-{hours.get('end')} "
                           f"{hours.get('timezone')}"), soft_wrap=True)
    for label, key in (("last beat", "last_beat_at"), ("outcome", "last_outcome"),
                       ("run", "last_run_id"), ("next beat", "next_beat_at"),
                       ("last skip", "last_skip_at"), ("skip reason", "last_skip_reason")):
        value = state.get(key)
        if value is not None:
            # The reason may quote a file name the agent chose: plain text, no markup.
            console.print(Text(f"  {label}: {value}"), soft_wrap=True)


@heartbeat_app.command("show")
def show(ctx: typer.Context, agent: AgentArg, as_json: JsonFlag = False) -> None:
    """Show an agent's heartbeat settings and state (last beat, outcome, next beat,
    last skip and why).

    [bold]Examples[/]
      $ agentd heartbeat show demo
    """
    with connect(ctx) as client:
        view = client.get_heartbeat(agent)
    if as_json:
        echo_json(view)
    else:
        _show(view)


@heartbeat_app.command("set")
def set_(
    ctx: typer.Context,
    agent: AgentArg,
    every: Annotated[str | None, typer.Option(
        "--every", metavar="DURATION", help="Time between beats: 90s, 30m, 2h, 1d "
                                            "(at least 60s).", show_default=False)] = None,
    enable: Annotated[bool | None, typer.Option(
        "--enable/--disable", help="Turn the heartbeat on or off.",
        show_default=False)] = None,
    active: Annotated[str | None, typer.Option(
        "--active", metavar="HH:MM-HH:MM", help="Active hours (a window past midnight "
                                                "wraps); 'always' removes them.",
        show_default=False)] = None,
    tz: Annotated[str | None, typer.Option(
        "--tz", metavar="ZONE", help="Time zone of the active hours (IANA, "
                                     "e.g. Europe/Berlin).", show_default=False)] = None,
    file: Annotated[str | None, typer.Option(
        "--file", metavar="PATH", help="Read the document from this workspace file at "
                                       "each beat.", show_default=False)] = None,
    document: Annotated[str | None, typer.Option(
        "--document", metavar="TEXT", help="The document itself.",
        show_default=False)] = None,
    ok_token: Annotated[str | None, typer.Option(
        "--ok-token", metavar="TOKEN", help="A reply that is exactly this is not "
                                            "delivered.", show_default=False)] = None,
    session: Annotated[str | None, typer.Option(
        "--session", metavar="KEY", help="The session beats go to.",
        show_default=False)] = None,
    as_json: JsonFlag = False,
) -> None:
    """Change an agent's heartbeat; what is not given is kept.

    [bold]Examples[/]
      $ agentd heartbeat set demo --enable --every 30m --file HEARTBEAT.md
      $ agentd heartbeat set demo --active 09:00-18:00 --tz Europe/Berlin
      $ agentd heartbeat set demo --disable
    """
    if file is not None and document is not None:
        fail("give --file or --document, not both", 2)
    changes: dict[str, Any] = {}
    if every is not None:
        changes["every_s"] = _seconds(every)
    if enable is not None:
        changes["enabled"] = enable
    if active is not None and active != "always":
        window = _WINDOW.fullmatch(active.strip())
        if window is None:
            fail(f"--active: {active!r} is not a window like 09:00-18:00 (or 'always')", 2)
        changes["active_hours"] = {"start": window.group(1), "end": window.group(2)}
    if active == "always":
        if tz is not None:
            fail("--tz needs active hours; 'always' removes them")
        changes["active_hours"] = None
    elif tz is not None:
        changes["active_hours"] = {**changes.get("active_hours", {}), "timezone": tz}
    if file is not None:
        changes["file"], changes["document"] = file, None  # the file is read again
    if document is not None:
        changes["document"] = document
    if ok_token is not None:
        changes["ok_token"] = ok_token
    if session is not None:
        changes["session"] = session
    if not changes:
        fail("nothing to change: give --every, --enable/--disable, --active, --tz, --file, "
             "--document, --ok-token or --session", 2)
    with connect(ctx) as client:
        view = client.set_heartbeat(agent, **changes)
    if as_json:
        echo_json(view)
    else:
        _show(view)
