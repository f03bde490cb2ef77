"""`agentd token create|list|revoke|rotate`, `agentd tenant create|list|show|set|delete`,
`agentd audit list|verify`: who may do what, over the HTTP API (``agentd.client``)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from agentd.cli._common import JsonFlag, connect, echo_json, fail, out

__all__ = ["audit_app", "tenant_app", "token_app"]

token_app = typer.Typer(
    name="token", no_args_is_help=True, rich_markup_mode="rich",
    help="Named tokens: a role (viewer, member, operator, admin), an optional tenant or "
         "agent patterns, an optional expiry; shown once, stored hashed.")
tenant_app = typer.Typer(
    name="tenant", no_args_is_help=True, rich_markup_mode="rich",
    help="Tenants and their quotas (agents, sessions, schedules, memory entries, egress "
         "connections, sandbox uids, spend per day).")
audit_app = typer.Typer(
    name="audit", no_args_is_help=True, rich_markup_mode="rich",
    help="The audit log: refusals and changes to tokens, tenants, agents, policies and "
         "approvals, hash-chained (admins).")

NameArg = Annotated[str, typer.Argument(metavar="NAME", show_default=False)]
_DURATION = re.compile(r"^(\d+)([smhdw])\Z")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 7 * 86_400}
QUOTAS = ("agents", "sessions", "schedules", "memory_entries", "egress_connections",
          "sandbox_uids", "spend_usd_per_day")


def expiry(text: str, now: datetime | None = None) -> str:
    """``30d``, ``12h``, ``90m``... from now, or an ISO 8601 time, as ISO 8601 (UTC)."""
    now = now or datetime.now(UTC)
    match = _DURATION.match(text.strip())
    if match:
        return (now + timedelta(seconds=int(match.group(1)) * _UNITS[match.group(2)])
                ).isoformat()
    try:
        when = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        fail(f"--expires {text!r}: give a duration (30d, 12h, 90m) or an ISO 8601 time "
             "(2027-01-01T00:00:00Z)", 2)
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).isoformat()


def quotas(items: list[str]) -> dict[str, Any]:
    """``NAME=N`` pairs (``none`` lifts a quota) as a quotas object."""
    found: dict[str, Any] = {}
    for item in items:
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep or name not in QUOTAS:
            fail(f"--quota {item!r}: give NAME=N, NAME one of {', '.join(QUOTAS)}", 2)
        text = value.strip().lower()
        if text in ("none", "null", ""):
            found[name] = None
            continue
        try:
            found[name] = float(text) if name == "spend_usd_per_day" else int(text)
        except ValueError:
            fail(f"--quota {item!r}: {value!r} is not a number", 2)
    return found


# -- tokens -----------------------------------------------------------------------------


def _token_table(items: list[dict[str, Any]]) -> Table:
    table = Table(show_edge=False, pad_edge=False)
    for name in ("NAME", "ROLE", "SCOPE", "PREFIX", "EXPIRES", "SOURCE"):
        table.add_column(name, no_wrap=name in ("NAME", "PREFIX"))
    for item in items:
        scope = item.get("scope") or ", ".join(
            p for p in (f"tenant {item['tenant']}" if item.get("tenant") else "",
                        f"agents {', '.join(item['agents'])}" if item.get("agents") else "")
            if p) or "every agent"
        expires = str(item.get("expires_at") or "never")
        if item.get("expired"):
            expires += " (expired)"
        table.add_row(Text(item["name"]), Text(item["role"]), Text(scope),
                      Text(str(item.get("prefix") or "-")), Text(expires),
                      Text(item["source"]))
    return table


@token_app.command("create")
def token_create(
    ctx: typer.Context,
    name: NameArg,
    role: Annotated[str, typer.Option("--role", "-r", help="viewer, member, operator or "
                                      "admin (at most your own).")] = "member",
    tenant: Annotated[str | None, typer.Option(
        "--tenant", "-t", help="Bind it to a tenant (its agents only; new ones named "
                               "TENANT.NAME).", show_default=False)] = None,
    agents: Annotated[list[str] | None, typer.Option(
        "--agent", "-a", metavar="PATTERN", help="Agent name pattern it may use (repeat).",
        show_default=False)] = None,
    expires: Annotated[str | None, typer.Option(
        "--expires", "-e", help="30d, 12h, 90m, or an ISO 8601 time.",
        show_default=False)] = None,
    as_json: JsonFlag = False,
) -> None:
    """Make a named token and print it (shown once: store it now).

    [bold]Examples[/]
      $ agentd token create ci --role member --tenant acme --expires 90d
      $ agentd token create dashboard --role viewer
    """
    with connect(ctx) as client:
        made = client.create_token(name, role, tenant=tenant, agents=agents,
                                   expires_at=expiry(expires) if expires else None)
    if as_json:
        echo_json(made)
        return
    out().print(Text(f"token {made['name']} ({made['role']}): {made['token']}"),
                soft_wrap=True)
    out().print("shown once: the daemon keeps only a hash of it")


@token_app.command("list")
def token_list(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """The tokens you may see (never their text)."""
    with connect(ctx) as client:
        items = client.list_tokens()
    echo_json(items) if as_json else out().print(_token_table(items))


@token_app.command("rotate")
def token_rotate(ctx: typer.Context, name: NameArg, as_json: JsonFlag = False) -> None:
    """A new text for a token (the old one stops working at once)."""
    with connect(ctx) as client:
        made = client.rotate_token(name)
    if as_json:
        echo_json(made)
    else:
        out().print(Text(f"token {made['name']}: {made['token']}  (shown once)"),
                    soft_wrap=True)


@token_app.command("revoke")
def token_revoke(ctx: typer.Context, name: NameArg) -> None:
    """Revoke a named token."""
    with connect(ctx) as client:
        client.revoke_token(name)
    out().print(Text(f"revoked {name}"))


# -- tenants ----------------------------------------------------------------------------


def _tenant_table(items: list[dict[str, Any]]) -> Table:
    table = Table(show_edge=False, pad_edge=False)
    for name in ("TENANT", "SOURCE", "QUOTAS", "DESCRIPTION"):
        table.add_column(name, no_wrap=name == "TENANT")
    for item in items:
        usage = item.get("usage") or {}
        shown = ", ".join(
            f"{k} {usage[k]}/{v:g}" if k in usage else f"{k} {v:g}"
            for k, v in (item.get("quotas") or {}).items()) or "none"
        table.add_row(Text(item["name"]), Text(item["source"]), Text(shown),
                      Text(item.get("description") or ""))
    return table


QuotaOption = Annotated[list[str] | None, typer.Option(
    "--quota", "-q", metavar="NAME=N",
    help=f"A quota ({', '.join(QUOTAS)}; =none lifts it). Repeat.", show_default=False)]


@tenant_app.command("create")
def tenant_create(
    ctx: typer.Context, name: NameArg, quota: QuotaOption = None,
    description: Annotated[str | None, typer.Option("--description", "-d",
                                                    show_default=False)] = None,
    as_json: JsonFlag = False,
) -> None:
    """Make a tenant (admins).

    [bold]Examples[/]
      $ agentd tenant create acme -q agents=20 -q sessions=10000 -q spend_usd_per_day=50
    """
    with connect(ctx) as client:
        made = client.create_tenant(name, quotas=quotas(quota or []),
                                    description=description)
    echo_json(made) if as_json else out().print(_tenant_table([made]))


@tenant_app.command("list")
def tenant_list(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """The tenants you may see."""
    with connect(ctx) as client:
        items = client.list_tenants()
    echo_json(items) if as_json else out().print(_tenant_table(items))


@tenant_app.command("show")
def tenant_show(ctx: typer.Context, name: NameArg, as_json: JsonFlag = False) -> None:
    """A tenant's quotas and what it holds of each."""
    with connect(ctx) as client:
        item = client.get_tenant(name)
    echo_json(item) if as_json else out().print(_tenant_table([item]))


