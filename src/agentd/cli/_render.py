"""Turning agents, sessions, runs and events into rich output."""

from __future__ import annotations

import json
from typing import Any

from rich.table import Table
from rich.text import Text

STATE_STYLES = {
    "created": "cyan",
    "running": "green",
    "paused": "yellow",
    "stopped": "dim",
    "error": "red",
}

RUN_STYLES = {
    "queued": "cyan",
    "running": "green",
    "completed": "green",
    "failed": "red",
    "cancelled": "yellow",
    "interrupted": "yellow",
}

#: Event kinds `history` leaves out unless --verbose.
QUIET_KINDS = frozenset({"run.queued", "run.started", "run.completed", "tool.started"})


def short(value: Any, limit: int = 300) -> str:
    """A one-line preview of a value (JSON for structures)."""
    if isinstance(value, str):
        text = value
    else:
        try:
            text = json.dumps(value, ensure_ascii=False, separators=(", ", ": "))
        except (TypeError, ValueError):
            text = repr(value)
    text = " ".join(text.split()) if "\n" in text else text
    return text if len(text) <= limit else text[: limit - 1] + "…"


def when(value: Any) -> str:
    """An ISO timestamp, shortened to seconds for tables."""
    if not isinstance(value, str) or not value:
        return ""
    return value.replace("T", " ")[:19]


def state_text(state: Any) -> Text:
    label = str(state or "?")
    return Text(label, style=STATE_STYLES.get(label, ""))


def status_text(status: Any) -> Text:
    label = str(status or "?")
    return Text(label, style=RUN_STYLES.get(label, ""))


def money(value: Any) -> str:
    """``$0.0123``: dollars with cents, and up to 6 decimals when they matter."""
    amount = float(value or 0)
    text = f"{amount:,.6f}".rstrip("0")
    whole, _, cents = text.partition(".")
    return f"${whole}.{cents.ljust(2, '0')}"


def usage_text(usage: Any) -> str:
    """``12 in, 34 out, 0 cached tokens, $0.0012``: the input counts the cached tokens
    (and ``N cache-write`` ones, when some were written to the provider's prompt cache);
    the cost at list price when the catalog knows the model; ``-`` when the run
    reported none (yet)."""
    if not isinstance(usage, dict) or not usage:
        return "-"
    parts = [
        f"{usage[key]} {label}"
        for key, label in (
            ("input_tokens", "in"),
            ("output_tokens", "out"),
            ("cached_tokens", "cached"),
            ("cache_write_tokens", "cache-write"),
        )
        if usage.get(key) is not None
    ]
    if not parts:
        return short(usage)
    text = ", ".join(parts) + " tokens"
    return f"{text}, {money(usage['cost_usd'])}" if "cost_usd" in usage else text


def agents_table(agents: list[dict[str, Any]]) -> Table:
    table = Table(title=None, show_edge=False, pad_edge=False)
    table.add_column("NAME", style="bold", no_wrap=True)
    table.add_column("STATE", no_wrap=True)
    table.add_column("MODEL")
    table.add_column("TOOLS")
    table.add_column("UPDATED", style="dim", no_wrap=True)
    for agent in agents:
        table.add_row(
            Text(str(agent.get("name", ""))),
            state_text(agent.get("state")),
            Text(str(agent.get("model") or "")),
            Text(", ".join(str(t) for t in agent.get("tools") or []) or "-"),
            when(agent.get("updated_at")),
        )
    return table


def agent_details(agent: dict[str, Any]) -> Table:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    grid.add_row("name", Text(str(agent.get("name", ""))))
    grid.add_row("state", state_text(agent.get("state")))
    grid.add_row("model", Text(str(agent.get("model") or "")))
    grid.add_row("tools", Text(", ".join(str(t) for t in agent.get("tools") or []) or "-"))
    instructions = agent.get("instructions") or ""
    grid.add_row("instructions", Text(str(instructions) or "-"))
    settings = agent.get("settings") or {}
    grid.add_row("settings", Text(short(settings, 500) if settings else "-"))
    problems = agent.get("settings_errors") or []
    if problems:
        # Stored by an older version or by hand: runs fail until a PATCH fixes them.
        lines = Text("not valid in this version (runs fail until fixed):\n", style="red")
        for problem in problems:
            lines.append(f"  {problem.get('field', 'settings')}: "
                         f"{problem.get('message', '')}\n")
        lines.rstrip()
        grid.add_row(Text("settings errors", style="bold red"), lines)
    grid.add_row("created", Text(when(agent.get("created_at"))))
    grid.add_row("updated", Text(when(agent.get("updated_at"))))
    return grid


