"""`agentd compact`: a session's older turns summarised (or their tool results cleared)
now, instead of trimmed when the conversation nears the model's window."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape

from agentd.cli._common import connect, echo_json, out
from agentd.cli._render import compacted_line

__all__ = ["compact"]


def compact(
    ctx: typer.Context,
    agent: Annotated[str, typer.Argument(metavar="AGENT", help="Agent name.",
                                         show_default=False)],
    session: Annotated[str, typer.Argument(metavar="SESSION",
                                           help="Session key, e.g. user:42.",
                                           show_default=False)],
    strategy: Annotated[
        str | None,
        typer.Option("--strategy", metavar="summarize|clear_tool_results",
                      help="summarize: a summary replaces the older turns; "
                           "clear_tool_results: their tool results become a short "
                           "placeholder (no model call). Default: the agent's "
                           "settings.memory.compaction.strategy.",
                      show_default=False),
    ] = None,
    keep_turns: Annotated[
        int | None,
        typer.Option("--keep-turns", min=1, max=100, metavar="N",
                      help="The latest turns kept verbatim (default: the agent's).",
                      show_default=False),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Compact a session's older turns now.

    The model then reads a summary (written by the agent's compaction model) in place
    of those turns; the log keeps every event, so [bold]agentd resume AGENT SESSION
    --seq N[/] to a seq before the compaction brings them back. Nothing is written
    when there is nothing to compact or the summary cannot be written.

    [bold]Examples[/]
      $ agentd compact demo user:42
      $ agentd compact demo user:42 --strategy clear_tool_results --keep-turns 1
    """
    if strategy is not None and strategy not in ("summarize", "clear_tool_results"):
        ctx.fail("--strategy is summarize or clear_tool_results")
    with connect(ctx, timeout=300.0) as client:
        done = client.compact(agent, session, strategy=strategy, keep_turns=keep_turns)
    if as_json:
        echo_json(done)
        return
    out().print(f"compacted {escape(agent)}/{escape(session)} at seq {done.get('seq')}: "
                f"{escape(compacted_line(done))}", soft_wrap=True)
    summary = done.get("summary")
    if summary:
        out().print(escape(str(summary)), soft_wrap=True)
