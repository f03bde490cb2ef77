"""The `memory` commands: an agent's core memory blocks (list, show, set, delete,
history, restore, share); the long-term memory entry commands live in
cli/_memory_entries.py and are registered here.

A block's value and description are written by agents (and so by whatever their tools
read): they are printed as plain ``Text`` on the safe console, never parsed as markup.
"""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from agentd.cli import _memory_entries
from agentd.cli._common import AgentArg, JsonFlag, connect, echo_json, out
from agentd.cli._render import short, when

__all__ = ["memory_app"]

memory_app = typer.Typer(
    name="memory",
    help="An agent's memory: core blocks (labelled texts the model sees in every call) and "
         "long-term entries (searched, recalled when relevant).",
    no_args_is_help=True,
    rich_markup_mode="rich",
)

LabelArg = Annotated[
    str, typer.Argument(metavar="LABEL", help="The block's label, e.g. human.", show_default=False)
]
_BLOCKS = "Core blocks"


def _meta(block: dict[str, Any]) -> str:
    """``human: 120/5000 chars, version 3, read-only`` (plain text)."""
    line = (f"{block.get('label', '?')}: {block.get('chars', 0)}/{block.get('limit', '?')} "
            f"chars, version {block.get('version', '?')}")
    return f"{line}, read-only" if block.get("read_only") else line


def blocks_table(blocks: list[dict[str, Any]]) -> Table:
    table = Table(show_edge=False, pad_edge=False)
    table.add_column("LABEL", style="bold", no_wrap=True)
    table.add_column("CHARS", justify="right", no_wrap=True)
    table.add_column("READ-ONLY", no_wrap=True)
    table.add_column("VERSION", justify="right")
    table.add_column("DESCRIPTION")
    for block in blocks:
        table.add_row(
            Text(str(block.get("label", ""))),
            f"{block.get('chars', 0)}/{block.get('limit', '?')}",
            "yes" if block.get("read_only") else "no",
            str(block.get("version", "")),
            Text(short(block.get("description") or "", 80)),
        )
    return table


def history_table(versions: list[dict[str, Any]]) -> Table:
    table = Table(show_edge=False, pad_edge=False)
    table.add_column("VERSION", justify="right")
    table.add_column("AT", style="dim", no_wrap=True)
    table.add_column("BY", no_wrap=True)
    table.add_column("CHARS", justify="right")
    table.add_column("VALUE")
    for version in versions:
        value = str(version.get("value") or "")
        table.add_row(
            str(version.get("version", "")),
            when(version.get("at")),
            Text(str(version.get("changed_by") or "")),
            f"{len(value)}/{version.get('limit', '?')}",
            Text(short(value, 80)),
        )
    return table


@memory_app.command("blocks", rich_help_panel=_BLOCKS)
def blocks(ctx: typer.Context, agent: AgentArg, as_json: JsonFlag = False) -> None:
    """List an agent's blocks in the order the model sees them.

    [bold]Examples[/]
      $ agentd memory blocks demo
      $ agentd memory blocks demo --json | jq -r '.[].label'
    """
    with connect(ctx) as client:
        found = client.list_blocks(agent)
    if as_json:
        echo_json(found)
    elif not found:
        out().print(Text(f"{agent} has no memory blocks yet; "
                         f"agentd memory set {agent} LABEL VALUE makes one", style="dim"),
                    soft_wrap=True)
    else:
        out().print(blocks_table(found))


@memory_app.command("show", rich_help_panel=_BLOCKS)
def show(ctx: typer.Context, agent: AgentArg, label: LabelArg, as_json: JsonFlag = False
         ) -> None:
    """Print one block: a line about it, its description, then its value verbatim.

    [bold]Examples[/]
      $ agentd memory show demo human
      $ agentd memory show demo human --json | jq -r .value
    """
    with connect(ctx) as client:
        block = client.get_block(agent, label)
    if as_json:
        echo_json(block)
        return
    console = out()
    console.print(Text(_meta(block), style="dim"), soft_wrap=True)
    if block.get("description"):
        console.print(Text(str(block["description"]), style="dim"), soft_wrap=True)
    console.print(Text(str(block.get("value") or "")), soft_wrap=True)


