"""``agentd logs``: the daemon's log file, filtered, and followed like ``tail -f``.

A JSON log (``[telemetry] log_format = "json"``) is filtered by its fields: the
agent, session and run a line was written for, its level and its time. A text log's
lines are matched by substring for the ids (its level and time are read from the
line's start when it has the daemon's text format). Lines that are neither (``agentd
start``'s marker, a crash's traceback) pass when no filter is given, and are matched
by substring like text lines otherwise.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Annotated, Any

import typer

from agentd.cli._common import err, fail, load_settings_or_fail
from agentd.cli._safe import dumps, terminal_safe

__all__ = ["logs"]

_LEVELS = {"DEBUG": 10, "INFO": 20, "WARNING": 30, "WARN": 30, "ERROR": 40, "CRITICAL": 50}
#: The text format's start: ``2025-01-31 12:00:00,123 LEVEL logger: message``.
_TEXT = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) ([A-Z]+) ")
_SPAN = re.compile(r"^(\d+(?:\.\d+)?)([smhd])\Z")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86_400}
#: How often ``--follow`` looks for new lines.
_POLL_S = 0.2


@dataclass(frozen=True, slots=True)
class _Filter:
    agent: str | None
    session: str | None
    run: str | None
    level: int
    since: float | None  # a Unix time

    @property
    def ids(self) -> bool:
        return any((self.agent, self.session, self.run))

    def passes(self, line: str, record: dict[str, Any] | None) -> bool:
        if record is not None:
            return self._passes_json(record)
        wanted = [v for v in (self.agent, self.session, self.run) if v]
        if any(v not in line for v in wanted):
            return False
        match = _TEXT.match(line)
        if match is None:
            return not (self.level or self.since is not None)
        if _LEVELS.get(match.group(3), 0) < self.level:
            return False
        if self.since is not None:
            local = datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S").astimezone()
            return local.timestamp() + int(match.group(2)) / 1000 >= self.since
        return True

    def _passes_json(self, record: dict[str, Any]) -> bool:
        if self.agent and self.agent not in (record.get("agent"), record.get("agent_id")):
            return False
        if self.session and self.session not in (record.get("session"),
                                                 record.get("session_id")):
            return False
        if self.run and record.get("run_id") != self.run:
            return False
        if self.level and _LEVELS.get(str(record.get("level")), 0) < self.level:
            return False
        if self.since is not None:
            stamp = _json_time(record.get("time"))
            return stamp is not None and stamp >= self.since
        return True


def _json_time(value: object) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _since(value: str | None) -> float | None:
    """``--since``: a span back from now (``30s``, ``10m``, ``2h``, ``1d``) or an ISO
    8601 time (local time without a zone)."""
    if value is None:
        return None
    span = _SPAN.match(value.strip())
    if span:
        return time.time() - float(span.group(1)) * _UNIT[span.group(2)]
    try:
        moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        fail(f"--since {value!r}: give a span (30s, 10m, 2h, 1d) or an ISO 8601 time "
             "(2025-01-31T12:00, 2025-01-31T12:00:00Z)")
    return (moment if moment.tzinfo else moment.astimezone()).timestamp()


def _parse(line: str) -> dict[str, Any] | None:
    if not line.startswith("{"):
        return None
    try:
        record = json.loads(line)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def _render(line: str, record: dict[str, Any] | None, as_json: bool) -> str:
    if as_json:
        return line if record is not None else dumps({"text": line})
    if record is None:
        return terminal_safe(line)
    where = " ".join(f"{key}={record[key]}" for key in ("agent", "session", "run_id")
                     if record.get(key))
    text = (f"{record.get('time', '')} {record.get('level', '')} {record.get('logger', '')}"
            f"{' [' + where + ']' if where else ''}: {record.get('message', '')}")
    if record.get("exception"):
        text += "\n" + str(record["exception"])
    return terminal_safe(text)


def _lines(handle: IO[bytes], tail: bytes = b"") -> tuple[list[str], bytes]:
    """The complete lines from where ``handle`` is (after ``tail``, what was left of
    the last read) and what is left this time: an unfinished last line."""
    *whole, rest = (tail + handle.read()).split(b"\n")
    return [raw.decode("utf-8", "replace") for raw in whole], rest


def logs(
    follow: Annotated[bool, typer.Option(
        "--follow", "-f", help="Keep printing lines as the daemon writes them (Ctrl-C ends).")
    ] = False,
    agent: Annotated[str | None, typer.Option(
        "--agent", "-a", help="Lines written for this agent (name or id).")] = None,
    session: Annotated[str | None, typer.Option(
        "--session", "-s", help="Lines written for this session (key or id).")] = None,
    run: Annotated[str | None, typer.Option(
        "--run", "-r", help="Lines written for this run.")] = None,
    level: Annotated[str | None, typer.Option(
        "--level", "-l", help="This level and above: DEBUG, INFO, WARNING, ERROR, CRITICAL.",
        case_sensitive=False)] = None,
    since: Annotated[str | None, typer.Option(
        "--since", help="Lines from this time on: a span back from now (30s, 10m, 2h, 1d) "
                        "or an ISO 8601 time.")] = None,
    limit: Annotated[int, typer.Option(
        "--limit", "-n", min=0, help="The last N matching lines first (0: every one).")
    ] = 100,
    as_json: Annotated[bool, typer.Option(
        "--json", help="Print the matching lines as the JSON objects they are, one a line "
                       "(a text line as {\"text\": ...}).")] = False,
    file: Annotated[Path | None, typer.Option(
        "--file", help="Read this log file. [dim]\\[default: $AGENTD_HOME/agentd.log][/]",
        show_default=False)] = None,
) -> None:
    """Show the daemon's log, filtered by agent, session, run, level or time.

    Reads the log [bold]agentd start[/] writes ($AGENTD_HOME/agentd.log). Filters by
    agent, session and run need [bold]\\[telemetry] log_format = "json"[/]: every line
    logged for a run then names it (a text log's lines are matched by substring).

    [bold]Examples[/]
      $ agentd logs -f
      $ agentd logs --run run_01J... --level debug
      $ agentd logs --agent mybot --since 10m --json | jq .message
    """
    if level is not None and level.upper() not in _LEVELS:
        fail(f"--level {level!r}: one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
    path = file if file is not None else load_settings_or_fail().log_file
    wanted = _Filter(agent=agent, session=session, run=run,
                     level=_LEVELS[level.upper()] if level else 0, since=_since(since))
    try:
        handle = path.open("rb")
    except FileNotFoundError:
        fail(f"no log file at {path}: `agentd start` writes one there (a daemon run with "
             "`agentd serve` logs to its terminal); --file names another")
    except OSError as exc:
        fail(f"cannot read {path}: {exc}")
    with handle:
        shown: deque[str] = deque(maxlen=limit or None)
        seen_json = False
        rest = b""
        for raw in handle:  # (line by line: a log may be large)
            if not raw.endswith(b"\n"):
                rest = raw  # unfinished: --follow prints it once it is whole
                break
            line = raw[:-1].decode("utf-8", "replace")
            record = _parse(line)
            seen_json = seen_json or record is not None
            if wanted.passes(line, record):
                shown.append(_render(line, record, as_json))
        _write(shown)
        if wanted.ids and not seen_json and handle.tell() > 0:
            err().print("[yellow]note:[/] the log holds no JSON lines; --agent, --session "
                        "and --run match text lines by substring. Set [telemetry] "
                        "log_format = \"json\" for lines that name their run.")
        if follow:
            with contextlib.suppress(KeyboardInterrupt):
                _follow(path, handle, rest, wanted, as_json)


def _write(lines: Iterable[str]) -> None:
    try:
        for text in lines:
            sys.stdout.write(text + "\n")
        sys.stdout.flush()
    except BrokenPipeError:  # (``agentd logs | head``): the reader has what it wanted
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise typer.Exit(0) from None


def _follow(path: Path, handle: IO[bytes], rest: bytes, wanted: _Filter,
            as_json: bool) -> None:
    """Print new matching lines as they come; start over when the file is replaced
    or truncated (log rotation)."""
    try:
        while True:
            time.sleep(_POLL_S)
            try:
                now = path.stat()
            except FileNotFoundError:
                continue  # (rotated away: the next one appears)
            current = os.fstat(handle.fileno())
            if (now.st_ino, now.st_dev) != (current.st_ino, current.st_dev) \
                    or now.st_size < handle.tell():
                handle.close()
                handle = path.open("rb")
                rest = b""
            if now.st_size == handle.tell():
                continue
            found, rest = _lines(handle, rest)
            _write([_render(line, record, as_json) for line in found
                    if wanted.passes(line, record := _parse(line))])
    finally:
        handle.close()