def sessions_table(sessions: list[dict[str, Any]]) -> Table:
    table = Table(show_edge=False, pad_edge=False)
    table.add_column("SESSION", style="bold")
    table.add_column("EVENTS", justify="right")
    table.add_column("CREATED", style="dim", no_wrap=True)
    table.add_column("UPDATED", style="dim", no_wrap=True)
    for session in sessions:
        table.add_row(
            Text(str(session.get("key", ""))),
            str(session.get("last_seq", "")),
            when(session.get("created_at")),
            when(session.get("updated_at")),
        )
    return table


def checkpoints_table(checkpoints: list[dict[str, Any]]) -> Table:
    table = Table(show_edge=False, pad_edge=False)
    table.add_column("ID", style="bold", no_wrap=True)
    table.add_column("SEQ", justify="right")
    table.add_column("KIND", no_wrap=True)
    table.add_column("NAME")
    table.add_column("CREATED", style="dim", no_wrap=True)
    for checkpoint in checkpoints:
        table.add_row(
            Text(str(checkpoint.get("id", ""))),
            str(checkpoint.get("seq", "")),
            Text(str(checkpoint.get("kind") or "")),
            Text(str(checkpoint.get("name") or "-")),
            when(checkpoint.get("created_at")),
        )
    return table


def checkpoint_line(checkpoint: dict[str, Any]) -> str:
    """``checkpoint c_... at seq 7, named before-refactor`` (plain text, no markup)."""
    line = f"checkpoint {checkpoint.get('id', '?')} at seq {checkpoint.get('seq', '?')}"
    name = checkpoint.get("name")
    return f"{line}, named {name}" if name else line


def restored_line(data: dict[str, Any]) -> str:
    """What a ``session.restored`` event's data says, in words (plain text)."""
    line = f"restored to seq {data.get('to_seq', '?')}"
    if data.get("checkpoint"):
        line += f" (checkpoint {data['checkpoint']})"
    archived = data.get("archived")
    if isinstance(archived, dict):
        first, last = archived.get("from_seq"), archived.get("to_seq")
        if isinstance(first, int) and isinstance(last, int) and first <= last:
            span = f"{first}" if first == last else f"{first}-{last}"
            line += f"; events {span} kept in the log as its archive"
    return line


def compacted_line(data: dict[str, Any]) -> str:
    """What a ``session.compacted`` event's data (or a compaction's result) says, in
    words (plain text)."""
    first, last = data.get("from_seq", "?"), data.get("to_seq", "?")
    what = ("tool results cleared" if data.get("strategy") == "clear_tool_results"
            else "summarised")
    count = data.get("messages")
    line = f"events {first}-{last} {what}" + (f" ({count} messages)"
                                               if isinstance(count, int) else "")
    before, after = data.get("estimated_tokens_before"), data.get("estimated_tokens_after")
    if isinstance(before, int) and isinstance(after, int):
        line += f"; about {before} -> {after} tokens"
    return line


