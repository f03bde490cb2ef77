"""Checkpoint commands: `checkpoint` and `checkpoints`, `resume` (an agent, or a session
back to a checkpoint or seq) and `fork` (a session at a checkpoint or seq, or a run
onto another model from a step: :mod:`agentd.cli._fork`).

Which form of `resume` and `fork` is meant follows from the arguments; a combination
that names no single form is a usage error (exit 2) before anything is sent.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import typer
from rich.markup import escape

from agentd.cli._common import AgentArg, connect, echo_json, out
from agentd.cli._fork import (
    RUN_ID,
    InstructionsOption,
    ModelOption,
    SettingsOption,
    ToolsOption,
    fork_run,
)
from agentd.cli._render import checkpoint_line, checkpoints_table, restored_line
from agentd.cli._safe import terminal_safe

SessionArg = Annotated[
    str, typer.Argument(metavar="SESSION", help="Session key, e.g. user:42.", show_default=False)
]
OptionalAgentArg = Annotated[
    str | None,
    typer.Argument(metavar="AGENT", help="Agent name.", show_default=False),
]
OptionalSessionArg = Annotated[
    str | None,
    typer.Argument(metavar="SESSION", help="Session key, e.g. user:42.", show_default=False),
]
CheckpointOption = Annotated[
    str | None,
    typer.Option(
        "--checkpoint",
        metavar="ID_OR_NAME",
        help="A checkpoint: its id, or with AGENT SESSION also its name.",
        show_default=False,
    ),
]
SeqOption = Annotated[
    int | None,
    typer.Option(
        "--seq",
        min=0,
        metavar="N",
        help="An event seq of the session (0: the empty session).",
        show_default=False,
    ),
]

Target = Literal["agent", "session", "checkpoint"]


def _target(
    ctx: typer.Context,
    command: str,
    agent: str | None,
    session: str | None,
    checkpoint: str | None,
    seq: int | None,
) -> Target:
    """Which form of ``resume`` / ``fork`` the arguments name; a usage error (exit 2,
    nothing sent) otherwise."""
    if checkpoint is not None and seq is not None:
        ctx.fail("give --checkpoint or --seq, not both")
    if session is not None:
        if checkpoint is None and seq is None:
            ctx.fail(
                f"{command} AGENT SESSION needs --checkpoint ID_OR_NAME or --seq N"
            )
        return "session"
    if agent is not None:
        if checkpoint is not None or seq is not None:
            ctx.fail(
                f"give the SESSION too ({command} AGENT SESSION --checkpoint/--seq), "
                f"or only --checkpoint ID ({command} --checkpoint ID)"
            )
        return "agent"
    if checkpoint is not None:
        return "checkpoint"
    if seq is not None:
        ctx.fail(f"--seq needs AGENT SESSION ({command} AGENT SESSION --seq N)")
    if command == "resume":
        ctx.fail(
            "give AGENT to resume an agent, AGENT SESSION with --checkpoint or --seq to "
            "restore a session, or --checkpoint ID alone"
        )
    ctx.fail(
        "give AGENT SESSION with --checkpoint or --seq, or --checkpoint ID alone"
    )


def checkpoint(
    ctx: typer.Context,
    agent: AgentArg,
    session: SessionArg,
    name: Annotated[
        str | None,
        typer.Option(
            "--name",
            help="A name for it, unique in the session (letters, digits, _ - .); "
            "resume and fork take it in place of the id.",
            show_default=False,
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the checkpoint as JSON.")] = False,
) -> None:
    """Checkpoint a session now, to resume or fork it from there later.

    A checkpoint points at the session's state as it is (its last event); making
    one adds a [bold]checkpoint[/] event to the log.

    [bold]Examples[/]
      $ agentd checkpoint demo user:42
      $ agentd checkpoint demo user:42 --name before-refactor
      $ CP=$(agentd checkpoint demo cli --json | jq -r .id)
    """
    with connect(ctx) as client:
        created = client.checkpoint(agent, session, name)
    if as_json:
        echo_json(created)
        return
    out().print(f"created {escape(checkpoint_line(created))}", soft_wrap=True)


def checkpoints(
    ctx: typer.Context,
    agent: AgentArg,
    session: SessionArg,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the checkpoints as JSON.")
    ] = False,
) -> None:
    """List a session's checkpoints, oldest first: id, seq, kind, name, created.

    Besides the ones made with [bold]agentd checkpoint[/] (kind manual), the daemon
    makes some itself: auto (every few minutes of activity), pause, stop, shutdown.

    [bold]Examples[/]
      $ agentd checkpoints demo user:42
      $ agentd checkpoints demo cli --json | jq -r '.[-1].id'
    """
    with connect(ctx) as client:
        found = client.checkpoints(agent, session)
    if as_json:
        echo_json(found)
    elif not found:
        out().print(
            f"[dim]session {escape(session)} of {escape(agent)} has no checkpoints yet; "
            f"[bold]agentd checkpoint {escape(agent)} {escape(session)}[/] makes one[/]",
            soft_wrap=True,
        )
    else:
        out().print(checkpoints_table(found))


def _print_restored(result: dict[str, Any]) -> None:
    session = result.get("session") or {}
    event = result.get("event") or {}
    data = event.get("data") if isinstance(event.get("data"), dict) else {}
    out().print(
        f"session [bold]{escape(str(session.get('key', '?')))}[/] of "
        f"[bold]{escape(str(session.get('agent', '?')))}[/] "
        f"{escape(restored_line(data or {}))}",
        soft_wrap=True,
    )


def resume(
    ctx: typer.Context,
    agent: OptionalAgentArg = None,
    session: OptionalSessionArg = None,
    checkpoint: CheckpointOption = None,
    seq: SeqOption = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the agent, or the restore, as JSON.")
    ] = False,
) -> None:
    """Resume an agent, or set a session back to a checkpoint or an event seq.

    [bold]agentd resume AGENT[/] resumes a paused, stopped or errored agent (runs held
    while paused start). [bold]agentd resume AGENT SESSION --checkpoint ID_OR_NAME[/]
    (or [bold]--seq N[/]) restores the session to that point, and
    [bold]agentd resume --checkpoint ID[/] restores a checkpoint's session by the id
    alone. Nothing is deleted: the later events stay in the log, after a
    [bold]session.restored[/] event. A session with a run queued or under way is
    not restored ([bold]session_busy[/]).

    [bold]Examples[/]
      $ agentd resume demo
      $ agentd resume demo user:42 --checkpoint before-refactor
      $ agentd resume demo user:42 --seq 0
      $ agentd resume --checkpoint c_0192c3d4e5f6a1b2c3d4e5f6a7
    """
    target = _target(ctx, "resume", agent, session, checkpoint, seq)
    if target == "agent" and agent is not None:
        with connect(ctx) as client:
            resumed = client.resume_agent(agent)
        if as_json:
            echo_json(resumed)
            return
        state = escape(str(resumed.get("state", "running")))
        out().print(f"agent [bold]{escape(agent)}[/] is {state}", soft_wrap=True)
        return
    with connect(ctx) as client:
        if agent is not None and session is not None:
            restored = client.restore(agent, session, checkpoint=checkpoint, seq=seq)
        else:
            restored = client.restore_checkpoint(str(checkpoint))
    if as_json:
        echo_json(restored)
    else:
        _print_restored(restored)


def fork(
    ctx: typer.Context,
    agent: Annotated[str | None, typer.Argument(
        metavar="AGENT|RUN", help="Agent name; or a finished run's id (r_...) to fork the "
                                  "run onto another model from a step.",
        show_default=False)] = None,
    session: OptionalSessionArg = None,
    checkpoint: CheckpointOption = None,
    seq: SeqOption = None,
    key: Annotated[
        str | None,
        typer.Option(
            "--key",
            metavar="NEW",
            help="The new session's key. [dim]\\[default: SESSION~<random>][/]",
            show_default=False,
        ),
    ] = None,
    from_step: Annotated[int | None, typer.Option(
        "--from-step", "-k", min=1, metavar="K",
        help="RUN: the first step the candidate runs (default 1: the whole run); the "
             "steps before come from the run's log.", show_default=False)] = None,
    model: ModelOption = None,
    instructions: InstructionsOption = None,
    settings: SettingsOption = None,
    tools: ToolsOption = "recorded",
    wait: Annotated[bool, typer.Option(
        "--wait/--no-wait", help="RUN: wait for the fork's run to end.")] = True,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the new session (or the run's fork "
                                          "report) as JSON.")
    ] = False,
) -> None:
    """Copy a session as it was at a checkpoint or seq into a new session; or fork a
    finished run onto another model, instructions or settings from one of its steps.

    A session's fork starts with the copied events (renumbered from 1) and a
    [bold]session.forked[/] event; the session forked from is left as it is.
    [bold]agentd fork --checkpoint ID[/] forks a checkpoint's session by the id alone.

    [bold]agentd fork RUN[/] serves the run's steps before [bold]--from-step[/] from its
    log (no model call, no tool run); from there the candidate runs for real, in a
    scratch session [bold]fork:RUN:N[/] of the same agent, its model calls charged to
    the agent. The report shows the first step where it decided differently, the tool
    calls it added and removed, both answers and both runs' tokens and cost; the
    original run, its session and its workspace are not touched.

    [bold]Examples[/]
      $ agentd fork demo user:42 --checkpoint before-refactor --key user:42-retry
      $ agentd fork demo cli --seq 10
      $ NEW=$(agentd fork --checkpoint c_0192c3d4e5f6a1b2c3d4e5f6a7); agentd send demo hi -s "$NEW"
      $ agentd fork r_0192c3d4e5f6a1b2c3d4e5f6a7 --from-step 3 --model openai:gpt-4.1
      $ agentd fork "$RUN" --settings '{"temperature": 0}' --json | jq .first_divergence
    """
    candidate = (from_step, model, instructions, settings)
    if (agent is not None and session is None and checkpoint is None and seq is None
            and key is None and RUN_ID.fullmatch(agent)):
        fork_run(ctx, agent, from_step=from_step or 1, model=model,
                 instructions=instructions, settings=settings, tools=tools, wait=wait,
                 as_json=as_json)
        return
    if any(v is not None for v in candidate) or tools != "recorded" or not wait:
        ctx.fail("--from-step, --model, --instructions, --settings, --tools and --no-wait "
                 "fork a run: give its id alone (fork RUN --from-step K)")
    if _target(ctx, "fork", agent, session, checkpoint, seq) == "agent":
        ctx.fail(
            "give SESSION and --checkpoint or --seq too (fork AGENT SESSION --seq N), "
            "or only --checkpoint ID, or a run's id alone (fork RUN --from-step K)"
        )
    with connect(ctx) as client:
        if agent is not None and session is not None:
            forked = client.fork(agent, session, checkpoint=checkpoint, seq=seq, new_key=key)
        else:
            forked = client.fork_checkpoint(str(checkpoint), new_key=key)
    if as_json:
        echo_json(forked)
    else:
        # The key alone, so that NEW=$(agentd fork ...) works.
        typer.echo(terminal_safe(str(forked.get("key", ""))))
