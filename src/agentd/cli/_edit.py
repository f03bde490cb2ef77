"""`agentd edit` (an agent's fields in $EDITOR) and `agentd set` (KEY=VALUE changes)."""

from __future__ import annotations

import json
import re
from typing import Annotated, Any

import click
import typer
from rich.markup import escape

from agentd.cli._common import NameArg, connect, describe_api_error, echo_json, err, fail, out
from agentd.client import APIError, Client

#: The fields of an agent a PATCH may change, in the order the editor shows them.
EDITABLE = ("model", "instructions", "tools", "settings")

_HEADER = (
    "// Edit agent {name!r}, save and quit to apply; quit without saving (or empty\n"
    "// the file) to leave it unchanged. JSON; lines starting with // are ignored.\n"
)
_COMMENT = re.compile(r"^\s*//")


def editable(agent: dict[str, Any]) -> dict[str, Any]:
    """The fields of ``agent`` that ``agentd edit`` offers."""
    return {key: agent.get(key) for key in EDITABLE}


def render(name: str, fields: dict[str, Any]) -> str:
    return _HEADER.format(name=name) + json.dumps(fields, indent=2, ensure_ascii=False) + "\n"


def strip_comments(text: str) -> str:
    return "\n".join(line for line in text.splitlines() if not _COMMENT.match(line))


def annotate(text: str, problems: list[tuple[str, str]]) -> str:
    """``text`` with each problem as a ``// error:`` line right above the line that
    names its field (found by the field's last part), else at the top."""
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("// error:")]
    top: list[str] = []
    for field, message in problems:
        leaf = field.rsplit(".", 1)[-1] if field else ""
        leaf = re.sub(r"\[\d+\]$", "", leaf)
        at = next((i for i, line in enumerate(lines) if leaf and f'"{leaf}":' in line), None)
        note = f"// error: {field + ': ' if field else ''}{message}"
        if at is None:
            top.append(note)
        else:
            indent = lines[at][: len(lines[at]) - len(lines[at].lstrip())]
            lines.insert(at, indent + note)
    return "\n".join(top + lines) + "\n"


def problems_of(exc: APIError) -> list[tuple[str, str]]:
    """(field, message) for each problem a 422 names; the message alone otherwise."""
    found = []
    for item in exc.details.get("errors") or []:
        if isinstance(item, dict):
            field = str(item.get("field") or "").removeprefix("body.")
            found.append((field, str(item.get("message") or exc.message)))
    return found or [("", exc.message)]


def changes(before: dict[str, Any], after: Any) -> dict[str, Any]:
    """The fields that differ; a ValueError naming what is wrong with ``after``."""
    if not isinstance(after, dict):
        raise ValueError("the text must be one JSON object")
    unknown = sorted(set(after) - set(EDITABLE))
    if unknown:
        raise ValueError(f"unknown field(s) {', '.join(unknown)}; editable: "
                         f"{', '.join(EDITABLE)}")
    return {key: value for key, value in after.items() if value != before.get(key)}


def _open_editor(text: str) -> str | None:
    try:
        edited: str | None = click.edit(text, extension=".json", require_save=True)
    except click.ClickException as exc:
        fail(f"{exc.format_message()}; the agent is unchanged")
    return edited


def edit(
    ctx: typer.Context,
    name: NameArg,
    as_json: Annotated[bool, typer.Option("--json", help="Print the changed agent as JSON.")
                       ] = False,
) -> None:
    """Edit an agent's model, instructions, tools and settings in $EDITOR.

    The fields open as JSON. Save and quit to apply them; if the daemon refuses a
    value, the editor opens again with the error above the field. Quit without
    saving, or empty the file, to leave the agent as it was.

    [bold]Examples[/]
      $ agentd edit demo
      $ EDITOR=nano agentd edit demo
    """
    with connect(ctx) as client:
        agent = client.get_agent(name)
        before = editable(agent)
        text = render(name, before)
        while True:
            edited = _open_editor(text)
            if edited is None or not strip_comments(edited).strip():
                _unchanged(name, agent, as_json)
                return
            text = edited
            try:
                patch = changes(before, json.loads(strip_comments(edited)))
            except json.JSONDecodeError as exc:
                text = annotate(edited, [("", f"not valid JSON: {exc.msg} "
                                              f"(line {exc.lineno} without the // lines)")])
                continue
            except ValueError as exc:
                text = annotate(edited, [("", str(exc))])
                continue
            if not patch:
                _unchanged(name, agent, as_json)
                return
            try:
                agent = client.update_agent(name, **patch)
            except APIError as exc:
                if exc.status != 422:
                    raise
                err().print(f"[yellow]refused: {escape(describe_api_error(exc))}; "
                            "reopening the editor[/]", soft_wrap=True)
                text = annotate(edited, problems_of(exc))
                continue
            break
    _changed(name, agent, sorted(patch), as_json)


