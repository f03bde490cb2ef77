"""`agentd secret set|list|delete`: named secrets over the HTTP API (``agentd.client``).

A value is never an argument (it would sit in the shell's history and in every
process listing): it comes from ``--value-file`` (``-``: stdin), from stdin when it
is not a terminal, or from a prompt that does not echo. One trailing newline is
dropped (``echo`` and editors add one).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from agentd.cli._common import JsonFlag, connect, echo_json, fail, out

__all__ = ["secret_app"]

secret_app = typer.Typer(
    name="secret",
    help="Named secrets settings use as secret:NAME (MCP headers and environment, "
         "http_fetch headers, model keys): write-only, never shown again.",
    no_args_is_help=True,
    rich_markup_mode="rich",
)

NameArg = Annotated[str, typer.Argument(metavar="NAME", help="The secret's name.",
                                        show_default=False)]
TenantOpt = Annotated[str | None, typer.Option(
    "--tenant", "-t", help="Its tenant (default: the token's, else default).",
    show_default=False)]
AgentOpt = Annotated[str | None, typer.Option(
    "--agent", "-a", help="The one agent it is for (else the whole tenant's).",
    show_default=False)]


def _value(value_file: str | None) -> str:
    if value_file == "-" or (value_file is None and not sys.stdin.isatty()):
        text = sys.stdin.read()
    elif value_file is not None:
        try:
            text = Path(value_file).read_text()
        except OSError as exc:
            fail(f"cannot read {value_file}: {exc.strerror or exc}")
    else:
        text = typer.prompt("Value", hide_input=True, confirmation_prompt=True)
    text = text.removesuffix("\n").removesuffix("\r")
    if not text:
        fail("the value is empty: nothing was set")
    return text


@secret_app.command("set")
def set_secret(
    ctx: typer.Context,
    name: NameArg,
    value_file: Annotated[str | None, typer.Option(
        "--value-file", metavar="PATH",
        help="Read the value from PATH (- : stdin). Default: stdin when piped, else "
             "a prompt that does not echo.", show_default=False)] = None,
    tenant: TenantOpt = None,
    agent: AgentOpt = None,
    as_json: JsonFlag = False,
) -> None:
    """Set (or replace) a secret. The value is never an argument.

    [bold]Examples[/]
      $ agentd secret set GITHUB_TOKEN --value-file ~/.config/gh-token
      $ printf %s "$TOKEN" | agentd secret set GITHUB_TOKEN --agent acme.bot
    """
    value = _value(value_file)
    with connect(ctx) as client:
        made = client.set_secret(name, value, tenant=tenant, agent=agent)
    if as_json:
        echo_json(made)
        return
    where = f"agent {made['agent']}" if made.get("agent") else f"tenant {made['tenant']}"
    out().print(Text(f"secret {made['name']} set for {where}"))


@secret_app.command("list")
def list_secrets(
    ctx: typer.Context,
    tenant: TenantOpt = None,
    agent: AgentOpt = None,
    as_json: JsonFlag = False,
) -> None:
    """The secrets the token may see: names and scopes, never values."""
    with connect(ctx) as client:
        found = client.list_secrets(tenant=tenant, agent=agent)
    if as_json:
        echo_json(found)
        return
    if not found:
        out().print("no secrets")
        return
    table = Table(show_edge=False, pad_edge=False)
    for column in ("NAME", "TENANT", "AGENT", "UPDATED"):
        table.add_column(column, no_wrap=True)
    for item in found:
        table.add_row(Text(str(item["name"])), Text(str(item["tenant"])),
                      Text(str(item.get("agent") or "-")), Text(str(item["updated_at"])))
    out().print(table)


@secret_app.command("delete")
def delete_secret(
    ctx: typer.Context,
    name: NameArg,
    tenant: TenantOpt = None,
    agent: AgentOpt = None,
) -> None:
    """Delete a secret; settings naming it fail where they use it."""
    with connect(ctx) as client:
        client.delete_secret(name, tenant=tenant, agent=agent)
    out().print(Text(f"secret {name} deleted"))