@memory_app.command("set", rich_help_panel=_BLOCKS)
def set_block(
    ctx: typer.Context,
    agent: AgentArg,
    label: LabelArg,
    value: Annotated[
        str, typer.Argument(metavar="VALUE", help="The new value; - reads it from stdin.",
                            show_default=False)
    ],
    description: Annotated[
        str | None, typer.Option("--description", "-d", help="What the block is for.",
                                 show_default=False)
    ] = None,
    limit: Annotated[
        int | None, typer.Option("--limit", metavar="N",
                                 help="Most characters the value may have.",
                                 show_default=False)
    ] = None,
    read_only: Annotated[
        bool | None, typer.Option("--read-only/--writable",
                                  help="Whether the agent's own tools may change it.",
                                  show_default=False)
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Create a block or give it a new value (a new version).

    Options left out keep what the block has (a new one: no description, limit 5000,
    writable).

    [bold]Examples[/]
      $ agentd memory set demo human "Name: Ann. Prefers short answers."
      $ agentd memory set demo persona - --limit 2000 < persona.txt
      $ agentd memory set demo rules "Never deploy on Fridays." --read-only
    """
    text = sys.stdin.read() if value == "-" else value
    with connect(ctx) as client:
        block = client.put_block(agent, label, text, description=description, limit=limit,
                                 read_only=read_only)
    if as_json:
        echo_json(block)
        return
    out().print(Text(f"set {_meta(block)} (agent {agent})"), soft_wrap=True)


@memory_app.command("delete", rich_help_panel=_BLOCKS)
def delete(ctx: typer.Context, agent: AgentArg, label: LabelArg) -> None:
    """Remove a block from an agent (gone, with its history, once no agent has it).

    [bold]Example[/]
      $ agentd memory delete demo scratch
    """
    with connect(ctx) as client:
        client.delete_block(agent, label)
    out().print(Text(f"deleted block {label} of {agent}"), soft_wrap=True)


@memory_app.command("history", rich_help_panel=_BLOCKS)
def history(ctx: typer.Context, agent: AgentArg, label: LabelArg, as_json: JsonFlag = False
            ) -> None:
    """Every version of a block, oldest first: when, who wrote it, its value.

    [bold]Examples[/]
      $ agentd memory history demo human
      $ agentd memory history demo human --json | jq -r '.[-2].value'
    """
    with connect(ctx) as client:
        versions = client.block_history(agent, label)
    if as_json:
        echo_json(versions)
    else:
        out().print(history_table(versions))


@memory_app.command("restore", rich_help_panel=_BLOCKS)
def restore(
    ctx: typer.Context,
    agent: AgentArg,
    label: LabelArg,
    version: Annotated[int, typer.Argument(metavar="VERSION", min=1,
                                           help="The version to make current again.",
                                           show_default=False)],
    as_json: JsonFlag = False,
) -> None:
    """Make an old version of a block current again (as a new version).

    [bold]Example[/]
      $ agentd memory restore demo human 2
    """
    with connect(ctx) as client:
        block = client.restore_block(agent, label, version)
    if as_json:
        echo_json(block)
        return
    out().print(Text(f"restored version {version}: {_meta(block)} (agent {agent})"),
                soft_wrap=True)


@memory_app.command("share", rich_help_panel=_BLOCKS)
def share(
    ctx: typer.Context,
    agent: AgentArg,
    label: LabelArg,
    other: Annotated[str, typer.Argument(metavar="OTHER",
                                         help="The agent to share the block with.",
                                         show_default=False)],
    as_json: JsonFlag = False,
) -> None:
    """Share a block with another agent (same label): both see and change one block.

    [bold]Example[/]
      $ agentd memory share planner project coder
    """
    with connect(ctx) as client:
        block = client.attach_block(agent, label, other)
    if as_json:
        echo_json(block)
        return
    out().print(Text(f"shared block {label} of {agent} with {other}"), soft_wrap=True)


_ENTRIES = "Long-term entries"
memory_app.command(rich_help_panel=_ENTRIES)(_memory_entries.remember)
memory_app.command(rich_help_panel=_ENTRIES)(_memory_entries.entries)
memory_app.command(rich_help_panel=_ENTRIES)(_memory_entries.entry)
memory_app.command(rich_help_panel=_ENTRIES)(_memory_entries.forget)
memory_app.command(rich_help_panel=_ENTRIES)(_memory_entries.search)
memory_app.command(rich_help_panel=_ENTRIES)(_memory_entries.consolidate)
memory_app.command(rich_help_panel=_ENTRIES)(_memory_entries.export)
memory_app.command("import", rich_help_panel=_ENTRIES)(_memory_entries.import_)
