"""``agentd top``: the daemon live, refreshing in place: runs under way and what each
waits for, the scheduler's lanes, today's spend.

One frame is four reads: ``/health`` (node, uptime), ``/v1/overview`` (counts, today's
usage, what the runs under way on this node are doing), ``/v1/runs`` (every active
run, every node's) and ``/v1/kernel`` (lanes and breakers). Each is scoped by the
token as the API scopes it, so a scoped token sees its own agents only.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any

import typer
from rich.console import Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from agentd.cli._common import connect, echo_json, out
from agentd.cli._render import money, short, status_text
from agentd.client import Client, ClientError

#: How the live view waits between refreshes. A module attribute so a test can stand in
#: for it without patching :func:`time.sleep` for the whole process: the process's other
#: threads (an in-process daemon's, a library's) sleep too, and a stand-in that raises
#: KeyboardInterrupt would land in one of them (CI saw the test hang so).
wait: Callable[[float], None] = time.sleep

__all__ = ["snapshot", "top"]

#: The active runs a frame reads (newest first); the rest are counted, not listed.
RUNS_MAX = 200
_ACTIVE = ("queued", "running", "waiting_approval")
#: A breaker's states, worst last.
_BREAKER_ORDER = ("closed", "half_open", "open")


def _seconds_between(since: Any, at: Any) -> float | None:
    """Seconds from ``since`` to ``at`` (ISO 8601 strings), or None."""
    try:
        start = datetime.fromisoformat(str(since).replace("Z", "+00:00"))
        end = datetime.fromisoformat(str(at).replace("Z", "+00:00"))
    except ValueError:
        return None
    return max(0.0, (end - start).total_seconds())


def _derived(run: dict[str, Any], node: str) -> dict[str, Any]:
    """What a run the overview of this node does not list waits for, from its row."""
    status = run.get("status")
    if status == "queued":
        return {"doing": "queued", "detail": "", "since": run.get("created_at")}
    if run.get("node") and run.get("node") != node:
        return {"doing": "other_node", "detail": str(run.get("node")),
                "since": run.get("started_at")}
    if status == "waiting_approval":
        return {"doing": "approval", "detail": "", "since": run.get("started_at")}
    return {"doing": "working", "detail": "", "since": run.get("started_at")}


def _breaker(lane: str, breakers: dict[str, Any]) -> dict[str, Any] | None:
    """The worst breaker of a lane's provider (``openai:gpt-x`` -> ``openai``,
    ``openai@eu``), or None when its provider has none yet."""
    provider = lane.partition(":")[0]
    found = [b for key, b in breakers.items() if key.partition("@")[0] == provider]
    if not found:
        return None
    worst: dict[str, Any] = max(found, key=lambda b: (
        _BREAKER_ORDER.index(b["state"]) if b.get("state") in _BREAKER_ORDER else 0))
    return worst


def snapshot(client: Client, agent: str | None = None) -> dict[str, Any]:
    """One frame's data (what ``--json`` prints): the daemon, its counts and today's
    usage, the busy agents with their active runs and what each waits for, the lanes."""
    health = client.health()
    overview = client.overview()
    page = client.list_runs(agent=agent, status=list(_ACTIVE), limit=RUNS_MAX)
    kernel = client.kernel()
    node = str(health.get("node", ""))
    busy = {b["run"]: b for b in overview.get("busy", [])
            if agent is None or b.get("agent") == agent}
    runs: list[dict[str, Any]] = []
    for run in page.get("runs", []):
        here = busy.pop(str(run.get("id")), None)
        runs.append({"run": run.get("id"), "agent": run.get("agent"),
                     "session": run.get("session"), "status": run.get("status"),
                     "node": run.get("node"),
                     "steps": here["steps"] if here else run.get("steps"),
                     "created_at": run.get("created_at"), "started_at": run.get("started_at"),
                     "waiting_for": here["waiting_for"] if here else _derived(run, node)})
    for here in busy.values():  # under way here but past the listing's page
        runs.append({"run": here["run"], "agent": here["agent"], "session": here["session"],
                     "status": here["status"], "node": node, "steps": here["steps"],
                     "created_at": None, "started_at": here["started_at"],
                     "waiting_for": here["waiting_for"]})
    by_agent: dict[str, list[dict[str, Any]]] = {}
    for run in runs:
        by_agent.setdefault(str(run["agent"]), []).append(run)
    agents: list[dict[str, Any]] = [
        {"agent": name, "runs": sorted(rs, key=lambda r: str(r["created_at"] or ""))}
        for name, rs in sorted(by_agent.items(), key=lambda kv: (-len(kv[1]), kv[0]))]
    breakers: dict[str, Any] = kernel.get("breakers") or {}
    lanes = [{"lane": name, "in_flight": m.get("in_flight", 0), "queued": m.get("queued", 0),
              "queued_by_class": m.get("queued_by_class", {}),
              "wait_ms": m.get("wait_ms", {}), "paused_for_s": m.get("paused_for_s", 0.0),
              "breaker": _breaker(name, breakers)}
             for name, m in sorted((kernel.get("scheduler") or {}).get("lanes", {}).items())]
    node_counts = overview.get("node") or {}
    return {
        "at": overview.get("at"), "node": node, "version": health.get("version"),
        "uptime_s": health.get("uptime_s"), "runs": overview.get("runs") or {},
        "approvals_waiting": overview.get("approvals_waiting", 0),
        "model_calls_queued": node_counts.get("model_calls_queued", 0),
        "usage_today": overview.get("usage_today") or {},
        "agents": agents, "more_runs": bool(page.get("next_cursor")), "lanes": lanes,
    }


# -- the frame --------------------------------------------------------------------------


def _age(seconds: float | None) -> str:
    if seconds is None:
        return ""
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def _doing_text(waiting: dict[str, Any]) -> Text:
    """What a run waits for, in words: run content (a tool's name, a lane, a node) is
    a Text, never markup."""
    doing, detail = str(waiting.get("doing", "")), str(waiting.get("detail") or "")
    words = {
        "model_queue": ("model queue, lane ", "yellow"),
        "model": ("model ", "cyan"),
        "model_retry": ("retrying ", "yellow"),
        "rate_limit": ("rate limited: ", "yellow"),
        "model_outage": ("outage: ", "red"),
        "tool": ("tool ", "cyan"),
        "approval": ("approval of ", "magenta"),
        "queued": ("queued behind its session's run", "dim"),
        "other_node": ("on node ", "dim"),
        "working": ("working", ""),
    }
    lead, style = words.get(doing, (doing, ""))
    if doing == "approval" and not detail:
        lead = "approval"
    text = Text(lead, style=style)
    if detail and doing not in ("queued", "working"):
        text.append(short(detail, 60), style="bold")
    return text


def _header(data: dict[str, Any]) -> Text:
    runs, usage = data["runs"], data["usage_today"]
    active = int(runs.get("running", 0)) + int(runs.get("waiting_approval", 0))
    text = Text("agentd top", style="bold")
    text.append(f"  node {short(str(data['node']), 40)}  up {_age(data['uptime_s'])}"
                f"  v{data['version']}  {data['at'] or ''}\n", style="dim")
    text.append(f"runs: {active} active ({runs.get('waiting_approval', 0)} waiting approval), "
                f"{runs.get('queued', 0)} queued   model calls queued: "
                f"{data['model_calls_queued']}\n")
    text.append(f"spend today ({usage.get('day', '')}): {money(usage.get('cost_usd'))}, "
                f"{int(usage.get('calls') or 0):,} calls, "
                f"{int(usage.get('input_tokens') or 0):,} in / "
                f"{int(usage.get('output_tokens') or 0):,} out tokens")
    return text


def _runs_table(data: dict[str, Any], width: int) -> RenderableType:
    """One line per run, grouped by agent. The run id and status are never cut (an id
    is to be copied into `agentd run`); under 120 columns the session and steps give
    way, under 100 the status (what the run is doing says it)."""
    groups: list[dict[str, Any]] = data["agents"]
    if not groups:
        return Text("no runs under way", style="dim")
    runs = [run for group in groups for run in group["runs"]]
    wide = width >= 120
    table = Table(show_edge=False, pad_edge=False, title="busy agents", title_justify="left",
                  title_style="bold")
    table.add_column("AGENT", style="bold", no_wrap=True, overflow="ellipsis",
                     max_width=24 if wide else 12)
    table.add_column("RUN", no_wrap=True,
                     min_width=max(len(str(r["run"])) for r in runs))
    if wide:
        table.add_column("SESSION", no_wrap=True, overflow="ellipsis", max_width=20)
    if width >= 100:
        table.add_column("STATUS", no_wrap=True,
                         min_width=max(len(str(r["status"])) for r in runs))
    if wide:
        table.add_column("STEPS", justify="right", no_wrap=True)
    table.add_column("FOR", justify="right", no_wrap=True)
    table.add_column("DOING / WAITING FOR", no_wrap=True, overflow="ellipsis", min_width=16)
    for group in groups:
        for i, run in enumerate(group["runs"]):
            waiting = run["waiting_for"]
            cells: list[RenderableType] = [
                Text(str(group["agent"])) if i == 0 else "", Text(str(run["run"]))]
            if wide:
                cells.append(Text(str(run["session"] or "")))
            if width >= 100:
                cells.append(status_text(run["status"]))
            if wide:
                cells.append(str(run["steps"] if run["steps"] is not None else ""))
            cells += [_age(_seconds_between(waiting.get("since"), data["at"])),
                      _doing_text(waiting)]
            table.add_row(*cells)
    return table


def _lanes_table(data: dict[str, Any]) -> RenderableType:
    if not data["lanes"]:
        return Text("no model calls yet", style="dim")
    table = Table(show_edge=False, pad_edge=False, title="lanes", title_justify="left",
                  title_style="bold")
    for name in ("LANE", "IN FLIGHT", "QUEUED", "WAIT P50", "WAIT MAX", "PAUSED",
                 "BREAKER"):
        table.add_column(name, no_wrap=True, justify="left" if name in (
            "LANE", "BREAKER") else "right")
    for lane in data["lanes"]:
        waits, breaker = lane["wait_ms"] or {}, lane["breaker"]
        paused = float(lane["paused_for_s"] or 0)
        state = "-" if breaker is None else str(breaker.get("state", "?"))
        table.add_row(
            Text(str(lane["lane"])), str(lane["in_flight"]), str(lane["queued"]),
            f"{float(waits.get('p50') or 0):.0f} ms", f"{float(waits.get('max') or 0):.0f} ms",
            Text(f"{paused:.1f}s", style="yellow") if paused else "-",
            Text(state, style={"open": "red", "half_open": "yellow"}.get(state, "")))
    return table


def frame(data: dict[str, Any], width: int = 120) -> Group:
    """One screen of ``top`` for a terminal ``width`` columns wide."""
    parts: list[RenderableType] = [_header(data), Text(""), _runs_table(data, width)]
    if data["more_runs"]:
        parts.append(Text(f"(the {RUNS_MAX} newest active runs; agentd runs --status "
                          "running for the rest)", style="dim"))
    parts += [Text(""), _lanes_table(data)]
    return Group(*parts)


def top(
    ctx: typer.Context,
    agent: Annotated[str | None, typer.Option(
        "--agent", "-a", metavar="NAME", help="Only this agent's runs.",
        show_default=False)] = None,
    interval: Annotated[float, typer.Option(
        "--interval", "-i", metavar="S", min=0.5, help="Seconds between refreshes.")] = 2.0,
    once: Annotated[bool, typer.Option(
        "--once", help="Print one frame and exit.")] = False,
    as_json: Annotated[bool, typer.Option(
        "--json", help="Print the data of one frame as JSON and exit.")] = False,
) -> None:
    """Watch the daemon live: runs under way and what each waits for, lanes, spend.

    Refreshes in place until Ctrl-C. Each run says what it is doing now: a model
    call (or its turn in a lane's queue, a retry, a rate limit, an outage), tool
    calls, a person's approval, or its place behind its session's run. Lanes show
    calls in flight and queued, queue waits (p50 and max of the last 1,024 grants),
    pauses and the provider's breaker. A scoped token sees its own agents only.

    [bold]Examples[/]
      $ agentd top
      $ agentd top --agent demo --interval 5
      $ agentd top --once
      $ agentd top --json | jq '.agents[].runs[].waiting_for'
    """
    with connect(ctx, timeout=30.0) as client:
        if as_json or once:
            data = snapshot(client, agent)
            if as_json:
                echo_json(data)
            else:
                console = out()
                console.print(frame(data, console.width))
            return
        _live(client, agent, interval)


def _live(client: Client, agent: str | None, interval: float) -> None:
    """Refresh in place until Ctrl-C; a daemon that stops answering is said on the
    screen (the last frame stays under it) and asked again at the next refresh."""
    console = out()
    last = frame(snapshot(client, agent), console.width)  # a refused token, ...: exit

    def render() -> Group:
        nonlocal last
        try:
            last = frame(snapshot(client, agent), console.width)
            return last
        except ClientError as exc:
            return Group(Text(f"cannot read the daemon: {exc}", style="red"), last)

    try:
        with Live(last, console=console, auto_refresh=False,
                  vertical_overflow="crop") as live:
            while True:
                wait(interval)
                live.update(render(), refresh=True)
    except KeyboardInterrupt:
        return
