"""`agentd mcp login|status|logout`: OAuth for agents' MCP servers over the HTTP API.

``login`` prints the link a person opens to sign in at the server's authorization
server; the daemon's callback stores the tokens (never shown). With ``--wait`` it
then waits until the server is authorized (or the link expires).
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from agentd.cli._common import AgentArg, JsonFlag, connect, echo_json, fail, out

__all__ = ["mcp_app"]

mcp_app = typer.Typer(
    name="mcp",
    help="Authorize agents' MCP servers that take OAuth tokens: a person signs in once; "
         "the tokens are kept sealed and refreshed by the daemon.",
    no_args_is_help=True,
    rich_markup_mode="rich",
)

ServerArg = Annotated[str, typer.Argument(metavar="SERVER", show_default=False,
                                          help="The MCP server's name in the agent's "
                                               "settings (settings.mcp[].name).")]
#: Seconds between two looks at the status while --wait waits.
POLL_S = 2.0


def _until(expires_at: str) -> float:
    try:
        return datetime.fromisoformat(expires_at.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return time.time() + 600


@mcp_app.command("login")
def login(
    ctx: typer.Context,
    agent: AgentArg,
    server: ServerArg,
    wait: Annotated[bool, typer.Option(
        "--wait", help="Wait until the person has signed in (or the link expired).")
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """Print the link a person opens to authorize the agent's MCP server.

    Open it in a browser, sign in and consent: the daemon keeps the tokens.

    [bold]Examples[/]
      $ agentd mcp login support github
      $ agentd mcp login support github --wait
    """
    with connect(ctx) as client:
        started = client.mcp_login(agent, server)
        if as_json:
            echo_json(started)
        else:
            out().print(Text(f"Open this link to authorize agent {agent} with MCP server "
                             f"{server} ({started['issuer']}):"))
            out().print(Text(str(started["authorization_url"])), soft_wrap=True)
            out().print(Text(f"It works once, until {started['expires_at']}."))
        if not wait:
            return
        deadline = _until(str(started["expires_at"]))
        while time.time() < deadline:
            found = {s["server"]: s for s in client.mcp_status(agent)}.get(server, {})
            if found.get("authorized") and not found.get("login_pending"):
                if not as_json:
                    out().print(Text(f"authorized: scope {found.get('scope') or '-'}"))
                return
            time.sleep(POLL_S)
    fail(f"not authorized before the link expired: run agentd mcp login {agent} "
         f"{server} again")


@mcp_app.command("status")
def status(ctx: typer.Context, agent: AgentArg, as_json: JsonFlag = False) -> None:
    """Whether each of the agent's OAuth MCP servers is authorized (no token shown)."""
    with connect(ctx) as client:
        found = client.mcp_status(agent)
    if as_json:
        echo_json(found)
        return
    if not found:
        out().print(f"agent {agent} has no MCP server that takes OAuth tokens")
        return
    table = Table(show_edge=False, pad_edge=False)
    for column in ("SERVER", "AUTHORIZED", "TOKENS", "SCOPE", "EXPIRES", "URL"):
        table.add_column(column, no_wrap=True)
    for item in found:
        state = "yes" if item["authorized"] else (
            "login under way" if item["login_pending"] else "no")
        table.add_row(Text(str(item["server"])), Text(state), Text(str(item["tokens"])),
                      Text(str(item.get("scope") or "-")),
                      Text(str(item.get("expires_at") or "-")), Text(str(item["url"])))
    out().print(table)


@mcp_app.command("logout")
def logout(ctx: typer.Context, agent: AgentArg, server: ServerArg) -> None:
    """Forget the server's tokens (revoked first, where the server can).

    The agent's calls of its tools then need a new login.
    """
    with connect(ctx) as client:
        client.mcp_logout(agent, server)
    out().print(Text(f"MCP server {server} of agent {agent}: logged out"))