@tenant_app.command("set")
def tenant_set(
    ctx: typer.Context, name: NameArg, quota: QuotaOption = None,
    description: Annotated[str | None, typer.Option("--description", "-d",
                                                    show_default=False)] = None,
    as_json: JsonFlag = False,
) -> None:
    """Change a tenant's quotas (the ones given) or description (admins)."""
    if not quota and description is None:
        fail("nothing to change: give --quota NAME=N or --description", 2)
    with connect(ctx) as client:
        item = client.update_tenant(name, quotas=quotas(quota) if quota else None,
                                    description=description)
    echo_json(item) if as_json else out().print(_tenant_table([item]))


@tenant_app.command("delete")
def tenant_delete(ctx: typer.Context, name: NameArg) -> None:
    """Delete a tenant with no agents and no tokens left (admins)."""
    with connect(ctx) as client:
        client.delete_tenant(name)
    out().print(Text(f"deleted tenant {name}"))


# -- the audit log ----------------------------------------------------------------------


@audit_app.command("list")
def audit_list(
    ctx: typer.Context,
    actor: Annotated[str | None, typer.Option("--actor", help="A token's name.",
                                              show_default=False)] = None,
    action: Annotated[str | None, typer.Option(
        "--action", help="An action (token.create) or family (token.*).",
        show_default=False)] = None,
    denied: Annotated[bool, typer.Option("--denied", help="Refusals only.")] = False,
    after: Annotated[int, typer.Option("--after", min=0, help="Rows after this seq.")] = 0,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, max=100_000)] = 100,
    as_json: JsonFlag = False,
) -> None:
    """The audit log's rows, oldest first (admins)."""
    rows: list[dict[str, Any]] = []
    with connect(ctx) as client:
        for row in client.audit(after=after, actor=actor, action=action,
                                outcome="denied" if denied else None,
                                limit=min(limit, 1000)):
            rows.append(row)
            if len(rows) >= limit:
                break
    if as_json:
        echo_json(rows)
        return
    table = Table(show_edge=False, pad_edge=False)
    for name in ("SEQ", "AT (UTC)", "ACTOR", "ACTION", "RESOURCE", "OUTCOME", "REASON"):
        table.add_column(name, no_wrap=name in ("SEQ", "AT (UTC)", "ACTION", "OUTCOME"),
                         overflow="fold")
    for row in rows:
        table.add_row(Text(str(row["seq"])), Text(row["at"][:19].replace("T", " ")),
                      Text(f"{row['actor'] or '-'} ({row['role'] or '-'})"),
                      Text(row["action"]), Text(row["resource"]), Text(row["outcome"]),
                      Text(row["reason"]))
    out().print(table if rows else "no rows")


@audit_app.command("verify")
def audit_verify(
    ctx: typer.Context,
    head: Annotated[str | None, typer.Option(
        "--head", metavar="SEQ:HASH", help="A head noted earlier (catches rows cut off "
                                           "the end).", show_default=False)] = None,
    as_json: JsonFlag = False,
) -> None:
    """Check the audit log's hash chain; exit 1 if a row was edited or removed."""
    with connect(ctx) as client:
        result = client.verify_audit(head)
    if as_json:
        echo_json(result)
    elif result["ok"]:
        out().print(Text(f"ok: {result['rows']} rows; head "
                         f"{result['head']['seq']}:{result['head']['hash']}"),
                    soft_wrap=True)
    else:
        problem = result["problem"]
        out().print(Text(f"BROKEN at row {problem['seq']}: {problem['reason']} "
                         f"({result['rows']} rows verified before it)"), soft_wrap=True)
    if not result["ok"]:
        raise typer.Exit(1)
