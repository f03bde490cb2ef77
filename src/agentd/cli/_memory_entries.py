"""The `memory` commands for long-term memory entries: remember, entries, entry, forget,
search, consolidate, export, import (registered on ``memory_app`` in cli/_memory.py).

Entries are written by agents from whatever their tools read, so their content, tags and
metadata are printed as plain ``Text`` on the safe console, never parsed as markup; a
tainted entry (content from outside) is marked wherever it is shown.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from agentd.cli._common import (
    AgentArg,
    JsonFlag,
    connect,
    describe_api_error,
    echo_json,
    fail,
    more_command,
    out,
    write_lines,
)
from agentd.cli._render import short, when
from agentd.client import APIError

__all__ = ["consolidate", "entries", "entry", "export", "forget", "import_", "remember",
           "search"]

IdArg = Annotated[str, typer.Argument(metavar="ID", help="The entry's id (mem_...).",
                                      show_default=False)]
TagOption = Annotated[list[str] | None, typer.Option(
    "--tag", "-t", metavar="TAG", help="A tag (repeat for more).", show_default=False)]

#: The most of an entry's content a table row shows (less on a narrow terminal).
CLIP = 200


def _tainted(item: dict[str, Any]) -> Text:
    return Text("tainted ", style="bold yellow") if item.get("tainted") else Text("")


def _content_cell(item: dict[str, Any]) -> Text:
    cell = _tainted(item) + Text(short(str(item.get("content") or ""), CLIP))
    cell.no_wrap, cell.overflow = True, "ellipsis"
    return cell


def _tags(item: dict[str, Any]) -> Text:
    return Text(", ".join(str(t) for t in item.get("tags") or []))


def entries_table(items: list[dict[str, Any]], *, scores: bool = False,
                  width: int = 200) -> Table:
    """One line per entry, its content clipped to the terminal (a NAMESPACE column only
    when one of them is shared); ``agentd memory entry`` shows the whole of one. Under
    110 columns the content takes the room of the date, tags and namespace (at 80 it
    was left 16 characters)."""
    narrow = width < 110
    shared = any(item.get("namespace") for item in items) and not narrow
    table = Table(show_edge=False, pad_edge=False)
    # Never clipped: it is what `entry` and `forget` take.
    table.add_column("ID", no_wrap=True,
                     min_width=max(len(str(item.get("id", ""))) for item in items))
    if scores:
        table.add_column("SCORE", justify="right", no_wrap=True, min_width=5)
    if not narrow:
        table.add_column("DATE", style="dim", no_wrap=True, min_width=10)
    if shared:
        table.add_column("NAMESPACE", no_wrap=True, max_width=16)
    if not narrow:
        table.add_column("TAGS", max_width=24)
    # Wrappable, so the table gives it what the other columns leave; one line anyway,
    # the Text itself being no_wrap.
    table.add_column("CONTENT")
    for item in items:
        row: list[Text | str] = [Text(str(item.get("id", "")))]
        if scores:
            row.append(f"{float(item.get('score') or 0.0):.2f}")
        if not narrow:
            row.append(when(item.get("created_at"))[:10])
        if shared:
            row.append(Text(str(item.get("namespace") or "")))
        if not narrow:
            row.append(_tags(item))
        row.append(_content_cell(item))
        table.add_row(*row)
    return table


def _parse_meta(pairs: list[str]) -> dict[str, Any]:
    """``k=v`` pairs as a dict; v is JSON when it parses (``n=3``, ``ok=true``), else
    a string."""
    metadata: dict[str, Any] = {}
    for raw in pairs:
        key, sep, value = raw.partition("=")
        if not sep or not key.strip():
            raise typer.BadParameter(f"expected KEY=VALUE, got {raw!r}", param_hint="--meta")
        try:
            metadata[key.strip()] = json.loads(value)
        except ValueError:
            metadata[key.strip()] = value
    return metadata


def remember(
    ctx: typer.Context,
    agent: AgentArg,
    text: Annotated[str, typer.Argument(metavar="TEXT",
                                        help="What to remember, verbatim; - reads stdin.",
                                        show_default=False)],
    tag: TagOption = None,
    meta: Annotated[list[str] | None, typer.Option(
        "--meta", "-m", metavar="KEY=VALUE",
        help="Metadata (repeat for more); VALUE is JSON when it parses, else text.",
        show_default=False)] = None,
    namespace: Annotated[str | None, typer.Option(
        "--namespace", "-N", metavar="NS",
        help="A shared namespace in the agent's settings.memory.namespaces.",
        show_default=False)] = None,
    tainted: Annotated[bool, typer.Option(
        "--tainted", help="Mark it untrusted (text from outside): a run that recalls it "
                          "is tainted.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Store a long-term memory entry for an agent, verbatim (no model call).

    The same text (ignoring case and spacing) is not stored twice: the entry that has
    it is named instead.

    [bold]Examples[/]
      $ agentd memory remember demo "Ann prefers short answers." --tag pref
      $ agentd memory remember demo - --meta source=notes --meta year=2024 < notes.txt
    """
    content = sys.stdin.read() if text == "-" else text
    if not content.strip():
        fail("nothing to remember: the text is empty")
    metadata = _parse_meta(meta or [])
    with connect(ctx) as client:
        written = client.add_entry(agent, content, tags=tag, metadata=metadata,
                                   namespace=namespace, tainted=tainted)
    if as_json:
        echo_json(written)
    elif written.get("created"):
        out().print(Text(f"remembered {written.get('id')} (agent {agent})"), soft_wrap=True)
    else:
        out().print(Text(f"already remembered as {written.get('id')} (same content); "
                         "nothing written"), soft_wrap=True)


