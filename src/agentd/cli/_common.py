"""What every CLI command shares: global options, consoles, settings, error handling."""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.text import Text

from agentd.cli._safe import SafeConsole, dumps
from agentd.client import APIError, Client, ClientError
from agentd.client.base import local_url
from agentd.security.tokens import read_token

if TYPE_CHECKING:
    from agentd.config import Settings

#: Run statuses after which a run never changes again.
TERMINAL_STATUSES = frozenset({"completed", "failed", "cancelled", "interrupted"})

NameArg = Annotated[str, typer.Argument(help="Agent name.", show_default=False)]
#: The same with AGENT in the usage line (the command groups: schedule, skill, ...).
AgentArg = Annotated[str, typer.Argument(metavar="AGENT", help="Agent name.",
                                         show_default=False)]
JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
SessionOption = Annotated[str, typer.Option("--session", "-s", help="Session key, e.g. user:42.")]
VerboseOption = Annotated[
    bool, typer.Option("--verbose", "-v", help="Show every event, with its seq.")
]


@dataclass
class State:
    """Global options given to the root command (``--url``, ``--token``)."""

    url: str | None = None
    token: str | None = None


def state(ctx: typer.Context) -> State:
    obj = ctx.find_root().obj
    return obj if isinstance(obj, State) else State()


def out() -> Console:
    """Console on stdout. Built per call so tests that swap sys.stdout see the output."""
    return SafeConsole(highlight=False, soft_wrap=False)


def err() -> Console:
    return SafeConsole(stderr=True, highlight=False)


def fail(message: str, code: int = 1) -> NoReturn:
    """Print ``error: message`` on stderr and exit with ``code``."""
    err().print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True)
    raise typer.Exit(code)


def echo_json(value: Any) -> None:
    """Print JSON exactly (no markup, no wrapping) so it pipes into jq.

    What ``--json`` prints follows one rule (docs/cli.md, "JSON output"): the API's
    object for a command that shows or changes one thing, a JSON array of the API's
    objects for a command that lists things (never the API's page wrapper).
    """
    typer.echo(dumps(value, indent=2))


def more_hint(text: str, as_json: bool) -> None:
    """Say that a list stopped short and how to get the rest: dimmed on stdout under a
    table, on stderr with ``--json`` (stdout then holds the JSON array alone)."""
    if as_json:
        err().print(Text(text), soft_wrap=True)
    else:
        out().print(Text(text, style="dim"), soft_wrap=True)


def more_command(words: list[str], as_json: bool, *, lead: str = "more") -> None:
    """:func:`more_hint` naming the command that shows the next page (``words``, with
    ``--json`` again when this one had it)."""
    more_hint(f"{lead}: {shlex.join([*words, *(['--json'] if as_json else [])])}", as_json)


def describe_api_error(exc: APIError) -> str:
    """One line for an error the daemon returned."""
    text = exc.message
    problems = exc.details.get("errors")
    if isinstance(problems, list) and problems:
        parts = []
        for item in problems:
            if isinstance(item, dict):
                field = str(item.get("field", "")).removeprefix("body.")
                message = str(item.get("message", ""))
                if message and message in text:
                    continue  # the message already says it; do not repeat it
                parts.append(f"{field}: {message}" if field else str(item))
        if parts and "; ".join(parts) not in text:
            text = f"{text} ({'; '.join(parts)})"
    text = f"{text} [{exc.code}]"
    if exc.status == 401:
        text += "; set AGENTD_TOKEN or pass --token"
    elif exc.retryable:
        text += " (retryable)"
    return text


def load_settings_or_fail() -> Settings:
    """The daemon's settings (env, .env, agentd.toml), or a clean error."""
    from pydantic import ValidationError

    from agentd.config import ConfigFileError, load_settings, settings_problem

    try:
        return load_settings()
    except (ConfigFileError, ValidationError) as exc:
        fail(f"invalid agentd configuration: {settings_problem(exc)}")


def target(ctx: typer.Context) -> tuple[str, str | None]:
    """The daemon URL and token to use.

    ``--url`` / ``AGENTD_URL`` win; otherwise the local daemon as configured by
    AGENTD_HOST / AGENTD_PORT / agentd.toml, whose first configured token (else the
    bootstrap token in its home) is used when none is given.
    """
    st = state(ctx)
    if st.url:
        return st.url, st.token
    settings = load_settings_or_fail()
    return local_url(settings.host, settings.port), st.token or local_token(settings)


def local_token(settings: Settings) -> str | None:
    """The token for the daemon of ``settings``: its first configured one, else the
    bootstrap token in its home (when this user may read it)."""
    return settings.tokens[0] if settings.tokens else read_token(settings.home)


@contextmanager
def api_errors() -> Iterator[None]:
    """Turn client errors into one line on stderr and exit code 1."""
    try:
        yield
    except APIError as exc:
        fail(describe_api_error(exc))
    except ClientError as exc:
        fail(str(exc))


@contextmanager
def connect(ctx: typer.Context, timeout: float = 60.0) -> Iterator[Client]:
    """A client for the daemon; its errors end the command cleanly."""
    url, token = target(ctx)
    with api_errors(), Client(url, token, timeout) as client:
        yield client


@contextmanager
def stdout_gone() -> Iterator[None]:
    """A reader that stopped early (``| head``) ends the command quietly."""
    try:
        yield
    except BrokenPipeError:
        # Python would complain again flushing stdout at exit: point it at nothing.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise typer.Exit(1) from None


def write_lines(lines: Iterable[bytes], output: Path | None) -> int:
    """Write the lines to ``output`` (through a partial file renamed when complete: a
    dropped connection never leaves a cut export under the name asked for) or stdout;
    how many were written."""
    count = 0
    if output is None:
        sink = typer.get_binary_stream("stdout")
        with stdout_gone():
            for line in lines:
                sink.write(line)
                count += 1
            sink.flush()
        return count
    partial = output.with_name(f".{output.name}.partial")
    try:
        with partial.open("wb") as handle:
            for line in lines:
                handle.write(line)
                count += 1
        partial.replace(output)
    except OSError as exc:
        fail(f"{output}: {exc.strerror or exc}")
    finally:
        partial.unlink(missing_ok=True)
    return count


def attachment(path: Path) -> dict[str, Any]:
    """An ``--attach FILE`` as the message part it sends: an image by its name's type,
    else a file (the daemon checks what the bytes are either way)."""
    import mimetypes

    from agentd.client import file, image

    try:
        guessed, _ = mimetypes.guess_type(path.name)
        if guessed is not None and guessed.startswith("image/"):
            return image(path)
        return file(path)
    except OSError as exc:
        fail(f"cannot read {path}: {exc.strerror or exc}")
