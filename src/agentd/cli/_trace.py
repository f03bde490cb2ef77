"""``agentd trace``: a run's or a session's spans, from the log."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import httpx
import orjson
import typer
from rich.markup import escape
from rich.tree import Tree

from agentd.cli._common import connect, fail, out
from agentd.telemetry.export import traces_url


def trace(
    ctx: typer.Context,
    target: Annotated[str, typer.Argument(
        metavar="RUN|SESSION", help="A run id, or with --agent a session key.",
        show_default=False)],
    agent: Annotated[str | None, typer.Option(
        "--agent", "-a", help="The agent whose session TARGET names.")] = None,
    otlp: Annotated[str | None, typer.Option(
        "--otlp", metavar="URL",
        help="Post the spans to this OTLP/HTTP receiver (/v1/traces is added to a "
             "base URL), as OTLP/JSON.")] = None,
    to_file: Annotated[Path | None, typer.Option(
        "--out", "-o", metavar="FILE",
        help="Write the spans as OTLP/JSON to FILE ('-': standard output).")] = None,
) -> None:
    """Show a run's spans (or a session's runs'), built from the event log.

    The spans follow OpenTelemetry's GenAI conventions: [bold]invoke_agent[/] per
    run, [bold]chat[/] per model call, [bold]execute_tool[/] per tool call. Send
    them to any OTLP receiver (Jaeger, Phoenix, an OpenTelemetry Collector) with
    --otlp, or save them with --out; the daemon need not export traces itself.

    [bold]Examples[/]
      $ agentd trace r_0192c3d4e5f6a1b2c3d4e5f6a7
      $ agentd trace main --agent demo --otlp http://localhost:4318
      $ agentd trace "$RUN" --out run.json
    """
    with connect(ctx) as client:
        if agent is not None:
            document = client.session_trace(agent, target)
        elif target.startswith("r_"):
            document = client.run_trace(target)
        else:
            fail(f"{target!r} is not a run id (r_...); for a session, name its agent "
                 "with --agent")
    spans = [s for r in document.get("resourceSpans", [])
             for ss in r.get("scopeSpans", []) for s in ss.get("spans", [])]
    if to_file is not None:
        raw = orjson.dumps(document, option=orjson.OPT_INDENT_2)
        if str(to_file) == "-":
            typer.echo(raw.decode())
        else:
            to_file.write_bytes(raw + b"\n")
            out().print(f"wrote {len(spans)} spans to {escape(str(to_file))}")
    if otlp is not None:
        url = traces_url(otlp)
        try:
            reply = httpx.post(url, content=orjson.dumps(document), timeout=30.0,
                               headers={"content-type": "application/json"})
        except httpx.HTTPError as exc:
            fail(f"could not post the spans to {url}: {exc}")
        if reply.status_code >= 300:
            fail(f"{url} refused the spans: HTTP {reply.status_code} "
                 f"{reply.text[:200]}")
        out().print(f"posted {len(spans)} spans to {escape(url)}")
    if to_file is None and otlp is None:
        _print_tree(spans)


def _attr(span: dict[str, Any], key: str) -> Any:
    for item in span.get("attributes", []):
        if item.get("key") == key:
            value = item.get("value", {})
            return next(iter(value.values()), None)
    return None


def _print_tree(spans: list[dict[str, Any]]) -> None:
    if not spans:
        out().print("no spans")
        return
    by_parent: dict[str | None, list[dict[str, Any]]] = {}
    ids = {s["spanId"] for s in spans}
    for span in spans:
        parent = span.get("parentSpanId")
        by_parent.setdefault(parent if parent in ids else None, []).append(span)

    def label(span: dict[str, Any]) -> str:
        ms = (int(span["endTimeUnixNano"]) - int(span["startTimeUnixNano"])) / 1e6
        text = f"[bold]{escape(span['name'])}[/] {ms:.1f} ms"
        tokens = (_attr(span, "gen_ai.usage.input_tokens"),
                  _attr(span, "gen_ai.usage.output_tokens"))
        if tokens[0] is not None:
            text += f"  tokens {tokens[0]}/{tokens[1]}"
        if span.get("status", {}).get("code") == 2:
            text += f"  [red]{escape(str(_attr(span, 'error.type') or 'error'))}[/]"
        return text

    def add(node: Tree, span: dict[str, Any]) -> None:
        branch = node.add(label(span))
        for child in sorted(by_parent.get(span["spanId"], []),
                            key=lambda s: int(s["startTimeUnixNano"])):
            add(branch, child)

    for root in sorted(by_parent.get(None, []), key=lambda s: int(s["startTimeUnixNano"])):
        tree = Tree(label(root))
        for child in sorted(by_parent.get(root["spanId"], []),
                            key=lambda s: int(s["startTimeUnixNano"])):
            add(tree, child)
        out().print(tree)
