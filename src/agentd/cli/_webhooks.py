"""`agentd webhook add|list|show|enable|disable|delete|rotate|ping|deliveries|replay`:
an agent's events posted, signed, to a URL, over the HTTP API (``agentd.client``).

A delivery's error and an event's payload may hold text from outside (a receiver's
answer, an agent's tool output), so they are printed as plain ``Text``.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from agentd.cli._common import AgentArg, JsonFlag, connect, echo_json, more_command, out

__all__ = ["webhook_app"]

webhook_app = typer.Typer(
    name="webhook",
    help="Webhooks: an agent's events posted, signed, to a URL the operator allows "
         "([webhooks] allow_hosts); retried, replayable.",
    no_args_is_help=True,
    rich_markup_mode="rich",
)

IdArg = Annotated[str, typer.Argument(metavar="ID", help="The webhook's id (wh_...).",
                                      show_default=False)]
DeliveryArg = Annotated[str, typer.Argument(metavar="DELIVERY",
                                            help="The delivery's id (whd_...).",
                                            show_default=False)]


def _table(items: list[dict[str, Any]]) -> Table:
    table = Table(show_edge=False, pad_edge=False)
    for name in ("ID", "AGENT", "URL", "KINDS", "STATE", "DESCRIPTION"):
        table.add_column(name, no_wrap=name in ("ID", "AGENT"))
    for item in items:
        table.add_row(Text(str(item["id"])), Text(str(item["agent"])),
                      Text(str(item["url"])), Text(", ".join(item.get("kinds") or [])),
                      Text("enabled" if item.get("enabled") else "disabled"),
                      Text(str(item.get("description") or "")))
    return table


def _delivery_table(items: list[dict[str, Any]]) -> Table:
    table = Table(show_edge=False, pad_edge=False)
    for name in ("ID", "KIND", "SEQ", "STATUS", "ATTEMPTS", "LAST", "WHEN"):
        table.add_column(name, no_wrap=name != "LAST")
    for item in items:
        last = str(item.get("last_status") or item.get("last_error") or "-")
        when = (item.get("delivered_at") if item.get("status") == "delivered"
                else item.get("next_attempt_at")) or item.get("last_attempt_at") or "-"
        table.add_row(Text(str(item["id"])), Text(str(item["kind"])),
                      Text(str(item.get("seq") if item.get("seq") is not None else "-")),
                      Text(str(item["status"])), Text(str(item["attempts"])),
                      Text(last), Text(str(when)))
    return table


@webhook_app.command("add")
def add(
    ctx: typer.Context,
    agent: AgentArg,
    url: Annotated[str, typer.Argument(metavar="URL", help="Where deliveries are POSTed.",
                                       show_default=False)],
    kinds: Annotated[list[str] | None, typer.Option(
        "--kind", "-k", metavar="KIND",
        help="An event kind, a family (run.*) or * (repeat; default *).",
        show_default=False)] = None,
    description: Annotated[str | None, typer.Option("--description", "-d",
                                                    show_default=False)] = None,
    as_json: JsonFlag = False,
) -> None:
    """Subscribe a URL to an agent's events; prints the signing secret (shown once).

    [bold]Examples[/]
      $ agentd webhook add demo https://hooks.example.com/agentd -k run.completed -k run.failed
    """
    with connect(ctx) as client:
        made = client.create_webhook(agent, url, kinds=kinds, description=description)
    if as_json:
        echo_json(made)
        return
    out().print(Text(f"webhook {made['id']}: {made['url']} ({', '.join(made['kinds'])})"),
                soft_wrap=True)
    out().print(Text(f"secret: {made['secret']}  (shown once: keep it to verify "
                     "signatures)"), soft_wrap=True)


@webhook_app.command("list")
def list_(
    ctx: typer.Context,
    agent: Annotated[str | None, typer.Argument(metavar="[AGENT]", help="Only this "
                                                "agent's.", show_default=False)] = None,
    as_json: JsonFlag = False,
) -> None:
    """List webhooks (of one agent, or of every agent)."""
    with connect(ctx) as client:
        items = list(client.list_webhooks(agent))
    if as_json:
        echo_json(items)
    elif not items:
        out().print("no webhooks")
    else:
        out().print(_table(items))


@webhook_app.command("show")
def show(ctx: typer.Context, webhook_id: IdArg, as_json: JsonFlag = False) -> None:
    """Show one webhook and its deliveries by status."""
    with connect(ctx) as client:
        item = client.get_webhook(webhook_id)
    if as_json:
        echo_json(item)
        return
    out().print(_table([item]))
    counts = item.get("deliveries") or {}
    out().print(Text("deliveries: " + ", ".join(f"{k} {v}" for k, v in counts.items())))


def _set_enabled(ctx: typer.Context, webhook_id: str, enabled: bool) -> None:
    with connect(ctx) as client:
        client.update_webhook(webhook_id, enabled=enabled)
    out().print(Text(f"{'enabled' if enabled else 'disabled'} {webhook_id}"))


@webhook_app.command("enable")
def enable(ctx: typer.Context, webhook_id: IdArg) -> None:
    """Deliver again (events from now on)."""
    _set_enabled(ctx, webhook_id, True)


@webhook_app.command("disable")
def disable(ctx: typer.Context, webhook_id: IdArg) -> None:
    """Stop delivering (events meanwhile are not delivered later)."""
    _set_enabled(ctx, webhook_id, False)


@webhook_app.command("delete")
def delete(ctx: typer.Context, webhook_id: IdArg) -> None:
    """Delete a webhook and its deliveries."""
    with connect(ctx) as client:
        client.delete_webhook(webhook_id)
    out().print(Text(f"deleted {webhook_id}"))


@webhook_app.command("rotate")
def rotate(ctx: typer.Context, webhook_id: IdArg, as_json: JsonFlag = False) -> None:
    """A new signing secret (the old one signs nothing from now on)."""
    with connect(ctx) as client:
        item = client.rotate_webhook_secret(webhook_id)
    if as_json:
        echo_json(item)
    else:
        out().print(Text(f"secret: {item['secret']}  (shown once)"), soft_wrap=True)


@webhook_app.command("ping")
def ping(ctx: typer.Context, webhook_id: IdArg, as_json: JsonFlag = False) -> None:
    """Queue a test delivery (kind webhook.ping)."""
    with connect(ctx) as client:
        item = client.ping_webhook(webhook_id)
    echo_json(item) if as_json else out().print(Text(f"queued {item['id']}"))


@webhook_app.command("deliveries")
def deliveries(
    ctx: typer.Context,
    webhook_id: IdArg,
    status: Annotated[str | None, typer.Option(
        "--status", metavar="STATUS", help="pending, delivered or failed.",
        show_default=False)] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, max=1000)] = 50,
    before: Annotated[str | None, typer.Option(
        "--before", metavar="DELIVERY", help="The page after this delivery (the hint the "
                                             "page before printed).",
        show_default=False)] = None,
    as_json: JsonFlag = False,
) -> None:
    """The webhook's latest deliveries, newest first, a page at a time (--before).

    [bold]Examples[/]
      $ agentd webhook deliveries "$HOOK" --status failed
      $ agentd webhook deliveries "$HOOK" -n 10 --json | jq -r '.[].id'
    """
    with connect(ctx) as client:
        page = client.webhook_deliveries(webhook_id, status=status, limit=limit,
                                         before=before)
    items: list[dict[str, Any]] = page.get("deliveries", [])
    if as_json:
        echo_json(items)
    elif not items:
        out().print("no deliveries")
    else:
        out().print(_delivery_table(items))
    if page.get("next_before"):
        words = ["agentd", "webhook", "deliveries", webhook_id]
        if status:
            words += ["--status", status]
        words += ["--limit", str(limit), "--before", page["next_before"]]
        more_command(words, as_json)


@webhook_app.command("replay")
def replay(ctx: typer.Context, delivery_id: DeliveryArg) -> None:
    """Send a delivery again now (same id, fresh signature)."""
    with connect(ctx) as client:
        client.replay_webhook_delivery(delivery_id)
    out().print(Text(f"replaying {delivery_id}"))
