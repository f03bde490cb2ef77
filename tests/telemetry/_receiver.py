"""A real OTLP trace receiver for the tests: OTLP/HTTP (protobuf and JSON) and OTLP/gRPC,
decoding with ``opentelemetry-proto``'s own message types (what a collector runs), the
spans kept for the test to read. ``refuse`` makes it answer 503 (HTTP) or UNAVAILABLE
(gRPC), as a receiver that is down would."""

from __future__ import annotations

import base64
import json
import threading
from concurrent import futures
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc
from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc


def parse_otlp_json(document: bytes | dict[str, Any]
                    ) -> trace_service_pb2.ExportTraceServiceRequest:
    """An OTLP/JSON trace request as the protobuf message. OTLP/JSON writes trace and
    span ids in hex, where protobuf's own JSON mapping has base64 (the OTLP
    specification, "JSON Protobuf Encoding"): collectors convert them, so do we."""
    data = json.loads(document) if isinstance(document, bytes) else document
    for resource in data.get("resourceSpans", []):
        for scope in resource.get("scopeSpans", []):
            for span in scope.get("spans", []):
                for key in ("traceId", "spanId", "parentSpanId"):
                    if span.get(key):
                        span[key] = base64.b64encode(bytes.fromhex(span[key])).decode()
    request = trace_service_pb2.ExportTraceServiceRequest()
    json_format.ParseDict(data, request)
    return request


@dataclass
class Span:
    trace_id: str
    span_id: str
    parent_id: str
    name: str
    kind: int
    start_ns: int
    end_ns: int
    status: int
    attributes: dict[str, Any]
    service: str


def _value(v: Any) -> Any:
    which = v.WhichOneof("value")
    if which == "array_value":
        return [_value(x) for x in v.array_value.values]
    return getattr(v, which) if which else None


@dataclass
class Receiver:
    spans: list[Span] = field(default_factory=list)
    requests: int = 0
    refuse: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)
    changed: threading.Condition = field(init=False)

    def __post_init__(self) -> None:
        self.changed = threading.Condition(self.lock)

    def take(self, request: trace_service_pb2.ExportTraceServiceRequest) -> None:
        got: list[Span] = []
        for resource in request.resource_spans:
            service = next((_value(a.value) for a in resource.resource.attributes
                            if a.key == "service.name"), "")
            for scope in resource.scope_spans:
                for s in scope.spans:
                    got.append(Span(
                        trace_id=s.trace_id.hex(), span_id=s.span_id.hex(),
                        parent_id=s.parent_span_id.hex(), name=s.name, kind=s.kind,
                        start_ns=s.start_time_unix_nano, end_ns=s.end_time_unix_nano,
                        status=s.status.code,
                        attributes={a.key: _value(a.value) for a in s.attributes},
                        service=str(service)))
        with self.changed:
            self.requests += 1
            self.spans.extend(got)
            self.changed.notify_all()

    def wait_for(self, predicate: Any, timeout: float = 60.0) -> list[Span]:
        with self.changed:
            if not self.changed.wait_for(lambda: predicate(self.spans), timeout):
                raise AssertionError(f"spans not received; have {[s.name for s in self.spans]}")
            return list(self.spans)


class _Handler(BaseHTTPRequestHandler):
    receiver: Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        if self.path != "/v1/traces":
            self.send_response(404)
            self.end_headers()
            return
        if self.receiver.refuse:
            self.send_response(503)
            self.end_headers()
            return
        if self.headers.get("content-type", "").startswith("application/json"):
            request = parse_otlp_json(body)
        else:
            request = trace_service_pb2.ExportTraceServiceRequest()
            request.ParseFromString(body)
        self.receiver.take(request)
        reply = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *args: Any) -> None:
        pass


class HttpReceiver:
    def __init__(self) -> None:
        self.receiver = Receiver()
        handler = type("Handler", (_Handler,), {"receiver": self.receiver})
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class _Servicer(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, receiver: Receiver) -> None:
        self.receiver = receiver

    def Export(self, request: Any, context: Any) -> Any:
        if self.receiver.refuse:
            context.abort(grpc.StatusCode.UNAVAILABLE, "down")
        self.receiver.take(request)
        return trace_service_pb2.ExportTraceServiceResponse()


class GrpcReceiver:
    def __init__(self) -> None:
        self.receiver = Receiver()
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(
            _Servicer(self.receiver), self.server)
        port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()
        self.url = f"http://127.0.0.1:{port}"

    def close(self) -> None:
        self.server.stop(grace=None)


__all__ = ["GrpcReceiver", "HttpReceiver", "Receiver", "Span", "parse_otlp_json"]