def run_details(run: dict[str, Any]) -> Table:
    """A run's fields, then its whole output or its error."""
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column()
    grid.add_row("run", Text(str(run.get("id", ""))))
    grid.add_row("status", status_text(run.get("status")))
    grid.add_row("agent", Text(str(run.get("agent", ""))))
    grid.add_row("session", Text(str(run.get("session", ""))))
    grid.add_row("steps", Text(str(run.get("steps", 0))))
    if run.get("node"):
        grid.add_row("node", Text(str(run["node"]), style="dim"))
    grid.add_row("usage", Text(usage_text(run.get("usage"))))
    for label, key in (
        ("created", "created_at"),
        ("started", "started_at"),
        ("finished", "finished_at"),
    ):
        if run.get(key):
            grid.add_row(label, Text(when(run.get(key)), style="dim"))
    grid.add_row("input", Text(short(run.get("input", ""))))
    error = run.get("error")
    if error:
        details = error.get("details") if isinstance(error, dict) else None
        line = error_line(error_of(error))
        if isinstance(error, dict) and error.get("retryable"):
            line += " (retryable)"
        grid.add_row("error", Text(line, style="red"))
        if details:
            grid.add_row("details", Text(short(details), style="red"))
    if run.get("output") is not None:
        grid.add_row("output", Text(str(run["output"])))
    return grid


def error_of(payload: Any) -> dict[str, Any]:
    """The ``{code, message, retryable}`` inside a run, an event or an SSE error frame."""
    if not isinstance(payload, dict):
        return {"code": "error", "message": short(payload)}
    for candidate in (payload.get("error"), (payload.get("data") or {}).get("error")):
        if isinstance(candidate, dict):
            return candidate
    if "message" in payload:
        return payload
    return {"code": "error", "message": short(payload)}


def error_line(error: dict[str, Any]) -> str:
    message = str(error.get("message") or "unknown error")
    code = error.get("code")
    return f"{message} [{code}]" if code else message


