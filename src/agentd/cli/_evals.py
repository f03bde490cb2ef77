"""``agentd eval add|list|show|run|export|import|cancel|delete``: evaluation suites built
from real sessions, run against a candidate configuration, over the HTTP API.

``agentd eval run`` exits 1 when the eval run fails its gate (0 when it passes), so
CI can gate a change on it; ``--junit FILE`` writes the report as JUnit XML too.
A case's answers were written by a model: they are printed as plain ``Text``.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from agentd.cli._common import JsonOption, connect, echo_json, err, fail, out, write_lines
from agentd.cli._fork import (
    InstructionsOption,
    ModelOption,
    SettingsOption,
    ToolsOption,
    candidate_options,
    json_object,
)
from agentd.cli._render import short, usage_text, when
from agentd.client import APIError, Client

__all__ = ["eval_app"]

#: What a candidate without a model of its own runs on.
_AGENTS = "the agent's model"

eval_app = typer.Typer(
    name="eval",
    help="Evaluations: suites of cases picked from real runs, forked onto a candidate "
         "model, instructions or settings, graded and gated.",
    no_args_is_help=True,
    rich_markup_mode="rich",
)

SuiteArg = Annotated[str, typer.Argument(metavar="SUITE", help="The suite's name (or id).",
                                         show_default=False)]
AgentOption = Annotated[str | None, typer.Option(
    "--agent", "-a", help="The suite's agent (when agents share the suite's name; the "
                          "new suite's, for cases from a file).", show_default=False)]
#: Results shown case by case; a bigger run shows those that did not pass.
_ALL_ROWS = 50
_STYLES = {"passed": "green", "failed": "red", "errored": "bold red", "cancelled": "dim",
           "queued": "dim", "running": "yellow"}


def _status(value: Any) -> Text:
    label = str(value or "-")
    return Text(label, style=_STYLES.get(label, ""))


def _graders(raw: list[str] | None) -> list[dict[str, Any]] | None:
    if not raw:
        return None
    return [json_object(item, "--grader") for item in raw]


def _suite_for(client: Client, name: str, agent: str | None, *, create: bool = False
               ) -> dict[str, Any]:
    """The suite ``name`` (of ``agent``), made for ``agent`` when ``create``."""
    found = client.list_suites(agent=agent, name=name) if not name.startswith("es_") else []
    if found and len(found) == 1:
        return found[0]
    if create and not found and agent is not None:
        return client.create_suite(agent, name)
    return client.find_suite(name, agent=agent)


def _has_suite(client: Client, name: str, agent: str | None) -> bool:
    if name.startswith("es_"):
        return True
    return bool(client.list_suites(agent=agent, name=name))


def _lines_of(path: Path) -> list[dict[str, Any]]:
    try:
        text = path.read_text()
    except OSError as exc:
        fail(f"{path}: {exc.strerror or exc}")
    items = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except ValueError as exc:
            fail(f"{path}:{number}: not JSON: {exc}")
        if not isinstance(value, dict):
            fail(f"{path}:{number}: each line must be a JSON object")
        items.append(value)
    return items


@eval_app.command("add")
def add(
    ctx: typer.Context,
    suite: SuiteArg,
    from_run: Annotated[list[str] | None, typer.Option(
        "--from-run", metavar="RUN", help="A finished run (repeat for several): the case "
                                          "copies its context, message and recording.",
        show_default=False)] = None,
    file: Annotated[Path | None, typer.Option(
        "--file", "-f", metavar="FILE", help="Cases as JSON lines (an export, or one case "
                                             "a line).", show_default=False,
        dir_okay=False)] = None,
    agent: AgentOption = None,
    name: Annotated[str | None, typer.Option("--name", help="The case's name.",
                                             show_default=False)] = None,
    grader: Annotated[list[str] | None, typer.Option(
        "--grader", "-g", metavar="JSON", help="A grader (repeat): '{\"kind\": \"regex\", "
                                              "\"pattern\": \"...\"}'; default: exact.",
        show_default=False)] = None,
    from_step: Annotated[int, typer.Option("--from-step", "-k", min=1, help=(
        "The step the candidate takes over from."))] = 1,
    as_json: JsonOption = False,
) -> None:
    """Add cases to a suite (made if it does not exist): from finished runs, or a file.

    [bold]Examples[/]
      $ agentd eval add smoke --from-run r_0192c3d4e5f6a1b2c3d4e5f6a7
      $ agentd eval add smoke --from-run "$RUN" -g '{"kind": "regex", "pattern": "(?i)refund"}'
      $ agentd eval add smoke --file cases.jsonl --agent support
    """
    if not from_run and file is None:
        fail("give --from-run RUN or --file FILE")
    graders = _graders(grader)
    cases = None
    if file is not None:
        cases = [i for i in _lines_of(file) if i.get("type", "case") == "case"]
    made: list[dict[str, Any]] = []
    with connect(ctx, timeout=600.0) as client:
        existed = _has_suite(client, suite, agent)
        target = None
        try:
            for run_id in from_run or ():
                owner = client.get_run(run_id)["agent"]
                target = _suite_for(client, suite, agent or owner, create=True)
                made.append(client.add_case(target["id"], run_id, name=name,
                                            graders=graders, from_step=from_step))
            if cases is not None:
                target = _suite_for(client, suite, agent, create=True)
                made.extend(client.import_cases(target["id"], cases))
        except APIError:
            if not existed and not made and target is not None:
                # (made for these cases, none of which the daemon took: not left behind)
                with contextlib.suppress(APIError):
                    client.delete_suite(target["id"])
            raise
    if as_json:
        echo_json(made)
        return
    out().print(Text(f"added {len(made)} case(s) to suite {suite}: "
                     + ", ".join(short(c.get("name"), 40) for c in made[:10])
                     + (" ..." if len(made) > 10 else "")), soft_wrap=True)


@eval_app.command("list")
def list_suites(ctx: typer.Context, agent: AgentOption = None,
                as_json: JsonOption = False) -> None:
    """The eval suites of the agents the token may use."""
    with connect(ctx) as client:
        suites = client.list_suites(agent=agent)
    if as_json:
        echo_json(suites)
        return
    if not suites:
        out().print("no eval suites")
        return
    table = Table(show_edge=False, pad_edge=False)
    for column in ("NAME", "AGENT", "CASES", "ID", "DESCRIPTION"):
        table.add_column(column, no_wrap=column != "DESCRIPTION", overflow="ellipsis")
    for s in suites:
        table.add_row(Text(s["name"]), Text(s["agent"]), str(s["cases"]), s["id"],
                      Text(short(s.get("description") or "", 60)))
    out().print(table)


@eval_app.command("show")
def show(
    ctx: typer.Context, suite: SuiteArg, agent: AgentOption = None,
    run: Annotated[str | None, typer.Option(
        "--run", metavar="ID", help="An eval run's report (er_...); 'last' for the "
                                    "latest.", show_default=False)] = None,
    as_json: JsonOption = False,
) -> None:
    """A suite: its cases and eval runs; or one eval run's report (--run)."""
    with connect(ctx) as client:
        found = _suite_for(client, suite, agent)
        if run is not None:
            runs = client.list_eval_runs(found["id"], limit=1) if run == "last" else []
            if run == "last" and not runs:
                fail(f"suite {suite} has no eval run yet")
            record = runs[0] if runs else client.get_eval_run(run)
            if as_json:
                echo_json(record)
            else:
                _report(found, record, _all_results(client, record["id"]))
            return
        if as_json:
            echo_json(found)
            return
        cases = client.list_cases(found["id"], limit=1000)["cases"]
        runs = client.list_eval_runs(found["id"], limit=20)
    console = out()
    console.print(Text(f"suite {found['name']} ({found['id']}) of agent {found['agent']}: "
                       f"{found['cases']} case(s); gate {json.dumps(found['gate'])}"),
                  soft_wrap=True)
    table = Table(show_edge=False, pad_edge=False, title="cases", title_justify="left")
    for column in ("#", "NAME", "FROM RUN", "STEP", "GRADERS", "BASELINE ANSWER"):
        table.add_column(column, no_wrap=True, overflow="ellipsis")
    for c in cases:
        baseline = c.get("baseline") or {}
        table.add_row(str(c["n"]), Text(short(c["name"], 40)),
                      str(c["source"].get("run") or "(imported)"), str(c["from_step"]),
                      ", ".join(g.get("kind", "?") for g in c["graders"]),
                      Text(short(baseline.get("output") or "", 60)))
    console.print(table)
    if runs:
        listing = Table(show_edge=False, pad_edge=False, title="eval runs",
                        title_justify="left")
        for column in ("#", "ID", "STATUS", "MODEL", "PASSED", "GATE", "CREATED (UTC)"):
            listing.add_column(column, no_wrap=True)
        for r in runs:
            summary = r.get("summary") or {}
            gate = (summary.get("gate") or {}).get("passed")
            listing.add_row(str(r["n"]), r["id"], _status(r["status"]),
                            str(r["candidate"].get("model") or "(agent's)"),
                            f"{r['counts'].get('passed', 0)}/{r['cases']}",
                            "-" if gate is None else ("passed" if gate else "FAILED"),
                            when(r.get("created_at")))
        console.print(listing)


