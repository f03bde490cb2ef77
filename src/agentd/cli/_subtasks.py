"""`agentd subtasks RUN`: the child runs a run started (subtasks, calls to agents)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from agentd.cli._common import connect, echo_json, out
from agentd.cli._render import short, status_text
from agentd.cli._runs import RunIdArg


def subtasks(
    ctx: typer.Context,
    run_id: RunIdArg,
    as_json: Annotated[bool, typer.Option("--json", help="Print them as JSON.")] = False,
) -> None:
    """List the subtasks and agent calls a run started, with their status and output.

    Each is a run of its own (its id is in --json; [bold]agentd run RUN[/] shows
    it); cancelling the parent run cancels the ones still going.

    [bold]Examples[/]
      $ agentd subtasks r_0192c3d4e5f6a1b2c3d4e5f6a7
      $ agentd subtasks "$RUN" --json | jq '.[].status'
    """
    with connect(ctx) as client:
        found = client.subtasks(run_id)
    if as_json:
        echo_json(found)
        return
    if not found:
        out().print(f"run [bold]{escape(run_id)}[/] started no subtasks", soft_wrap=True)
        return
    # The id and status always in full (the terminal may be narrow); the rest cut.
    table = Table(show_edge=False, pad_edge=False)
    table.add_column("SUBTASK", style="bold", no_wrap=True,
                     min_width=max(len(str(c.get("id", ""))) for c in found))
    table.add_column("STATUS", no_wrap=True, min_width=9)
    for name in ("TYPE", "AGENT", "TITLE", "OUTPUT"):
        table.add_column(name, no_wrap=True, overflow="ellipsis")
    for child in found:
        table.add_row(Text(str(child.get("id", ""))), status_text(child.get("status")),
                      str(child.get("type", "")),
                      Text(short(str(child.get("agent", "")), 16)),
                      Text(short(str(child.get("title") or ""), 30)),
                      Text(short(str(child.get("output") or ""), 40)))
    out().print(table)
