"""The ``agentd`` command line: a typer app that talks to the daemon over HTTP.

Only ``serve`` imports the server, and only inside the command; everything else goes
through :class:`agentd.client.Client`.
"""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.text import Text

from agentd.cli import (
    _approvals,
    _chat,
    _checkpoints,
    _compact,
    _daemon,
    _edit,
    _evals,
    _export,
    _heartbeat,
    _identity,
    _logs,
    _mcp,
    _memory,
    _replay,
    _runs,
    _schedules,
    _secrets,
    _sessions,
    _skills,
    _subtasks,
    _tools,
    _top,
    _trace,
    _usage,
    _webhooks,
)
from agentd.cli._common import (
    TERMINAL_STATUSES,
    JsonOption,
    NameArg,
    SessionOption,
    State,
    VerboseOption,
    attachment,
    connect,
    echo_json,
    err,
    fail,
    out,
)
from agentd.cli._render import (
    agent_details,
    agents_table,
    error_of,
    event_lines,
    failure_line,
    run_header,
    sessions_table,
    tool_call_line,
    tool_result_line,
    waiting_line,
)
from agentd.cli._safe import terminal_safe
from agentd.client import Client, SSEEvent, WaitTimeout

__all__ = ["app", "main"]

_HELP = """Run persistent AI agents behind an HTTP API.

[bold]agentd start[/] runs the daemon in the background; the other commands talk to it
over HTTP (AGENTD_URL, default http://127.0.0.1:8721).

[bold]Quick start[/]
  agentd start
  agentd send demo "hello"          [dim]# a demo agent exists out of the box[/]
  agentd create mybot --tool calculator
  agentd chat mybot
  agentd stop
"""