def _all_results(client: Client, eval_run_id: str, status: str | None = None
                 ) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = []
    after = 0
    while True:
        page = client.eval_results(eval_run_id, status=status, after=after, limit=1000)
        results.extend(page["results"])
        if page.get("next_after") is None:
            return results
        after = int(page["next_after"])


def _error(error: Any) -> str:
    """A result's ``error`` (``{code, message}``; a string from an older daemon)."""
    if isinstance(error, dict):
        return f"{error.get('code', 'error')}: {error.get('message', '')}"
    return "" if error is None else str(error)


def _grades(result: dict[str, Any]) -> Text:
    text = Text()
    for g in result.get("grades") or []:
        mark = {True: ("✓", "green"), False: ("✗", "red"), None: ("!", "bold red")}[
            g.get("passed")]
        if len(text):
            text.append(" ")
        text.append(f"{g.get('name') or g.get('kind')}{mark[0]}", style=mark[1])
    if len(text):
        return text
    # Not graded (the case could not be forked): its error's code; the whole error
    # is in the ANSWER column.
    error = result.get("error")
    return Text(str(error.get("code", "error")) if isinstance(error, dict)
                else short(_error(error) or "-", 24))


def _report(suite: dict[str, Any], run: dict[str, Any], results: list[dict[str, Any]],
            *, every: bool = False) -> None:
    """An eval run for a person: a line per case (only those that did not pass, past
    a few dozen, unless ``every``), then the aggregate against the baseline and the
    last run."""
    console = out()
    summary = run.get("summary") or {}
    gate = summary.get("gate") or {}
    console.print(Text(
        f"eval run {run['id']} (#{run['n']}) of suite {suite['name']} (agent "
        f"{suite['agent']}) on {run['candidate'].get('model') or _AGENTS}, "
        f"tools {run['candidate'].get('tools')}: {run['status']}"), soft_wrap=True)
    shown = results if every or len(results) <= _ALL_ROWS else [
        r for r in results if r["status"] != "passed"]
    table = Table(show_edge=False, pad_edge=False)
    for column in ("#", "CASE", "RESULT", "BASELINE", "GRADES", "ANSWER"):
        # (a case's result is what the line is for: never squeezed out by the rest)
        table.add_column(column, no_wrap=column != "ANSWER", overflow="ellipsis",
                         min_width=len("cancelled") if column in ("RESULT", "BASELINE")
                         else len(str(len(results))) if column == "#" else None)
    for r in shown:
        table.add_row(str(r["n"]), Text(short(r["case"], 30)), _status(r["status"]),
                      _status((r.get("baseline") or {}).get("status")), _grades(r),
                      Text(short(r.get("output") or _error(r.get("error")), 60)))
    if shown:
        console.print(table)
    if len(shown) < len(results):
        console.print(Text(f"({len(results) - len(shown)} passed cases not shown; "
                           "--json has them all)", style="dim"))
    if not summary:
        return
    total = summary.get("total", 0)
    console.print(Text(
        f"passed {summary.get('passed', 0)}/{total} ({summary.get('pass_rate', 0):.1%}); "
        f"failed {summary.get('failed', 0)}, errored {summary.get('errored', 0)}, "
        f"cancelled {summary.get('cancelled', 0)}"))
    baseline = summary.get("baseline") or {}
    console.print(Text(f"baseline (the recorded runs): {baseline.get('passed', 0)}/{total} "
                       f"({baseline.get('pass_rate', 0):.1%})"
                       + (f"; worse than it: {', '.join(baseline['worse'][:10])}"
                          if baseline.get("worse") else "")), soft_wrap=True)
    previous = summary.get("previous")
    if previous:
        console.print(Text(
            f"last run {previous['eval_run_id']} (#{previous['n']}): "
            f"{previous['passed']} passed ({previous['pass_rate']:.1%})"
            + (f"; regressions: {', '.join(previous['regressions'][:10])}"
               if previous.get("regressions") else "; no regressions")
            + (f"; fixed: {', '.join(previous['fixed'][:10])}"
               if previous.get("fixed") else "")), soft_wrap=True)
    console.print(Text(f"usage: candidate {usage_text(summary.get('usage'))}; baseline "
                       f"{usage_text(baseline.get('usage'))}; judges "
                       f"{usage_text(summary.get('judge_usage'))}"), soft_wrap=True)
    if gate.get("passed"):
        console.print(Text("gate passed", style="bold green"))
    else:
        console.print(Text("gate FAILED: " + "; ".join(gate.get("reasons") or []),
                           style="bold red"), soft_wrap=True)


