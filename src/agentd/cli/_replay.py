"""``agentd replay``: run a finished run again from its log and compare."""

from __future__ import annotations

from typing import Annotated

import orjson
import typer
from rich.markup import escape

from agentd.cli._common import connect, echo_json, out

RunIdArg = Annotated[str, typer.Argument(metavar="RUN", help="The run's id (r_...).",
                                         show_default=False)]


def replay(
    ctx: typer.Context,
    run_id: RunIdArg,
    as_json: Annotated[bool, typer.Option("--json", help="Print the answer as JSON.")] = False,
) -> None:
    """Replay a finished run from its log and say whether it decides the same.

    Every model answer, tool result and approval decision is served from the
    run's log, in a scratch session [bold]replay:RUN:N[/] of the same agent: no
    model is called, no tool runs, no tokens are charged. Exits 1 when the
    replay's log differs from the original's (a determinism bug in agentd),
    showing the first event where it does; delete the scratch session with
    [bold]agentd delete-session[/].

    [bold]Examples[/]
      $ agentd replay r_0192c3d4e5f6a1b2c3d4e5f6a7
      $ agentd replay "$RUN" --json | jq .first_divergence
    """
    with connect(ctx) as client:
        answer = client.replay_run(run_id)
    if as_json:
        echo_json(answer)
    elif answer.get("matches"):
        out().print(f"replay {escape(str(answer.get('run_id')))} of run {escape(run_id)} "
                    f"matches ({escape(str(answer.get('status')))}; session "
                    f"{escape(str(answer.get('session')))}; "
                    f"{answer.get('model_calls')} model calls, "
                    f"{answer.get('tools_executed')} tools run)",
                    soft_wrap=True)
    else:
        divergence = answer.get("first_divergence") or {}
        out().print(f"replay {escape(str(answer.get('run_id')))} of run {escape(run_id)} "
                    f"[bold red]differs[/] at step {divergence.get('step')} (session "
                    f"{escape(str(answer.get('session')))})", soft_wrap=True)
        for side in ("expected", "got"):
            text = orjson.dumps(divergence.get(side)).decode()
            out().print(f"  {side}: {escape(text)}", soft_wrap=True)
    if not answer.get("matches"):
        raise typer.Exit(1)
