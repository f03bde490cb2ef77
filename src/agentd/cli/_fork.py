"""``agentd fork RUN``: run a finished run again from one of its steps on another model,
instructions or settings, and show where it went another way (the command is the
session fork's too: :func:`agentd.cli._checkpoints.fork` decides which is meant)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from agentd.cli._common import connect, echo_json, fail, out
from agentd.cli._render import short, status_text, usage_text

__all__ = ["RUN_ID", "candidate_options", "fork_report", "fork_run", "json_object"]

#: What a candidate without a model of its own runs on.
_AGENTS = "the agent's model"

#: What a run's id looks like (``agentd fork RUN`` against ``agentd fork AGENT ...``).
RUN_ID = re.compile(r"r_[0-9a-f]{8,64}")
ModelOption = Annotated[str | None, typer.Option(
    "--model", "-m", help="The model to run on (provider:model; default: the agent's).",
    show_default=False)]
InstructionsOption = Annotated[Path | None, typer.Option(
    "--instructions", metavar="FILE", help="Instructions in place of the agent's, read "
                                           "from FILE.", show_default=False,
    dir_okay=False)]
SettingsOption = Annotated[str | None, typer.Option(
    "--settings", metavar="JSON", help="Settings over the agent's, as a JSON object "
                                       "(e.g. '{\"temperature\": 0}').",
    show_default=False)]
ToolsOption = Annotated[str, typer.Option(
    "--tools", help="recorded: calls answered from the original's same calls; live: "
                    "tools run for real, in a copy of the workspace at the step.")]


def candidate_options(model: str | None, instructions: Path | None, settings: str | None,
                      tools: str) -> dict[str, Any]:
    """The candidate of ``agentd fork`` and ``agentd eval run``, read and checked."""
    if tools not in ("recorded", "live"):
        fail(f"--tools must be recorded or live, not {tools!r}")
    body: dict[str, Any] = {"model": model, "tools": tools}
    if instructions is not None:
        try:
            body["instructions"] = instructions.read_text()
        except OSError as exc:
            fail(f"{instructions}: {exc.strerror or exc}")
    if settings is not None:
        body["settings"] = json_object(settings, "--settings")
    return body


def json_object(text: str, option: str) -> dict[str, Any]:
    """``text`` (an option's value) as a JSON object, or a CLI error naming ``option``."""
    try:
        value = json.loads(text)
    except ValueError as exc:
        fail(f"{option} is not JSON: {exc}")
    if not isinstance(value, dict):
        fail(f"{option} must be a JSON object")
    return value


def fork_run(ctx: typer.Context, run_id: str, *, from_step: int, model: str | None,
             instructions: Path | None, settings: str | None, tools: str, wait: bool,
             as_json: bool) -> None:
    """``agentd fork RUN``: the fork's report, for a person or as JSON."""
    body = candidate_options(model, instructions, settings, tools)
    with connect(ctx, timeout=3600.0) as client:
        report = client.fork_run(run_id, from_step=from_step, model=body.get("model"),
                                 instructions=body.get("instructions"),
                                 settings=body.get("settings"), tools=tools, wait=wait)
    if as_json:
        echo_json(report)
    else:
        fork_report(report)


def _calls(calls: list[dict[str, Any]]) -> str:
    return ", ".join(f"{c['name']} {short(c.get('arguments') or {}, 80)}" for c in calls)


def fork_report(report: dict[str, Any]) -> None:
    """A fork's report for a person: what it ran on, where it diverged, side by side."""
    original, mine = report["original"], report["fork"]
    console = out()
    console.print(Text.assemble(
        f"fork {report['fork_id']} of run {original['run_id']} from step "
        f"{report['from_step']} on {report.get('model') or _AGENTS} (tools "
        f"{report['tools']}): ", status_text(report["status"]),
        f"; session {report['session']}"), soft_wrap=True)
    divergence = report.get("first_divergence")
    if report["status"] not in ("completed", "failed", "cancelled", "interrupted"):
        console.print(Text(f"still {report['status']}: agentd fork shows the report once "
                           "it has ended (GET /v1/forks/ID)", style="dim"))
    elif divergence is None:
        console.print("decided the same as the original throughout")
    else:
        console.print(Text(f"first divergence at step {divergence.get('step')}: expected "
                           f"{short(divergence.get('expected'), 160)}, got "
                           f"{short(divergence.get('got'), 160)}"), soft_wrap=True)
    for label, key in (("tool calls added", "tool_calls_added"),
                       ("tool calls removed", "tool_calls_removed")):
        if report.get(key):
            console.print(Text(f"{label}: {_calls(report[key])}"), soft_wrap=True)
    if report.get("unrecorded_calls"):
        names = ", ".join(str(c.get("name")) for c in report["unrecorded_calls"])
        console.print(Text(f"not in the recording (failed as tool errors): {names}",
                           style="yellow"), soft_wrap=True)
    table = Table(show_edge=False, pad_edge=False)
    table.add_column("")
    table.add_column("ORIGINAL", overflow="fold")
    table.add_column("FORK", overflow="fold")
    table.add_row("status", status_text(original.get("status")), status_text(mine["status"]))
    table.add_row("steps", str(original.get("steps")), str(mine.get("steps")))
    table.add_row("answer", Text(short(original.get("output") or "", 400)),
                  Text(short(mine.get("output") or "", 400)))
    table.add_row("usage", usage_text(original.get("usage")), usage_text(mine.get("usage")))
    table.add_row(f"usage from step {report['from_step']}",
                  usage_text(original.get("usage_from_step")), usage_text(mine.get("usage")))
    console.print(table)