@eval_app.command("run")
def run_suite(
    ctx: typer.Context,
    suite: SuiteArg,
    agent: AgentOption = None,
    model: ModelOption = None,
    instructions: InstructionsOption = None,
    settings: SettingsOption = None,
    tools: ToolsOption = "recorded",
    concurrency: Annotated[int | None, typer.Option(
        "--concurrency", min=1, max=256, help="Cases at once (at most the daemon's "
                                              "[evals] concurrency).",
        show_default=False)] = None,
    min_pass_rate: Annotated[float | None, typer.Option(
        "--min-pass-rate", min=0.0, max=1.0, help="The gate's pass rate (0..1) instead "
                                                  "of the suite's.",
        show_default=False)] = None,
    keep_sessions: Annotated[bool, typer.Option(
        "--keep-sessions", help="Keep each case's scratch session to read.")] = False,
    junit: Annotated[Path | None, typer.Option(
        "--junit", metavar="FILE", help="Also write the report as JUnit XML.",
        show_default=False, dir_okay=False)] = None,
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help=(
        "Wait for the report (and exit 1 when the gate fails).")) ] = True,
    as_json: JsonOption = False,
) -> None:
    """Fork every case of a suite onto a candidate and grade it; exit 1 on a failed gate.

    Each case runs as a fork of its recorded run (its context and message are the
    case's), at the kernel's batch class: interactive turns go first. The report
    compares every case with its recorded baseline and with the suite's last run.

    [bold]Examples[/]
      $ agentd eval run smoke --model openai:gpt-4.1-mini
      $ agentd eval run smoke --instructions prompt-v2.md --junit evals.xml
    """
    body = candidate_options(model, instructions, settings, tools)
    if junit is not None and not junit.parent.is_dir():
        fail(f"{junit.parent}: no such directory")
    with connect(ctx, timeout=86_400.0) as client:
        found = _suite_for(client, suite, agent)
        gate = None
        if min_pass_rate is not None:
            gate = {**(found.get("gate") or {}), "min_pass_rate": min_pass_rate}
        record = client.run_suite(found["id"], model=body.get("model"),
                                  instructions=body.get("instructions"),
                                  settings=body.get("settings"), tools=tools, gate=gate,
                                  concurrency=concurrency, keep_sessions=keep_sessions)
        if not wait:
            if as_json:
                echo_json(record)
            else:
                out().print(f"eval run {record['id']} queued: {record['cases']} case(s); "
                            f"agentd eval show {found['name']} --run {record['id']}")
            return
        err().print(Text(f"eval run {record['id']}: {record['cases']} case(s) queued ...",
                         style="dim"))
        record = client.get_eval_run(record["id"], wait=True)
        results = _all_results(client, record["id"])
        if junit is not None:
            try:
                junit.write_text(client.eval_junit(record["id"]))
            except OSError as exc:
                fail(f"{junit}: {exc.strerror or exc}")
    if as_json:
        echo_json(record)
    else:
        _report(found, record, results)
    if not ((record.get("summary") or {}).get("gate") or {}).get("passed"):
        raise typer.Exit(1)