def _unchanged(name: str, agent: dict[str, Any], as_json: bool) -> None:
    # --json prints the agent whatever happened: a script reads one shape.
    if as_json:
        echo_json(agent)
    else:
        out().print(f"no change; agent [bold]{escape(name)}[/] is as it was")


def _changed(name: str, agent: dict[str, Any], fields: list[str], as_json: bool) -> None:
    if as_json:
        echo_json(agent)
    else:
        out().print(f"changed {escape(', '.join(fields))} of agent [bold]{escape(name)}[/]",
                    soft_wrap=True)


def parse_assignment(raw: str) -> tuple[list[str], Any]:
    """``a.b.c=VALUE`` as (path, value); VALUE is JSON when it parses, else a string."""
    key, sep, value = raw.partition("=")
    path = key.strip().split(".")
    if not sep or not all(part.strip() for part in path):
        raise typer.BadParameter(f"expected KEY=VALUE, got {raw!r}", param_hint="KEY=VALUE")
    try:
        return path, json.loads(value)
    except ValueError:
        return path, value


def apply_assignments(agent: dict[str, Any], assignments: list[tuple[list[str], Any]]
                      ) -> dict[str, Any]:
    """The PATCH body that makes the assignments on ``agent`` (settings merged in;
    a ``null`` value removes a setting)."""
    patch: dict[str, Any] = {}
    settings: dict[str, Any] | None = None
    for path, value in assignments:
        head, rest = path[0], path[1:]
        if head == "settings" and rest:
            if settings is None:
                settings = json.loads(json.dumps(agent.get("settings") or {}))
            _set_path(settings, rest, value)
        elif head in ("model", "instructions") and not rest:
            patch[head] = value if isinstance(value, str) else json.dumps(value)
        elif head == "tools" and not rest:
            patch[head] = (value if isinstance(value, list)
                           else [t.strip() for t in str(value).split(",") if t.strip()])
        elif head == "settings":
            patch[head] = value
        else:
            raise typer.BadParameter(
                f"cannot set {'.'.join(path)!r}: use model, instructions, tools, settings "
                "or settings.KEY (e.g. settings.max_steps=5)", param_hint="KEY=VALUE")
    if settings is not None:
        patch["settings"] = settings
    return patch


def _set_path(target: dict[str, Any], path: list[str], value: Any) -> None:
    for i, part in enumerate(path[:-1]):
        inner = target.get(part)
        if inner is None:
            inner = target[part] = {}
        elif not isinstance(inner, dict):
            raise typer.BadParameter(
                f"settings.{'.'.join(path[:i + 1])} is not an object (it is "
                f"{json.dumps(inner)})", param_hint="KEY=VALUE")
        target = inner
    if value is None:
        target.pop(path[-1], None)
    else:
        target[path[-1]] = value


def set_fields(
    ctx: typer.Context,
    name: NameArg,
    assignments: Annotated[list[str], typer.Argument(
        metavar="KEY=VALUE...", help="model=..., instructions=..., tools=a,b or "
        "settings.KEY=VALUE (dotted keys reach inside settings). VALUE is JSON when it "
        "parses as JSON, else a string; null removes a setting.", show_default=False)],
    as_json: Annotated[bool, typer.Option("--json", help="Print the changed agent as JSON.")
                       ] = False,
) -> None:
    """Change some of an agent's fields at once.

    [bold]Examples[/]
      $ agentd set demo settings.max_steps=5
      $ agentd set demo model=openai:gpt-4.1-mini settings.temperature=0.2
      $ agentd set demo tools=calculator,current_time
      $ agentd set demo settings.policy='{"network": true}'
      $ agentd set demo settings.temperature=null
    """
    parsed = [parse_assignment(raw) for raw in assignments]
    with connect(ctx) as client:
        agent = _set(client, name, parsed)
    _changed(name, agent, sorted({'.'.join(p) for p, _ in parsed}), as_json)


def _set(client: Client, name: str, parsed: list[tuple[list[str], Any]]) -> dict[str, Any]:
    current = client.get_agent(name)
    patch = apply_assignments(current, parsed)
    return client.update_agent(name, **patch)
