"""`agentd tools`: the tools the daemon has, with their arguments and what they may do."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from agentd.cli._common import connect, echo_json, out
from agentd.cli._render import short

#: Metadata flags shown in the FLAGS column, in this order.
_FLAGS = (("read_only", "read-only"), ("idempotent", "idempotent"),
          ("needs_approval", "approval"), ("needs_network", "network"),
          ("sends_out", "sends-out"), ("untrusted_output", "untrusted"))


def _flags(tool: dict[str, Any]) -> str:
    return ", ".join(label for key, label in _FLAGS if tool.get(key)) or "-"


def _type_of(schema: Any) -> str:
    if not isinstance(schema, dict):
        return "?"
    if "type" in schema:
        kind = schema["type"]
        if kind == "array" and isinstance(schema.get("items"), dict):
            return f"array of {_type_of(schema['items'])}"
        return str(kind)
    for key in ("anyOf", "oneOf"):
        if isinstance(schema.get(key), list):
            return " | ".join(_type_of(s) for s in schema[key])
    if "enum" in schema:
        return " | ".join(repr(v) for v in schema["enum"])
    return "any"


def tools_table(tools: list[dict[str, Any]]) -> Table:
    table = Table(show_edge=False, pad_edge=False)
    table.add_column("TOOL", style="bold", no_wrap=True)
    table.add_column("FLAGS")
    table.add_column("TIMEOUT", justify="right", no_wrap=True)
    table.add_column("DESCRIPTION")
    for tool in tools:
        table.add_row(Text(str(tool.get("name", ""))), Text(_flags(tool)),
                      f"{tool.get('timeout_s', 0):g}s",
                      Text(short(str(tool.get("description") or "").split("\n")[0], 120)))
    return table


def tool_details(tool: dict[str, Any]) -> Table:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column()
    grid.add_row("tool", Text(str(tool.get("name", ""))))
    grid.add_row("description", Text(str(tool.get("description") or "-")))
    grid.add_row("flags", Text(_flags(tool)))
    grid.add_row("timeout", Text(f"{tool.get('timeout_s', 0):g}s"))
    params = tool.get("parameters") if isinstance(tool.get("parameters"), dict) else {}
    assert isinstance(params, dict)
    props = params.get("properties") if isinstance(params.get("properties"), dict) else {}
    assert isinstance(props, dict)
    required = set(params.get("required") or [])
    if not props:
        grid.add_row("arguments", Text("none"))
    for i, (arg, schema) in enumerate(props.items()):
        line = Text(arg, style="bold")
        line.append(f" ({_type_of(schema)}{', required' if arg in required else ''})",
                    style="dim")
        if isinstance(schema, dict):
            if schema.get("description"):
                line.append(f": {schema['description']}")
            if "default" in schema:
                line.append(f" [default: {short(schema['default'], 60)}]", style="dim")
        grid.add_row("arguments" if i == 0 else "", line)
    return grid


def tools(
    ctx: typer.Context,
    name: Annotated[str | None, typer.Argument(
        help="A tool's name: show its arguments.", show_default=False)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List the tools agents may use, or show one tool's arguments.

    FLAGS say what a tool may do: [bold]read-only[/], [bold]idempotent[/] (safe to
    repeat after a crash), [bold]approval[/] (a person approves each call unless a
    policy rule allows it), [bold]network[/], [bold]sends-out[/], [bold]untrusted[/]
    (its result taints the session). An agent's MCP tools are its own and not listed.

    [bold]Examples[/]
      $ agentd tools
      $ agentd tools shell
      $ agentd tools --json | jq -r '.[].name'
    """
    with connect(ctx) as client:
        found: Any = client.get_tool(name) if name is not None else client.list_tools()
    if as_json:
        echo_json(found)
    elif name is not None:
        out().print(tool_details(found))
    else:
        out().print(tools_table(found))