def entries(
    ctx: typer.Context,
    agent: AgentArg,
    tag: TagOption = None,
    namespace: Annotated[str | None, typer.Option(
        "--namespace", "-N", metavar="NS", help="Only this shared namespace.",
        show_default=False)] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, max=1000, metavar="N",
                                       help="At most this many.")] = 50,
    before: Annotated[str | None, typer.Option(
        "--before", metavar="ID", help="The page after this entry (the hint the last "
                                       "page printed).", show_default=False)] = None,
    as_json: JsonFlag = False,
) -> None:
    """List an agent's long-term memory entries, newest first.

    With --tag, only the entries having every tag given.

    [bold]Examples[/]
      $ agentd memory entries demo
      $ agentd memory entries demo --tag pref --limit 10
      $ agentd memory entries demo --json | jq -r '.[].content'
    """
    with connect(ctx) as client:
        page = client.list_entries(agent, namespace=namespace, tags=tag, limit=limit,
                                   before=before)
    items: list[dict[str, Any]] = page.get("entries", [])
    if as_json:
        echo_json(items)
    elif not items:
        out().print(Text("no memory entries" + (" here" if before or tag or namespace
                                                else f" for {agent} yet"), style="dim"),
                    soft_wrap=True)
    else:
        console = out()
        console.print(entries_table(items, width=console.width))
    if page.get("next_before"):
        words = ["agentd", "memory", "entries", agent]
        for t in tag or []:
            words += ["--tag", t]
        if namespace:
            words += ["--namespace", namespace]
        words += ["--limit", str(limit), "--before", page["next_before"]]
        more_command(words, as_json)


def entry(ctx: typer.Context, agent: AgentArg, entry_id: IdArg, as_json: JsonFlag = False
          ) -> None:
    """Print one entry: lines about it, then its content verbatim.

    [bold]Examples[/]
      $ agentd memory entry demo mem_01a2...
      $ agentd memory entry demo mem_01a2... --json | jq -r .content
    """
    with connect(ctx) as client:
        item = client.get_entry(agent, entry_id)
    if as_json:
        echo_json(item)
        return
    console = out()
    where = f"namespace {item['namespace']}" if item.get("namespace") else "own memory"
    console.print(Text(f"{item.get('id')} · {where} · version {item.get('version')} · "
                       f"created {when(item.get('created_at'))} · updated "
                       f"{when(item.get('updated_at'))}", style="dim"), soft_wrap=True)
    if item.get("tags"):
        console.print(Text("tags: ", style="dim") + _tags(item), soft_wrap=True)
    if item.get("metadata"):
        console.print(Text("metadata: ", style="dim") + Text(short(item["metadata"])),
                      soft_wrap=True)
    source = item.get("source") or {}
    if any(source.get(k) is not None for k in ("session", "run", "seq")):
        console.print(Text(f"source: session {source.get('session')}, run "
                           f"{source.get('run')}, seq {source.get('seq')}", style="dim"),
                      soft_wrap=True)
    if item.get("tainted"):
        console.print(Text("tainted: ", style="bold yellow")
                      + Text(str(item.get("tainted_reason") or "untrusted content")),
                      soft_wrap=True)
    console.print(Text(str(item.get("content") or "")), soft_wrap=True)


def forget(ctx: typer.Context, agent: AgentArg, entry_id: IdArg) -> None:
    """Delete a long-term memory entry.

    [bold]Example[/]
      $ agentd memory forget demo mem_01a2...
    """
    with connect(ctx) as client:
        client.delete_entry(agent, entry_id)
    out().print(Text(f"forgot {entry_id} (agent {agent})"), soft_wrap=True)


def search(
    ctx: typer.Context,
    agent: AgentArg,
    query: Annotated[str, typer.Argument(metavar="QUERY", help="What to look for.",
                                         show_default=False)],
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, max=100, metavar="N",
                                       help="At most this many results.")] = 10,
    tag: Annotated[list[str] | None, typer.Option(
        "--tag", "-t", metavar="TAG", help="Only entries having this tag (repeat: all of "
                                           "them).", show_default=False)] = None,
    any_tag: Annotated[list[str] | None, typer.Option(
        "--any-tag", metavar="TAG", help="Only entries having one of these tags (repeat).",
        show_default=False)] = None,
    namespace: Annotated[list[str] | None, typer.Option(
        "--namespace", "-N", metavar="NS",
        help="Search this namespace (repeat; '' is the agent's own). Default: its own and "
             "every shared one in its settings.", show_default=False)] = None,
    vector_weight: Annotated[float | None, typer.Option(
        "--vector-weight", min=0.0, max=1.0, metavar="W",
        help="0: words only, 1: meaning only (default: the agent's setting).",
        show_default=False)] = None,
    as_json: JsonFlag = False,
) -> None:
    """Search an agent's long-term memory by words and meaning, best first.

    [bold]Examples[/]
      $ agentd memory search demo "what does Ann drink"
      $ agentd memory search demo deploy --tag ops --limit 3
      $ agentd memory search demo tea --json | jq -r '.[0].content'
    """
    if not query.strip():
        fail("the query is empty")
    with connect(ctx) as client:
        results = client.search_memory(agent, query, limit=limit, tags=tag, tags_any=any_tag,
                                       namespaces=namespace, vector_weight=vector_weight)
    if as_json:
        echo_json(results)
    elif not results:
        out().print(Text("no matching entries", style="dim"), soft_wrap=True)
    else:
        console = out()
        console.print(entries_table(results, scores=True, width=console.width))


