"""Approval commands: `agentd approvals` lists what runs wait on, `agentd approve` and
`agentd deny` decide."""

from __future__ import annotations

import time
from typing import Annotated, Any

import orjson
import typer
from rich.markup import escape

from agentd.cli._common import connect, echo_json, out

ApprovalArg = Annotated[
    str, typer.Argument(help="Approval id (ap_...), as `agentd approvals` lists it.",
                        show_default=False)]
RememberOption = Annotated[
    str | None,
    typer.Option("--remember", help="Also make this a rule of the agent's policy: "
                                    "'arguments' (these exact arguments) or, to deny, 'tool'.",
                 show_default=False)]
ReasonOption = Annotated[
    str | None, typer.Option("--reason", "-r", help="Why (a denial's reason reaches the "
                                                    "model).", show_default=False)]


def _args(value: dict[str, Any]) -> str:
    text = orjson.dumps(value).decode()
    return text if len(text) <= 80 else text[:77] + "..."


def _expires(request: dict[str, Any]) -> str:
    at = request.get("expires_at")
    if not at:
        return "-"
    left = float(at) - time.time()
    return "expired" if left <= 0 else f"in {left / 60:.0f} min" if left >= 60 else \
        f"in {left:.0f} s"


def approvals(
    ctx: typer.Context,
    agent: Annotated[str | None, typer.Option("--agent", "-a", help="Only this agent's.",
                                              show_default=False)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List the tool calls waiting for a person, oldest first.

    [bold]Examples[/]
      $ agentd approvals
      $ agentd approvals --agent ops --json | jq '.[0].approval_id'
    """
    with connect(ctx) as client:
        pending = client.approvals(agent)
    if as_json:
        echo_json(pending)
        return
    if not pending:
        out().print("[dim]nothing waits for approval[/]")
        return
    console = out()
    for request in pending:
        console.print(f"[bold]{escape(request['approval_id'])}[/]  "
                      f"{escape(request['agent'])} / {escape(request['session'])}  "
                      f"run {escape(request['run_id'])}", soft_wrap=True)
        console.print(f"  {escape(request['name'])} "
                      f"{escape(_args(request.get('arguments') or {}))}", soft_wrap=True)
        expires = _expires(request)
        console.print(f"  [dim]why:[/] {escape(str(request.get('reason') or ''))}"
                      + (f"  [dim]expires:[/] {expires}" if expires != "-" else ""),
                      soft_wrap=True)


def approve(
    ctx: typer.Context,
    approval_id: ApprovalArg,
    arguments: Annotated[
        str | None,
        typer.Option("--args", help="Run the call with these arguments (a JSON object) "
                                    "instead of the model's.", show_default=False)] = None,
    remember: RememberOption = None,
    reason: ReasonOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the decision as JSON.")
                       ] = False,
) -> None:
    """Approve a tool call a run waits on (see [bold]agentd approvals[/]).

    [bold]Examples[/]
      $ agentd approve ap_0192c3d4e5f6a1b2c3d4e5f6a7
      $ agentd approve "$ID" --args '{"target": "staging"}'
      $ agentd approve "$ID" --remember arguments
    """
    edited: dict[str, Any] | None = None
    if arguments is not None:
        try:
            edited = orjson.loads(arguments)
        except orjson.JSONDecodeError as exc:
            raise typer.BadParameter(f"not JSON: {exc}", param_hint="--args") from None
        if not isinstance(edited, dict):
            raise typer.BadParameter("must be a JSON object", param_hint="--args")
    _decide(ctx, approval_id, "approve", as_json, arguments=edited, remember=remember,
            reason=reason)


def deny(
    ctx: typer.Context,
    approval_id: ApprovalArg,
    reason: ReasonOption = None,
    remember: RememberOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the decision as JSON.")
                       ] = False,
) -> None:
    """Deny a tool call a run waits on: the model is told it was denied, and why.

    [bold]Examples[/]
      $ agentd deny ap_0192c3d4e5f6a1b2c3d4e5f6a7 --reason "not on production"
    """
    _decide(ctx, approval_id, "deny", as_json, remember=remember, reason=reason)


def _decide(ctx: typer.Context, approval_id: str, action: str, as_json: bool,
            **fields: Any) -> None:
    if fields.get("remember") not in (None, "arguments", "tool"):
        raise typer.BadParameter("use 'arguments' or 'tool'", param_hint="--remember")
    with connect(ctx) as client:
        decision = client.decide_approval(approval_id, action, **fields)
    if as_json:
        echo_json(decision)
        return
    done = "approved" if action == "approve" else "denied"
    remembered = (f"; remembered for this agent ({fields['remember']})"
                  if fields.get("remember") else "")
    out().print(f"{escape(approval_id)} {done}{remembered}", soft_wrap=True)
