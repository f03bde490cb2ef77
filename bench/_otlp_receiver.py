"""A local OTLP/HTTP trace receiver for bench/traces.py, in a process of its own.

    python bench/_otlp_receiver.py --port 4318

Answers ``POST /v1/traces`` (protobuf) with 200 and an empty
``ExportTraceServiceResponse``, counting requests and spans by name
(``GET /stats``: ``{"requests": N, "spans": N, "invoke_agent": N, "chat": N,
"execute_tool": N}``), so the bench can tell how many model calls (``chat`` spans)
each run (``invoke_agent`` span) made. ``opentelemetry-proto`` decodes the body, as a
collector would.
"""

from __future__ import annotations

import argparse
import json
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

_COUNTS: Counter[str] = Counter()
_LOCK = threading.Lock()
_REPLY = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the exporter's session expects

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        if self.path != "/v1/traces":
            self.send_response(404)
            self.send_header("content-length", "0")
            self.end_headers()
            return
        request = trace_service_pb2.ExportTraceServiceRequest()
        request.ParseFromString(body)
        names: Counter[str] = Counter()
        for resource in request.resource_spans:
            for scope in resource.scope_spans:
                for span in scope.spans:
                    names[span.name.partition(" ")[0]] += 1
        with _LOCK:
            _COUNTS["requests"] += 1
            _COUNTS["spans"] += sum(names.values())
            _COUNTS.update(names)
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", str(len(_REPLY)))
        self.end_headers()
        self.wfile.write(_REPLY)

    def do_GET(self) -> None:
        with _LOCK:
            body = json.dumps(dict(_COUNTS)).encode()
        self.send_response(200 if self.path == "/stats" else 404)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, required=True)
    args = p.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", args.port), _Handler)
    server.daemon_threads = True
    print(f"listening on {args.port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