def _seconds(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return ""
    return f"{value:.0f} s" if value >= 10 else f"{value:.1f} s".replace(".0 s", " s")


def waiting_line(data: Any) -> str:
    """What a ``waiting`` frame says the run waits for, in words (plain text), e.g.
    ``waiting: openai:gpt-4.1-mini unreachable (connection refused); retrying in 4 s``."""
    if not isinstance(data, dict):
        return "waiting"
    reason = str(data.get("reason") or "")
    model = str(data.get("model") or "the model")
    cause = data.get("cause")
    because = f" ({cause})" if cause else ""
    retry = _seconds(data.get("retry_in_s"))
    if reason == "queued":
        line = f"queued behind another run in this session{because}"
    elif reason == "model_outage":
        line = f"{model} unreachable{because}"
    elif reason == "model_retry":
        line = f"{model} failed{because}"
    elif reason == "rate_limit":
        line = f"{model} rate limit{because}"
    elif reason == "approval":
        line = f"approval{because}; see agentd approvals"
    else:
        line = f"{reason or 'something'}{because}"
    if retry:
        line += f"; retrying in {retry}"
    return f"waiting: {line}"


def failure_line(error: dict[str, Any]) -> str:
    """A run's error in words, naming the model and the cause when the error says."""
    line = error_line(error)
    details = error.get("details") if isinstance(error.get("details"), dict) else {}
    assert isinstance(details, dict)
    model, cause = details.get("model"), details.get("cause")
    extra = [str(x) for x in (model, cause) if x and str(x) not in line]
    return f"{line} ({'; '.join(extra)})" if extra else line


def tool_call_line(name: Any, arguments: Any) -> Text:
    args = "" if arguments in (None, {}, "") else short(arguments, 200)
    return Text(f"  → {name}({args})", style="dim")


def tool_result_line(data: dict[str, Any], limit: int = 300) -> Text:
    name = data.get("name", "tool")
    output = short(data.get("output"), limit)
    if data.get("is_error"):
        return Text(f"  ← {name} failed: {output}", style="red")
    return Text(f"  ← {name}: {output}", style="dim")


def run_header(number: int, run_id: str, *, again: bool = False) -> Text:
    """The line `history` shows when the run changes: ``── run 2 · r_... ──``."""
    label = f"run {number}{', continued' if again else ''} · {run_id}"
    return Text(f"── {label} ──", style="dim")


def part_lines(parts: Any) -> list[Text]:
    """A line per image or file a message or a tool result carries: its type, media
    type, name, pixels or pages, size and blob (the first 12 hex digits of its
    SHA-256: ``GET .../blobs/{sha256}`` reads it)."""
    lines: list[Text] = []
    for part in parts if isinstance(parts, list) else ():
        if not isinstance(part, dict) or part.get("type") not in ("image", "file"):
            continue
        words = [str(part["type"]), str(part.get("media_type", "?"))]
        if part.get("name"):
            words.append(str(part["name"]))
        if part.get("width") and part.get("height"):
            words.append(f"{part['width']}x{part['height']}")
        if part.get("pages"):
            words.append(f"{part['pages']} pages")
        words.append(_size(part.get("size")))
        words.append(f"blob {str(part.get('blob', ''))[:12]}")
        lines.append(Text(f"  + {words[0]} {words[1]}, " + ", ".join(words[2:]),
                          style="magenta"))
    return lines


def _size(value: Any) -> str:
    size = value if isinstance(value, int) else 0
    if size < 1024:
        return f"{size} B"
    if size < 1 << 20:
        return f"{size / 1024:.1f} KB"
    return f"{size / (1 << 20):.1f} MB"


# complexity: one branch per event kind `history` shows (the event catalogue); each is
# two or three lines.
def event_lines(event: dict[str, Any], *, verbose: bool = False, limit: int = 300) -> list[Text]:
    """How `history` shows one Event; an empty list hides it."""
    kind = str(event.get("kind", ""))
    data = event.get("data") or {}
    if not isinstance(data, dict):
        data = {"value": data}
    prefix = f"#{event.get('seq')} " if verbose else ""
    if kind == "message.user":
        line = Text(f"{prefix}user: ", style="bold cyan")
        line.append(str(data.get("content", "")), style="")
        return [line, *part_lines(data.get("parts"))]
    if kind == "message.added":  # added by a client without a run (update_state)
        user = data.get("role") == "user"
        line = Text(f"{prefix}{'user' if user else 'assistant'} (added): ",
                    style="bold cyan" if user else "bold green")
        line.append(str(data.get("content", "")), style="")
        return [line]
    if kind == "message.assistant":
        lines: list[Text] = []
        text = data.get("text") or ""
        if text or not data.get("tool_calls"):
            line = Text(f"{prefix}assistant: ", style="bold green")
            line.append(str(text), style="")
            lines.append(line)
        for call in data.get("tool_calls") or []:
            if isinstance(call, dict):
                lines.append(tool_call_line(call.get("name"), call.get("arguments")))
        return lines
    if kind == "tool.finished":
        return [tool_result_line(data, limit), *part_lines(data.get("parts"))]
    if kind == "run.failed":
        return [Text(f"{prefix}run failed: {error_line(error_of(data))}", style="red")]
    if kind in ("run.cancelled", "run.interrupted"):
        reason = data.get("reason")
        label = kind.removeprefix("run.")
        return [Text(f"{prefix}run {label}" + (f": {reason}" if reason else ""), style="yellow")]
    if kind == "error":
        return [Text(f"{prefix}error: {error_line(error_of(data))}", style="red")]
    if kind == "session.restored":
        return [Text(f"{prefix}· session {restored_line(data)}", style="yellow")]
    if kind == "session.compacted":
        return [Text(f"{prefix}· compacted: {compacted_line(data)}", style="yellow")]
    if kind == "session.forked":
        source = f"{data.get('agent', '?')}/{data.get('session', '?')}"
        return [Text(f"{prefix}· forked from {source} at seq {data.get('seq', '?')}",
                     style="dim")]
    if kind == "checkpoint":
        label = f"checkpoint {data.get('id', '?')}"
        if data.get("name"):
            label += f" named {data['name']}"
        if data.get("kind") and data.get("kind") != "manual":
            label += f" ({data['kind']})"
        return [Text(f"{prefix}· {label}", style="dim")]
    if kind in QUIET_KINDS and not verbose:
        return []
    detail = f" {short(data, limit)}" if data else ""
    run = f" {event.get('run_id')}" if verbose and event.get("run_id") else ""
    return [Text(f"{prefix}· {kind}{run}{detail}", style="dim")]
