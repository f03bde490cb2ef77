"""What exporting a run's spans costs the daemon's CPU, in-process, by batch size.

    python bench/traces_send.py

A one-step run's spans (``invoke_agent`` and one ``chat``, as bench/turns.py's echo
turns make) are built from its events (:func:`build_run_spans`) and sent with
:class:`OtlpSender` (the official OTLP/HTTP exporter) to ``bench/_otlp_receiver.py``
in a process of its own, in batches of 1, 4, 16 and 64 runs; CPU time of this process
(``time.process_time``) per run for each, and for 64 runs the split between making
the SDK's ``ReadableSpan`` s and encoding them to protobuf. Then, on a real store
(SQLite, ``AGENTD_STORE`` as set; a runtime in a temporary home runs 1,088 echo turns
over 16 sessions): the export worker's work per run in batches of 64, done in this
process (``worker_export_us_per_run``: the batch read in two queries, spans built,
sent; ``worker_read_build_us_per_run`` without sending), and what the daemon itself
spends per run with a real worker process (``daemon_us_per_run``: the ids handed over
the pipe, the answer read, the export recorded). One JSON line on stdout.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from agentd.telemetry.export import OtlpSender
from agentd.telemetry.spans import RunInfo, SpanData, build_run_spans

BENCH = Path(__file__).resolve().parent
USAGE = {"input_tokens": 10, "output_tokens": 5, "cached_tokens": 0}


def run_spans(i: int) -> list[SpanData]:
    info = RunInfo(run_id=f"r{i}", session_id="s", agent_id="a", agent_name="bench",
                   session_key="k", status="completed", created_at=1.0, started_at=1.1,
                   finished_at=1.2, trace_id="ab" * 16)
    step = {"text": "echo", "tool_calls": [], "usage": USAGE, "finish_reason": "stop",
            "model": "scripted", "step": 1, "duration_ms": 1.0, "ttfc_ms": 0.5,
            "queue": {"class": "interactive", "wait_ms": 0.1}}
    return build_run_spans(info, [("message.user", {"content": "hi"}, 1.0),
                                  ("run.started", {}, 1.1),
                                  ("message.assistant", step, 1.15),
                                  ("run.completed", {"output": "echo", "steps": 1,
                                                     "usage": USAGE}, 1.2)])


def cpu_per(fn: object, n: int) -> float:
    start = time.process_time()
    for _ in range(n):
        fn()  # type: ignore[operator]
    return (time.process_time() - start) / n


async def _follower(port: int, n: int = 1088) -> dict[str, float]:
    import tempfile

    from agentd.assembly import Runtime
    from agentd.config import load_settings
    from agentd.telemetry.follower import Traces, TraceSettings
    from agentd.telemetry.source import SpanSource

    with tempfile.TemporaryDirectory() as home:
        settings_ = load_settings(home=Path(home), demo_agent=False)
        runtime = await Runtime.open(settings_)
        await runtime.start()
        try:
            await runtime.create_agent(name="bench", model="scripted")
            ids = [(await runtime.send("bench", f"k{i % 16}", f"hello {i}")).run.id
                   for i in range(n)]
            await runtime.wait_idle()
            ids.reverse()  # newest first: what a follower that keeps up reads
            settings = TraceSettings(exporter="otlp", endpoint=f"http://127.0.0.1:{port}",
                                     protocol="http/protobuf", service_name="bench",
                                     capture_content=False, legacy=False)
            # The worker's work, in this process: read a batch, build, send.
            source = SpanSource(runtime.store)
            sender = OtlpSender(settings.endpoint, settings.protocol, service_name="bench")
            half = n // 2
            start = time.process_time()
            for i in range(64, half, 64):
                batch = await source.batch(ids[i:i + 64])
                assert sender.send(batch.spans)
            worker = (time.process_time() - start) / (half - 64)
            start = time.process_time()
            for i in range(64, half, 64):
                await source.batch(ids[i:i + 64])
            read = (time.process_time() - start) / (half - 64)
            sender.close()
            # The daemon's side with a real worker process: hand the ids over the
            # pipe, record the answer (the worker's CPU is not this process's).
            traces = Traces(runtime.store, runtime.bus, settings,
                            database_url=settings_.database_url,
                            store_options=settings_.store_options())
            traces.start()
            assert await traces._export_ids(ids[half:half + 64])  # (starts the worker)
            start = time.process_time()
            for i in range(half + 64, n, 64):
                assert await traces._export_ids(ids[i:i + 64])
            daemon = (time.process_time() - start) / (n - half - 64)
            await traces.stop()
        finally:
            await runtime.close()
    return {"worker_export_us_per_run": round(worker * 1e6, 1),
            "worker_read_build_us_per_run": round(read * 1e6, 1),
            "daemon_us_per_run": round(daemon * 1e6, 1)}


def main() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    receiver = subprocess.Popen([sys.executable, str(BENCH / "_otlp_receiver.py"),
                                 "--port", str(port)], stdout=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/stats", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        sender = OtlpSender(f"http://127.0.0.1:{port}", "http/protobuf",
                            service_name="bench")
        out: dict[str, object] = {"bench": "traces_send", "spans_per_run": 2}
        out["build_us_per_run"] = round(cpu_per(lambda: run_spans(0), 2000) * 1e6, 1)
        for batch in (1, 4, 16, 64):
            spans = [s for i in range(batch) for s in run_spans(i)]
            sender.send(spans)
            n = max(20, 800 // batch)
            out[f"send_us_per_run_batch_{batch}"] = round(
                cpu_per(lambda spans=spans: sender.send(spans), n) / batch * 1e6, 1)
        from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

        spans = [s for i in range(64) for s in run_spans(i)]
        readable = [sender._readable(s) for s in spans]
        out["readable_us_per_span"] = round(cpu_per(
            lambda: [sender._readable(s) for s in spans], 50) / len(spans) * 1e6, 1)
        out["encode_us_per_span"] = round(cpu_per(
            lambda: encode_spans(readable).SerializeToString(), 50) / len(spans) * 1e6, 1)
        sender.close()
        out.update(asyncio.run(_follower(port)))
        print(json.dumps(out))
    finally:
        receiver.terminate()
        receiver.wait(10)


if __name__ == "__main__":
    main()
