"""`agentd chat`: an interactive session that streams replies as they are written."""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from agentd.cli._common import connect, describe_api_error, err, out
from agentd.cli._render import (
    error_of,
    failure_line,
    short,
    tool_call_line,
    tool_result_line,
    waiting_line,
)
from agentd.cli._safe import terminal_safe
from agentd.client import APIError, Client, SSEEvent

_EXIT_COMMANDS = frozenset({"/exit", "/quit"})
#: The chat's own commands: (name, what it does). Anything else is sent to the agent.
SLASH_COMMANDS = (
    ("/help", "list these commands"),
    ("/exit, /quit", "leave the chat (Ctrl-D too)"),
    ("/tool NAME {json}", "scripted model only: call tool NAME with these arguments"),
)


class ReplyPrinter:
    """Prints one run's frames: tokens inline, tools dimmed, errors in red."""

    def __init__(self, console: Console, errors: Console) -> None:
        self.console = console
        self.errors = errors
        self.run_id: str | None = None
        self.failed = False
        self._streamed = False  # tokens printed for the current model step
        self._mid_line = False
        self._label = ""
        #: Text shown since the step's answer was last committed.
        self._partial: list[str] = []
        #: The run's message.user events seen (the first is its own input).
        self._inputs = 0
        #: The seq of a message steered in while an answer was streaming. The runtime
        #: refuses to commit a final answer that did not see it and asks the model
        #: again; the new call's tokens are the first to come after that seq (a
        #: token's id is the last seq committed when it was written).
        self._steered: int | None = None
        #: The partial answer no longer sits on one line (a notice broke it).
        self._broken = False
        #: Notices held back while an answer streams, so it stays on one line.
        self._held: list[str] = []

    def begin(self, label: str) -> None:
        """Print a label the reply continues on the same line."""
        self._label = label
        self.console.print(label, end="")
        self._mid_line = True

    def _restart(self, why: str) -> None:
        """Drop the partial answer shown so far: erased on a terminal when it is still
        on one line, else announced (what is printed cannot be taken back)."""
        partial = "".join(self._partial)
        broken = self._broken
        self._partial, self._steered, self._broken = [], None, False
        if not partial:
            return
        if (self.console.is_terminal and self._mid_line and not broken
                and "\n" not in partial):
            typer.echo("\r\x1b[2K", nl=False, color=True)
            self._mid_line = False
            self._flush_held()
            if self._label:
                self.console.print(self._label, end="")
                self._mid_line = True
            return
        self.end_line()
        self.console.print(f"[yellow]({why}; the answer restarts)[/]")

    def end_line(self) -> None:
        if self._mid_line:
            typer.echo("")
            self._mid_line = False
            self._broken = bool(self._partial)
        self._flush_held()

    def _flush_held(self) -> None:
        held, self._held = self._held, []
        for note in held:
            self.console.print(note)

    def _text(self, text: str) -> None:
        if text:
            typer.echo(terminal_safe(text), nl=False)
            self._mid_line = not text.endswith("\n")
            self._partial.append(text)

    # complexity: one branch per SSE event kind of a run; a table of handlers would
    # share the printer's state through arguments for no gain.
    def handle(self, frame: SSEEvent) -> None:
        self.run_id = self.run_id or frame.run_id
        data: Any = frame.data if isinstance(frame.data, dict) else {}
        payload: Any = data.get("data") if isinstance(data.get("data"), dict) else {}
        if frame.event == "token":
            if data.get("reset"):
                # The model call was retried or fell back and answers differently.
                self._restart("model call retried")
            elif self._steered is not None and (frame.id or 0) >= self._steered:
                self._restart("a message was steered in")
            self._text(str(data.get("text", "")))
            self._streamed = True
        elif frame.event == "waiting":
            self.end_line()
            self.console.print(f"[yellow]({escape(waiting_line(data))})[/]")
        elif frame.event == "message.user":
            self._inputs += 1
            if payload.get("steer") or self._inputs > 1:
                content = str(payload.get("content") or "")
                note = f"[dim](steered in: {escape(short(content, 200))})[/]"
                if self._partial and frame.id is not None:
                    # Said once the streaming answer is done with (finished or dropped).
                    self._steered = frame.id
                    self._held.append(note)
                else:
                    self.end_line()
                    self.console.print(note)
        elif frame.event in ("model.outage", "model.recovered"):
            self.end_line()
            if frame.event == "model.outage":
                self.console.print("[yellow](every model is unavailable; the run waits "
                                   "for one to answer)[/]")
            else:
                self.console.print(f"[yellow](model {escape(str(payload.get('model')))} "
                                   "answered again)[/]")
        elif frame.event in ("approval.requested", "approval.decided"):
            self.end_line()
            approval = escape(str(payload.get("approval_id") or ""))
            if frame.event == "approval.requested":
                self.console.print(
                    f"[yellow](waiting for approval of {escape(str(payload.get('name')))}: "
                    f"{escape(str(payload.get('reason') or ''))}; in another terminal: "
                    f"agentd approve {approval} or agentd deny {approval})[/]")
            else:
                by = payload.get("by")
                self.console.print(f"[yellow]({escape(str(payload.get('action')))}"
                                   f"{' by ' + escape(str(by)) if by else ''})[/]")
        elif frame.event == "message.assistant":
            if not self._streamed:
                self._text(str(payload.get("text") or ""))
            self._streamed = False
            self.end_line()
            self._partial, self._steered, self._broken = [], None, False
        elif frame.event == "tool_start":
            self.end_line()
            self.console.print(tool_call_line(payload.get("name"), payload.get("arguments")))
        elif frame.event == "tool_end":
            self.end_line()
            self.console.print(tool_result_line(payload))
        elif frame.event == "done":
            self.end_line()
            kind = data.get("kind", "")
            if kind in ("run.cancelled", "run.interrupted"):
                reason = payload.get("reason")
                label = kind.removeprefix("run.")
                self.console.print(
                    f"[yellow]({label}{': ' + escape(str(reason)) if reason else ''})[/]"
                )
        elif frame.event == "error":
            self.end_line()
            self.failed = True
            self.errors.print(f"[bold red]error:[/] {escape(failure_line(error_of(data)))}")