@eval_app.command("results")
def results(
    ctx: typer.Context,
    run_id: Annotated[str, typer.Argument(metavar="ID", help="The eval run (er_...).")],
    status: Annotated[str | None, typer.Option(
        "--status", help="Only these, comma-separated: passed, failed, errored, "
                         "cancelled, queued, running.", show_default=False)] = None,
    as_json: JsonOption = False,
) -> None:
    """An eval run's results, a case a line: its grades, answer and baseline.

    [bold]Examples[/]
      $ agentd eval results er_0192c3d4e5f6a1b2c3d4e5f6a7 --status failed,errored
      $ agentd eval results "$EVAL" --json | jq '.[] | {case, status, grades}'
    """
    with connect(ctx) as client:
        record = client.get_eval_run(run_id)
        found = client.get_suite(record["suite_id"])
        rows = _all_results(client, run_id, status)
    if as_json:
        echo_json(rows)
    else:
        _report(found, {**record, "summary": None}, rows, every=True)


@eval_app.command("export")
def export(
    ctx: typer.Context, suite: SuiteArg, agent: AgentOption = None,
    run: Annotated[str | None, typer.Option(
        "--results", metavar="ID", help="An eval run's results instead of the cases.",
        show_default=False)] = None,
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", metavar="FILE", help="Write here instead of stdout.",
        show_default=False, dir_okay=False)] = None,
) -> None:
    """A suite's cases (or an eval run's results) as JSON lines, to import elsewhere.

    [bold]Examples[/]
      $ agentd eval export smoke -o smoke.jsonl
    """
    if output is not None and not output.parent.is_dir():
        fail(f"{output.parent}: no such directory")
    with connect(ctx, timeout=600.0) as client:
        found = _suite_for(client, suite, agent)
        lines = (client.export_eval_run(run) if run is not None
                 else client.export_suite(found["id"]))
        with lines:
            count = write_lines(lines, output)
    if output is not None:
        err().print(f"{count} line(s) written to {output}")