app = typer.Typer(
    name="agentd",
    help=_HELP,
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_show_locals=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

_PAGE = 500
#: Sessions ``agentd show`` lists (the most recent).
SHOWN_SESSIONS = 20


def _version(value: bool) -> None:
    if value:
        from agentd.version import __version__

        typer.echo(f"agentd {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    ctx: typer.Context,
    url: Annotated[
        str | None,
        typer.Option(
            "--url",
            envvar="AGENTD_URL",
            help="Daemon URL. [dim]\\[default: http://AGENTD_HOST:AGENTD_PORT, "
            "i.e. http://127.0.0.1:8721][/]",
            show_default=False,
        ),
    ] = None,
    token: Annotated[
        str | None,
        typer.Option(
            "--token",
            envvar="AGENTD_TOKEN",
            help="Bearer token for the daemon.",
            show_default=False,
        ),
    ] = None,
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    ctx.obj = State(url=url, token=token)


app.command(rich_help_panel="Daemon")(_daemon.serve)
app.command(rich_help_panel="Daemon")(_daemon.start)
app.command(rich_help_panel="Daemon")(_daemon.stop)
app.command(rich_help_panel="Daemon")(_daemon.status)
app.command(rich_help_panel="Daemon")(_daemon.console)
app.command(rich_help_panel="Daemon")(_daemon.reload)
app.command(rich_help_panel="Daemon")(_logs.logs)
app.command(rich_help_panel="Daemon")(_top.top)


# -- agents -----------------------------------------------------------------------


def _parse_setting(raw: str) -> tuple[str, Any]:
    """``key=value``; the value is JSON when it parses as JSON, else a string."""
    key, sep, value = raw.partition("=")
    key = key.strip()
    if not sep or not key:
        raise typer.BadParameter(f"expected KEY=VALUE, got {raw!r}", param_hint="--setting")
    try:
        return key, json.loads(value)
    except ValueError:
        return key, value


def _load_script(path: Path) -> list[Any]:
    try:
        script = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise typer.BadParameter(f"cannot read {path}: {exc}", param_hint="--script") from exc
    except ValueError as exc:
        raise typer.BadParameter(f"{path} is not valid JSON: {exc}", param_hint="--script") from exc
    if not isinstance(script, list):
        raise typer.BadParameter(
            f"{path} must hold a JSON list of turns, got {type(script).__name__}",
            param_hint="--script",
        )
    return script


def _load_schema(raw: str) -> dict[str, Any]:
    """``--schema``: inline JSON (starting with ``{``) or the path of a JSON file."""
    text = raw
    if not raw.lstrip().startswith("{"):
        try:
            text = Path(raw).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise typer.BadParameter(f"cannot read {raw}: {exc}", param_hint="--schema") \
                from exc
    try:
        schema = json.loads(text)
    except ValueError as exc:
        raise typer.BadParameter(f"not valid JSON: {exc}", param_hint="--schema") from exc
    if not isinstance(schema, dict):
        raise typer.BadParameter("a JSON Schema is a JSON object", param_hint="--schema")
    return schema


@app.command(rich_help_panel="Agents")
def create(
    ctx: typer.Context,
    name: NameArg,
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            "-m",
            help="provider:model, e.g. openai:gpt-4.1-mini. "
            "[dim]\\[default: the daemon's, normally scripted][/]",
            show_default=False,
        ),
    ] = None,
    instructions: Annotated[
        str | None, typer.Option("--instructions", "-i", help="System instructions.")
    ] = None,
    tool: Annotated[
        list[str] | None,
        typer.Option("--tool", "-t", help="A tool the agent may use (repeat, or comma-separate)."),
    ] = None,
    setting: Annotated[
        list[str] | None,
        typer.Option(
            "--setting",
            help="KEY=VALUE agent setting (repeat). VALUE is JSON if it parses, else a string.",
        ),
    ] = None,
    script: Annotated[
        Path | None,
        typer.Option(
            "--script",
            exists=True,
            dir_okay=False,
            help="JSON file with a list of turns for the scripted model (settings.script).",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the agent as JSON.")] = False,
) -> None:
    """Create an agent.

    [bold]Examples[/]
      $ agentd create mybot
      $ agentd create helper -m openai:gpt-4.1-mini -i "Be brief." --tool calculator
      $ agentd create bot --setting temperature=0.2 --script turns.json
    """
    settings: dict[str, Any] = dict(_parse_setting(raw) for raw in setting or [])
    if script is not None:
        settings["script"] = _load_script(script)
    tools = [t.strip() for item in tool or [] for t in item.split(",") if t.strip()]
    with connect(ctx) as client:
        agent = client.create_agent(
            name,
            model=model,
            instructions=instructions,
            tools=tools or None,
            settings=settings or None,
        )
    if as_json:
        echo_json(agent)
        return
    tools_text = ", ".join(agent.get("tools") or []) or "none"
    out().print(
        f"created agent [bold]{escape(str(agent.get('name', name)))}[/] "
        f"(model {escape(str(agent.get('model')))}, tools: {escape(tools_text)})"
    )


@app.command("list", rich_help_panel="Agents")
def list_agents(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """List agents.

    [bold]Example[/]
      $ agentd list --json | jq -r '.[].name'
    """
    with connect(ctx) as client:
        agents = client.list_agents()
    if as_json:
        echo_json(agents)
    elif not agents:
        out().print("no agents yet; create one with [bold]agentd create NAME[/]")
    else:
        out().print(agents_table(agents))


@app.command(rich_help_panel="Agents")
def show(
    ctx: typer.Context,
    name: NameArg,
    as_json: Annotated[bool, typer.Option("--json", help="Print the agent as JSON.")] = False,
) -> None:
    """Show an agent and its most recent sessions ([bold]agentd sessions NAME[/] pages
    through the rest). --json prints the Agent as the API returns it (the sessions:
    [bold]agentd sessions NAME --json[/]).

    [bold]Examples[/]
      $ agentd show demo
      $ agentd show demo --json | jq -r .model
    """
    with connect(ctx) as client:
        agent = client.get_agent(name)
        if as_json:
            echo_json(agent)
            return
        page = client.sessions_page(name, limit=SHOWN_SESSIONS)
    sessions: list[dict[str, Any]] = page.get("sessions", [])
    console = out()
    console.print(agent_details(agent))
    console.print()
    if sessions:
        console.print(sessions_table(sessions))
    else:
        console.print("[dim]no sessions yet[/]")
    if page.get("next_after"):
        words = ["agentd", "sessions", name, "--after", page["next_after"]]
        console.print(Text(f"the {len(sessions)} most recent sessions; more: "
                           f"{shlex.join(words)}", style="dim"), soft_wrap=True)


@app.command(rich_help_panel="Agents")
def delete(
    ctx: typer.Context,
    name: NameArg,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Delete an agent with all its sessions, events and runs.

    [bold]Example[/]
      $ agentd delete demo --yes
    """
    if not yes:
        typer.confirm(f"Delete agent {name!r} with all its sessions, events and runs?", abort=True)
    with connect(ctx) as client:
        client.delete_agent(name)
    out().print(f"deleted agent [bold]{escape(name)}[/]")


@app.command(rich_help_panel="Agents")
def pause(ctx: typer.Context, name: NameArg) -> None:
    """Pause an agent: it refuses new messages until resumed.

    [bold]Example[/]
      $ agentd pause demo
    """
    with connect(ctx) as client:
        agent = client.pause_agent(name)
    out().print(f"agent [bold]{escape(name)}[/] is {escape(str(agent.get('state', 'paused')))}")


app.command(rich_help_panel="Agents")(_checkpoints.resume)
app.command(rich_help_panel="Agents")(_edit.edit)
app.command("set", rich_help_panel="Agents")(_edit.set_fields)
app.command(rich_help_panel="Agents")(_tools.tools)


@app.command("stop-agent", rich_help_panel="Agents")
def stop_agent(
    ctx: typer.Context,
    name: NameArg,
    as_json: Annotated[bool, typer.Option("--json", help="Print the agent as JSON.")] = False,
) -> None:
    """Stop one agent: cancel its queued and active runs and refuse new messages.

    The agent stays stopped (messages get [bold]agent_stopped[/]) until
    [bold]agentd resume NAME[/]. Unlike [bold]pause[/], the active run is cancelled
    rather than finished. This does not stop the daemon; [bold]agentd stop[/] does.

    [bold]Examples[/]
      $ agentd stop-agent demo
      $ agentd resume demo
    """
    with connect(ctx) as client:
        agent = client.stop_agent(name)
    if as_json:
        echo_json(agent)
        return
    state = escape(str(agent.get("state", "stopped")))
    console = out()
    console.print(
        f"agent [bold]{escape(name)}[/] is {state}; its queued and active runs are cancelled",
        soft_wrap=True,
    )
    console.print(
        f"[dim][bold]agentd resume {escape(name)}[/] lets it take messages again[/]",
        soft_wrap=True,
    )


# -- conversations ----------------------------------------------------------------


@app.command(rich_help_panel="Conversations")
def send(
    ctx: typer.Context,
    name: NameArg,
    message: Annotated[str, typer.Argument(help="The message; - reads it from stdin.")],
    session: SessionOption = "cli",
    as_json: Annotated[bool, typer.Option("--json", help="Print the whole run as JSON.")] = False,
    timeout: Annotated[
        float, typer.Option("--timeout", min=1, help="Seconds to wait for the run to finish.")
    ] = 600.0,
    no_wait: Annotated[
        bool,
        typer.Option("--no-wait", help="Queue the message, print the run id and return at once."),
    ] = False,
    mode: Annotated[
        str,
        typer.Option(
            "--mode",
            help="If the session is busy: enqueue (run after it), reject (error), "
            "interrupt (cancel it at its next step), steer (join the running run).",
        ),
    ] = "enqueue",
    idempotency_key: Annotated[
        str | None,
        typer.Option(
            "--idempotency-key",
            metavar="KEY",
            help="Sent as Idempotency-Key: a retry with the same KEY in this session "
            "gets the first run back instead of running again.",
            show_default=False,
        ),
    ] = None,
    priority: Annotated[
        str | None,
        typer.Option(
            "--priority",
            help="The run's class in the kernel's scheduler: interactive, background or "
            "batch (default: interactive when waiting, else the agent's).",
            show_default=False,
        ),
    ] = None,
    schema: Annotated[
        str | None,
        typer.Option(
            "--schema",
            metavar="SCHEMA",
            help="A JSON Schema the reply must match (a file, or inline JSON): the reply "
            "is then that JSON value (structured output).",
            show_default=False,
        ),
    ] = None,
    attach: Annotated[
        list[Path] | None,
        typer.Option(
            "--attach",
            metavar="FILE",
            help="An image (PNG, JPEG, GIF, WebP) or a file (PDF, text) sent with the "
            "message; repeat for more.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Send one message and print the reply.

    While the run waits (queued behind another run, a model retrying or
    unreachable, a rate limit), what it waits for is shown on stderr, and so is
    each tool call as it starts and ends (stdout holds only the reply).
    Exits with code 1 if the run fails (the error goes to stderr). With
    [bold]--no-wait[/] it prints the queued run's id instead; follow the run with
    [bold]agentd run ID[/] or [bold]agentd tail NAME[/].

    [bold]Examples[/]
      $ agentd send demo "hello"
      $ agentd send demo "what is 6*7?" --session user:42 --json
      $ echo "summarise this" | agentd send demo -
      $ RUN=$(agentd send demo "long job" --no-wait); agentd run "$RUN"
      $ agentd send demo "charge card" --idempotency-key order-123
      $ agentd send demo "actually, make it shorter" --mode steer
      $ agentd send demo "nightly report" --no-wait --priority batch
      $ agentd send demo "a point?" --schema point.schema.json
      $ agentd send demo "what is in this picture?" --attach photo.png
    """
    if message == "-":
        message = sys.stdin.read()
    content: str | list[Any] = message if not attach else [message, *map(attachment, attach)]
    output_schema = _load_schema(schema) if schema is not None else None
    if no_wait:
        with connect(ctx) as client:
            queued = client.send(
                name, session, content, wait=False, idempotency_key=idempotency_key,
                mode=mode, priority=priority, output_schema=output_schema,
            )
        if as_json:
            echo_json(queued)
        else:
            typer.echo(terminal_safe(str(queued.get("id", ""))))
        return
    with connect(ctx, timeout=min(timeout, 60.0)) as client:
        run_id, asked, last_wait = _follow_send(
            client, name, session, content, idempotency_key=idempotency_key, mode=mode,
            priority=priority, timeout=timeout, output_schema=output_schema)
        run = client.get_run(run_id)
        status = run.get("status")
        waiting = ([a for a in client.approvals(name) if a.get("run_id") == run.get("id")]
                   if asked or status == "waiting_approval" else [])
    if as_json:
        echo_json(run)
    elif run.get("output"):
        typer.echo(terminal_safe(str(run["output"])))
    if status == "completed":
        return
    if status == "failed":
        fail(f"run {run.get('id')} failed: {failure_line(error_of(run.get('error') or {}))}")
    if status in TERMINAL_STATUSES:
        fail(f"run {run.get('id')} {status}")
    if asked or status == "waiting_approval":
        for request in waiting:
            err().print(f"run {escape(str(run.get('id')))} waits for approval of "
                        f"{escape(str(request.get('name')))}: "
                        f"{escape(str(request.get('reason') or ''))}", soft_wrap=True)
            err().print(f"  agentd approve {request['approval_id']}   or   agentd deny "
                        f"{request['approval_id']}", soft_wrap=True)
        if not waiting:
            err().print(f"run {escape(str(run.get('id')))} waits for a decision "
                        "(agentd approvals)", soft_wrap=True)
        raise typer.Exit(3)
    last = f" ({last_wait})" if last_wait else ""
    fail(f"run {run.get('id')} is still {status} after {timeout:g}s{last}; it goes on: "
         f"agentd run {run.get('id')} shows it")


def _tool_line(frame: SSEEvent) -> Text:
    """A tool call's start or end as ``agentd chat`` shows it (dimmed)."""
    data: Any = frame.data if isinstance(frame.data, dict) else {}
    payload: dict[str, Any] = data.get("data") if isinstance(data.get("data"), dict) else {}
    if frame.event == "tool_start":
        return tool_call_line(payload.get("name"), payload.get("arguments"))
    return tool_result_line(payload, limit=200)


def _follow_send(client: Client, name: str, session: str, message: str | list[Any], *,
                 idempotency_key: str | None, mode: str, priority: str | None,
                 timeout: float, output_schema: dict[str, Any] | None = None
                 ) -> tuple[str, bool, str]:
    """Send and follow the run's stream until it ends, asks a person, or ``timeout``
    passes, saying on stderr what it waits for meanwhile. Returns the run's id, whether
    it waits for an approval, and the last thing it waited for."""
    run_id: str | None = None
    asked = False
    last_wait = ""
    frames = client.stream(name, session, message, idempotency_key=idempotency_key,
                           mode=mode, priority=priority, timeout=timeout,
                           output_schema=output_schema)
    try:
        for frame in frames:
            run_id = run_id or frame.run_id
            if frame.event == "waiting":
                last_wait = waiting_line(frame.data)
                err().print(escape(last_wait), soft_wrap=True)
                if isinstance(frame.data, dict) and frame.data.get("reason") == "approval":
                    asked = True
                    break
            elif frame.event == "approval.requested":
                asked = True
                break
            elif frame.event in ("tool_start", "tool_end"):
                # What the run is doing while no text comes (stdout keeps the reply).
                err().print(_tool_line(frame), soft_wrap=True)
            elif frame.event in ("done", "error") and frame.run_id in (None, run_id):
                break
    except WaitTimeout:
        pass
    finally:
        frames.close()
    if run_id is None:
        fail("the daemon's stream named no run")
    return run_id, asked, last_wait


@app.command(rich_help_panel="Conversations")
def history(
    ctx: typer.Context,
    name: NameArg,
    session: SessionOption = "cli",
    as_json: Annotated[bool, typer.Option("--json", help="Print the raw events as JSON.")] = False,
    verbose: VerboseOption = False,
) -> None:
    """Show a session's history: messages, tool calls with arguments and results,
    under a header for each run (numbered in the order their messages came), so
    that each answer shows which message it answers.

    [bold]Examples[/]
      $ agentd history demo
      $ agentd history demo --session user:42 --verbose
    """
    events: list[dict[str, Any]] = []
    with connect(ctx) as client:
        after = 0
        while True:
            page = client.events(name, session, after=after, limit=_PAGE)
            if not page:
                break
            events.extend(page)
            last = int(page[-1].get("seq", after))
            if last <= after:
                break
            after = last
    if as_json:
        echo_json(events)
        return
    console = out()
    if not events:
        console.print(f"[dim]no events in session {escape(session)} of {escape(name)}[/]")
        return
    # Queued messages interleave in the log (every message is logged when it arrives,
    # its answer when its run gets to it): a header each time the run changes says
    # which answer belongs to which message.
    numbers: dict[str, int] = {}
    current: str | None = None
    for event in events:
        lines = event_lines(event, verbose=verbose)
        if not lines:
            continue
        run_id = event.get("run_id")
        if isinstance(run_id, str) and run_id != current:
            again = run_id in numbers
            number = numbers.setdefault(run_id, len(numbers) + 1)
            console.print(run_header(number, run_id, again=again), soft_wrap=True)
            current = run_id
        for line in lines:
            console.print(line, soft_wrap=True)


app.command(rich_help_panel="Conversations")(_chat.chat)
app.command(rich_help_panel="Conversations")(_sessions.tail)

app.command(rich_help_panel="Sessions")(_sessions.sessions)
app.command("delete-session", rich_help_panel="Sessions")(_sessions.delete_session)
app.command(rich_help_panel="Sessions")(_checkpoints.checkpoint)
app.command(rich_help_panel="Sessions")(_checkpoints.checkpoints)
app.command(rich_help_panel="Sessions")(_checkpoints.fork)
app.command(rich_help_panel="Sessions")(_compact.compact)

app.command(rich_help_panel="Runs")(_runs.runs)
app.command("run", rich_help_panel="Runs")(_runs.show_run)
app.command(rich_help_panel="Runs")(_runs.cancel)
app.command(rich_help_panel="Runs")(_runs.decide)
app.command(rich_help_panel="Runs")(_subtasks.subtasks)
app.command(rich_help_panel="Runs")(_approvals.approvals)
app.command(rich_help_panel="Runs")(_approvals.approve)
app.command(rich_help_panel="Runs")(_approvals.deny)
app.command(rich_help_panel="Runs")(_trace.trace)
app.command(rich_help_panel="Runs")(_replay.replay)
app.add_typer(_export.export_app, name="export", rich_help_panel="Runs")
app.add_typer(_evals.eval_app, name="eval", rich_help_panel="Runs")

app.command(rich_help_panel="Usage")(_usage.usage)

app.add_typer(_memory.memory_app, name="memory", rich_help_panel="Memory")
app.add_typer(_skills.skill_app, name="skill", rich_help_panel="Skills")
app.add_typer(_schedules.schedule_app, name="schedule", rich_help_panel="Autonomy")
app.add_typer(_heartbeat.heartbeat_app, name="heartbeat", rich_help_panel="Autonomy")
app.add_typer(_webhooks.webhook_app, name="webhook", rich_help_panel="Autonomy")
app.add_typer(_identity.token_app, name="token", rich_help_panel="Access")
app.add_typer(_identity.tenant_app, name="tenant", rich_help_panel="Access")
app.add_typer(_identity.audit_app, name="audit", rich_help_panel="Access")
app.add_typer(_secrets.secret_app, name="secret", rich_help_panel="Access")
app.add_typer(_mcp.mcp_app, name="mcp", rich_help_panel="Access")


def main() -> None:
    """Entry point of the ``agentd`` console script."""
    app(prog_name="agentd")