def print_help(console: Console) -> None:
    """The chat's slash commands (``/help``)."""
    console.print("[bold]commands[/]")
    for name, what in SLASH_COMMANDS:
        console.print(f"  [bold]{escape(name)}[/]  {escape(what)}")
    console.print("[dim]  anything else is sent to the agent; Ctrl-C stops a reply[/]")


def stream_reply(client: Client, agent: str, key: str, text: str, printer: ReplyPrinter) -> None:
    """Send ``text`` and print the reply as it streams; Ctrl-C cancels the run."""
    frames = client.stream(agent, key, text)
    try:
        for frame in frames:
            printer.handle(frame)
    except KeyboardInterrupt:
        printer.end_line()
        frames.close()
        if printer.run_id:
            client.cancel_run(printer.run_id)
        printer.console.print("[yellow](reply cancelled)[/]")
    finally:
        frames.close()
        printer.end_line()


def _read_line(console: Console, interactive: bool) -> str | None:
    if interactive:
        try:
            return console.input("[bold cyan]you>[/] ")
        except EOFError:
            typer.echo("")
            return None
    line = sys.stdin.readline()
    return line if line else None


def chat(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Agent to talk to.")],
    session: Annotated[
        str, typer.Option("--session", "-s", help="Session key; the same key continues a chat.")
    ] = "cli",
) -> None:
    """Chat with an agent interactively; replies stream as they are written.

    Type a message and press Enter. [bold]/help[/] lists the chat's commands;
    [bold]/exit[/] or Ctrl-D leaves; Ctrl-C stops the current reply. Tool calls
    and results are shown dimmed. Lines can also be piped in, one message each.

    [bold]Examples[/]
      $ agentd chat demo
      $ agentd chat demo --session user:42
      $ printf 'hi\\n/tool calculator {"expression": "2+2"}\\n' | agentd chat demo
    """
    console, errors = out(), err()
    interactive = sys.stdin.isatty()
    with connect(ctx, timeout=30.0) as client:
        client.get_agent(name)  # fail fast on a typo
        if interactive:
            console.print(
                f"[dim][bold]{escape(name)}[/] · session {escape(session)} · "
                "/help for commands, /exit or Ctrl-D to leave, Ctrl-C to stop a reply[/]"
            )
        while True:
            try:
                line = _read_line(console, interactive)
            except KeyboardInterrupt:
                typer.echo("")
                break
            if line is None:
                break
            text = line.strip()
            if not text:
                continue
            if text in _EXIT_COMMANDS:
                break
            if text in ("/help", "/?"):
                print_help(console)
                continue
            printer = ReplyPrinter(console, errors)
            if interactive:
                printer.begin(f"[bold green]{escape(name)}>[/] ")
            try:
                stream_reply(client, name, session, text, printer)
            except APIError as exc:
                errors.print(f"[bold red]error:[/] {escape(describe_api_error(exc))}")