@eval_app.command("import")
def import_suite(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(metavar="FILE", help="A suite's export (JSON "
                                                             "lines).", dir_okay=False)],
    agent: Annotated[str, typer.Option("--agent", "-a", help="The agent the suite is for.")],
    name: Annotated[str | None, typer.Option(
        "--name", help="The suite's name (default: the exported one).",
        show_default=False)] = None,
    as_json: JsonOption = False,
) -> None:
    """Make a suite exported from any daemon again, for an agent of this one.

    [bold]Examples[/]
      $ agentd eval import smoke.jsonl --agent support
    """
    items = _lines_of(file)
    with connect(ctx, timeout=600.0) as client:
        made = client.import_suite(items, agent=agent, name=name)
    if as_json:
        echo_json(made["suite"])
    else:
        suite = made["suite"]
        out().print(Text(f"imported suite {suite['name']} ({suite['id']}) for agent "
                         f"{suite['agent']}: {made['cases']} case(s)"))


@eval_app.command("cancel")
def cancel(ctx: typer.Context, run_id: Annotated[str, typer.Argument(
        metavar="ID", help="The eval run (er_...).")], as_json: JsonOption = False) -> None:
    """Cancel an eval run: its queued cases are not run, those under way are stopped."""
    with connect(ctx) as client:
        record = client.cancel_eval_run(run_id)
    if as_json:
        echo_json(record)
    else:
        out().print(f"eval run {record['id']}: {record['status']}")


@eval_app.command("delete")
def delete(
    ctx: typer.Context, suite: SuiteArg, agent: AgentOption = None,
    run: Annotated[str | None, typer.Option(
        "--run", metavar="ID", help="Delete only this eval run (and its results).",
        show_default=False)] = None,
) -> None:
    """Delete a suite with its cases, eval runs and results (or one eval run)."""
    with connect(ctx) as client:
        found = _suite_for(client, suite, agent)
        if run is not None:
            client.delete_eval_run(run)
        else:
            client.delete_suite(found["id"])
    out().print(f"deleted {'eval run ' + run if run else 'suite ' + found['name']}")
