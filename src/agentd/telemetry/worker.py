"""The export worker: a process of its own that turns finished runs into spans and
sends them over OTLP, so that the serving process pays nothing per run for traces.

The daemon (:class:`agentd.telemetry.follower.Traces`) starts it when traces are on
and talks to it over its standard input and output, one JSON document a line:

- first the daemon sends the configuration: ``{"database_url", "store": {...},
  "traces": {...}, "secrets": [...]}`` (secrets: the values content capture redacts;
  sent over the pipe, never in the command line or the environment);
- the worker opens the same database for reading, builds the official OTLP exporter and
  answers ``{"ready": true}`` (or ``{"fatal": "..."}`` and exits);
- then, for each ``{"seq": N, "ids": [...]}`` of finished runs, it reads them in two
  queries, builds their spans (:class:`agentd.telemetry.source.SpanSource`), exports
  them and answers ``{"seq": N, "runs": [[id, created_at], ...], "dropped": [...],
  "error": null | "..."}``: ``runs`` were exported (the daemon records them),
  ``dropped`` have nothing to export, an ``error`` means the receiver did not take them
  (the daemon retries them later).

It exits when its input closes (the daemon stopped or died). It runs at a lower
priority (``nice`` 10): when the machine is short of CPU, serving turns comes first and
the export falls behind; the runs wait in the log, not in memory, and go once the
machine has time (docs/design-notes.md, "Traces in a process of their own").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from agentd.telemetry.export import OtlpSender
    from agentd.telemetry.source import SpanSource

__all__ = ["ExportWorker", "Reply", "WorkerError", "main"]

log = logging.getLogger(__name__)

#: How long the worker may take to open the store and build its exporter.
_READY_S = 60.0
#: How long one batch may take (the exporter's own timeout is 10 s, retried inside).
_REPLY_S = 120.0
_LINE_LIMIT = 64 * 1024 * 1024


class WorkerError(Exception):
    """The worker could not start, died, or did not answer."""


@dataclass(frozen=True, slots=True)
class Reply:
    runs: list[tuple[str, float]]
    dropped: list[str]
    error: str | None


class ExportWorker:
    """The daemon's handle on the worker process: started on first use, started again
    after it dies (each batch is a request and its answer: nothing is lost with it)."""

    def __init__(self, config: dict[str, Any], *, nice: int = 10) -> None:
        self._config = config
        self._nice = nice
        self._proc: asyncio.subprocess.Process | None = None
        self._seq = 0
        self.starts = 0

    @property
    def pid(self) -> int | None:
        proc = self._proc
        return proc.pid if proc is not None and proc.returncode is None else None

    async def _spawn(self) -> asyncio.subprocess.Process:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "agentd.telemetry.worker", str(self._nice),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            limit=_LINE_LIMIT)
        assert proc.stdin is not None and proc.stdout is not None
        self.starts += 1
        try:
            proc.stdin.write(orjson.dumps(self._config) + b"\n")
            await proc.stdin.drain()
            line = await asyncio.wait_for(proc.stdout.readline(), _READY_S)
            answer = orjson.loads(line) if line else {}
        except (OSError, TimeoutError, orjson.JSONDecodeError) as exc:
            await _end(proc)
            raise WorkerError(f"the export worker did not start: {exc!r}") from exc
        if not isinstance(answer, dict) or answer.get("ready") is not True:
            await _end(proc)
            reason = answer.get("fatal") if isinstance(answer, dict) else None
            raise WorkerError(f"the export worker did not start: {reason or 'it exited'}")
        return proc

    async def export(self, ids: list[str]) -> Reply:
        """Have the worker export the runs ``ids``; raises :class:`WorkerError` if it
        cannot (it is started again on the next call)."""
        if self._proc is None or self._proc.returncode is not None:
            self._proc = None
            self._proc = await self._spawn()
        proc = self._proc
        assert proc.stdin is not None and proc.stdout is not None
        self._seq += 1
        seq = self._seq
        try:
            proc.stdin.write(orjson.dumps({"seq": seq, "ids": ids}) + b"\n")
            await proc.stdin.drain()
            while True:  # (answers to requests a cancellation left behind are skipped)
                line = await asyncio.wait_for(proc.stdout.readline(), _REPLY_S)
                if not line:
                    raise WorkerError(f"the export worker exited ({await _end(proc, 1.0)})")
                answer = orjson.loads(line)
                if not isinstance(answer, dict):
                    raise WorkerError(f"the export worker answered {line[:100]!r}")
                if answer.get("seq") == seq:
                    break
        except (OSError, TimeoutError, orjson.JSONDecodeError) as exc:
            await _end(proc)
            raise WorkerError(f"the export worker failed: {exc!r}") from exc
        except WorkerError:
            await _end(proc)
            self._proc = None
            raise
        return Reply(runs=[(str(r[0]), float(r[1])) for r in answer.get("runs") or ()],
                     dropped=[str(i) for i in answer.get("dropped") or ()],
                     error=answer.get("error"))

    async def close(self, timeout_s: float = 10.0) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            await _end(proc, timeout_s)


async def _end(proc: asyncio.subprocess.Process, timeout_s: float = 5.0) -> str:
    """Close the worker's input (it exits at its end), kill it if it does not: how it
    ended."""
    if proc.stdin is not None:
        with contextlib.suppress(OSError):
            proc.stdin.close()
    try:
        code = await asyncio.wait_for(proc.wait(), timeout_s)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        code = await proc.wait()
    return f"exit code {code}"


# -- the worker process ------------------------------------------------------------------


async def _serve(out: IO[bytes]) -> int:
    from agentd.security.tokens import undumpable
    from agentd.store import Store, StoreOptions, engine_for_url
    from agentd.telemetry.export import OtlpSender
    from agentd.telemetry.logs import Redactor
    from agentd.telemetry.source import SpanSource

    undumpable()  # (it holds the redaction's secrets)

    def answer(doc: dict[str, Any]) -> None:
        out.write(orjson.dumps(doc) + b"\n")
        out.flush()

    reader = asyncio.StreamReader(limit=_LINE_LIMIT)
    await asyncio.get_running_loop().connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    first = await reader.readline()
    if not first:
        return 0
    config = orjson.loads(first)
    traces = config["traces"]
    try:
        options = StoreOptions(synchronous=config["store"].get("synchronous"),
                               sqlite_writer="thread", sqlite_cache_mb=16)
        store = Store(engine_for_url(config["database_url"], options))
        await store.engine.start()  # (reads only: the daemon has migrated it)
        sender = OtlpSender(traces["endpoint"], traces["protocol"],
                            service_name=traces["service_name"])
    except Exception as exc:
        answer({"fatal": f"{type(exc).__name__}: {exc}"[:500]})
        return 1
    capture = bool(traces.get("capture_content"))
    source = SpanSource(store, capture_content=capture, legacy=bool(traces.get("legacy")),
                        redact=Redactor(config.get("secrets") or ()) if capture else None)
    answer({"ready": True})
    try:
        while line := await reader.readline():
            request = orjson.loads(line)
            answer({"seq": request.get("seq"),
                    **await _export(source, sender, [str(i) for i in request["ids"]])})
    finally:
        await asyncio.to_thread(sender.close)
        await store.close()
    return 0


async def _export(source: SpanSource, sender: OtlpSender, ids: list[str]
                  ) -> dict[str, Any]:
    def failed(run_id: str, exc: BaseException) -> None:
        log.error("the spans of run %s could not be built: %r", run_id, exc)

    try:
        batch = await source.batch(ids, on_error=failed)
    except Exception as exc:
        log.exception("could not read the runs to export")
        return {"runs": [], "dropped": [], "error": f"reading the runs: {exc!r}"[:300]}
    error: str | None = None
    if batch.spans:
        try:
            if not await asyncio.to_thread(sender.send, batch.spans):
                error = "the receiver did not take the spans"
        except Exception as exc:  # the exporter's own errors: retried like a refusal
            error = f"{type(exc).__name__}: {exc}"[:300]
    return {"runs": [] if error else batch.runs, "dropped": batch.dropped, "error": error}


def main() -> int:
    """``python -m agentd.telemetry.worker [NICE]``: started by the daemon only."""
    # The protocol has standard output to itself; anything printed goes to stderr.
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="agentd trace worker: %(levelname)s %(name)s: %(message)s")
    with contextlib.suppress(ValueError, IndexError, OSError):
        os.nice(int(sys.argv[1]))
    return asyncio.run(_serve(out))


if __name__ == "__main__":
    raise SystemExit(main())
