"""What a log line costs in each format (agentd.telemetry.logs).

Prints one JSON line: microseconds of CPU per line (the process's own time, best of
five passes after a warm-up) for

- ``format_*``: the formatter alone: the plain ``logging.Formatter`` the daemon used
  before (no redaction: the baseline), ``TextFormatter`` (the same line, redacted) and
  ``JsonFormatter`` outside a run and inside one (the run's ids on the line);
- ``emit_*``: a whole ``log.info(...)`` with %-arguments through a handler writing to
  an in-memory stream: what a call site pays, old text against the redacted text
  and JSON in a run.

The redactor holds 12 known secrets (a daemon with a few tokens and provider keys);
the messages are ordinary lines of the daemon, one in ten holding a bearer token.

    python bench/log_format.py
"""

from __future__ import annotations

import io
import json
import logging
import secrets
import time
from collections.abc import Callable

from agentd.logcontext import CURRENT, LogContext, default_trace_id
from agentd.telemetry.logs import JsonFormatter, Redactor, TextFormatter

LINES = 2000
MESSAGES = [
    ("run %s failed with an internal error", ("r_01a217280918c10879e833ee93ed",)),
    ("tool %s raised", ("shell",)),
    ("snapshot %s of %s: %s", ("4334dda02474426d730801b0", "a_01a2172809",
                               "SnapshotStats(files=0, bytes=0, duration_ms=3.5)")),
    ("applied migration %d: %s", (12, "heartbeats and proactive posts")),
    ("policy could not judge a %s call: %s", ("http_fetch", "no host in the URL")),
    ("webhook %s: delivery %s failed (HTTP %d), retry in %.1fs",
     ("wh_01a2", "d_01a3", 503, 5.0)),
    ("sandbox: %s (NOT isolated)", ("process",)),
    ("provider %s answered %d; retrying", ("anthropic", 529)),
    ("request refused: %s", ("Bearer agd_abcdefghij_" + "x" * 43,)),
    ("agentd %s: store %s, home %s", ("0.1.0", "sqlite:////srv/agentd.db", "/srv")),
]


def _records() -> list[logging.LogRecord]:
    return [logging.LogRecord("agentd.runtime.loop", logging.INFO, __file__, 1, message,
                              args, None)
            for message, args in (MESSAGES * (LINES // len(MESSAGES)))]


def _best_us(work: Callable[[], object], count: int) -> float:
    work()
    best = float("inf")
    for _ in range(5):
        start = time.process_time()
        work()
        best = min(best, time.process_time() - start)
    return round(best * 1e6 / count, 2)


def _format_us(formatter: logging.Formatter, records: list[logging.LogRecord]) -> float:
    def work() -> None:
        for record in records:
            formatter.format(record)

    return _best_us(work, len(records))


def _emit_us(formatter: logging.Formatter) -> float:
    logger = logging.Logger("bench")
    handler = logging.StreamHandler(io.StringIO())
    handler.setFormatter(formatter)
    logger.addHandler(handler)
    pairs = MESSAGES * (LINES // len(MESSAGES))

    def work() -> None:
        handler.stream = io.StringIO()
        for message, args in pairs:
            logger.info(message, *args)

    return _best_us(work, len(pairs))


def main() -> None:
    redactor = Redactor(secrets.token_urlsafe(32) for _ in range(12))
    records = _records()
    plain = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    text, as_json = TextFormatter(redactor), JsonFormatter(redactor)
    result = {"bench": "log_format", "lines": len(records), "known_secrets": 12,
              "format_plain_us": _format_us(plain, records),
              "format_text_us": _format_us(text, records),
              "format_json_us": _format_us(as_json, records)}
    CURRENT.set(LogContext(agent_id="a_01a21728090efd224cec2901b257", agent="mybot",
                           session_id="s_01a2172809195d07235356300754", session="user:42",
                           run_id="r_01a217280918c10879e833ee93ed",
                           trace_id=default_trace_id("r_01a217280918c10879e833ee93ed")))
    result["format_json_in_run_us"] = _format_us(as_json, records)
    result["emit_plain_us"] = _emit_us(plain)
    result["emit_text_us"] = _emit_us(TextFormatter(redactor))
    result["emit_json_in_run_us"] = _emit_us(JsonFormatter(redactor))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