def _consolidation_line(done: dict[str, Any]) -> str:
    """``session user:1, seq 3-10: 2 entries (1 already known), blocks human`` (plain)."""
    written = len(done.get("entries") or [])
    line = (f"session {done.get('session')}, seq {done.get('from_seq')}-{done.get('to_seq')}"
            f": {written} entr{'y' if written == 1 else 'ies'}")
    if done.get("duplicates"):
        line += f" ({done['duplicates']} already known)"
    if done.get("blocks"):
        line += f", blocks {', '.join(str(b) for b in done['blocks'])}"
    if done.get("skipped"):
        line += f", {len(done['skipped'])} proposal(s) skipped"
    return f"{line} (model {done.get('model')})"


def consolidate(
    ctx: typer.Context,
    agent: AgentArg,
    session: Annotated[str | None, typer.Option(
        "--session", "-s", metavar="KEY", help="Only this session (default: every session "
                                               "with new history).",
        show_default=False)] = None,
    as_json: JsonFlag = False,
) -> None:
    """Turn an agent's new history into long-term memories and block lines now.

    The agent's consolidation model writes them; each stretch of history is consolidated
    once, and with nothing new nothing is written (no model call).

    [bold]Examples[/]
      $ agentd memory consolidate demo
      $ agentd memory consolidate demo --session user:42
    """
    with connect(ctx, timeout=300.0) as client:
        done = client.consolidate_memory(agent, session)
    if as_json:
        echo_json(done)
    elif not done:
        out().print(Text("nothing new to consolidate", style="dim"), soft_wrap=True)
    else:
        for item in done:
            out().print(Text(_consolidation_line(item)), soft_wrap=True)


def export(
    ctx: typer.Context,
    agent: AgentArg,
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", metavar="FILE", help="Write here instead of stdout (replaced "
                                               "only once the export is complete).",
        show_default=False, dir_okay=False)] = None,
) -> None:
    """Write an agent's memory blocks and entries as JSON lines (streamed).

    [bold]Examples[/]
      $ agentd memory export demo -o demo-memory.jsonl
      $ agentd memory export demo | jq -c 'select(.type == "entry") | .content'
    """
    if output is not None and not output.parent.is_dir():
        fail(f"{output.parent}: no such directory")
    with connect(ctx) as client:
        lines = client.export_memory(agent)
        with lines:
            write_lines(lines, output)
    if output is None:
        return
    out().print(Text(f"exported the memory of {agent} to {output}"), soft_wrap=True)


def import_(
    ctx: typer.Context,
    agent: AgentArg,
    file: Annotated[str, typer.Argument(metavar="FILE",
                                        help="An export (JSON lines); - reads stdin.",
                                        show_default=False)],
    as_json: JsonFlag = False,
) -> None:
    """Write the blocks and entries of an export into an agent's memory.

    Every line is checked first: a bad one is named and nothing is written. Entries the
    agent has already are skipped, so an import can be repeated.

    [bold]Examples[/]
      $ agentd memory import demo demo-memory.jsonl
      $ agentd memory export demo | agentd memory import copy -
    """
    if file == "-":
        data = typer.get_binary_stream("stdin").read()
    else:
        try:
            data = Path(file).read_bytes()
        except FileNotFoundError:
            fail(f"{file}: no such file")
        except OSError as exc:
            fail(f"{file}: {exc.strerror or exc}")
    if not data.strip():
        fail(f"{'stdin' if file == '-' else file} is empty: nothing to import")
    with connect(ctx) as client:
        try:
            report = client.import_memory(agent, data)
        except APIError as exc:
            if exc.status != 413:
                raise
            # Lines import on their own and duplicates are skipped, so pieces work.
            fail(f"{describe_api_error(exc)}; an import is one request: split the file by "
                 "lines (importing a piece again is safe) or raise the daemon's "
                 "max_body_bytes")
    if as_json:
        echo_json(report)
        return
    duplicates = report.get("duplicates", 0)
    out().print(Text(f"imported {report.get('entries', 0)} entries and "
                     f"{report.get('blocks', 0)} blocks into {agent}"
                     + (f" ({duplicates} already there, skipped)" if duplicates else "")),
                soft_wrap=True)
