"""Spans out: OTLP JSON (by hand: no dependency) and OTLP over the wire (the official
``opentelemetry-sdk`` exporters, HTTP/protobuf or gRPC: the ``otel`` extra, imported
only when traces are on).

The JSON form is OTLP's own JSON encoding of an ``ExportTraceServiceRequest`` (ids
as hex, times as strings of nanoseconds, attributes as ``{"key", "value": {...}}``),
what ``agentd trace`` writes to a file or posts to a receiver's ``/v1/traces``; the
tests parse it with ``opentelemetry-proto``'s own message types.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from agentd.telemetry.spans import AttrValue, SpanData
from agentd.version import __version__

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import ReadableSpan

__all__ = ["SCOPE", "OtlpSender", "otlp_json", "traces_url"]

#: The instrumentation scope of every span.
SCOPE = "agentd"

_KIND_NUMBER = {"INTERNAL": 1, "SERVER": 2, "CLIENT": 3}
_STATUS_NUMBER = {"UNSET": 0, "OK": 1, "ERROR": 2}


def _value(value: AttrValue) -> dict[str, Any]:
    if isinstance(value, bool):
        return {"boolValue": value}
    if isinstance(value, int):
        return {"intValue": str(value)}
    if isinstance(value, float):
        return {"doubleValue": value}
    if isinstance(value, list):
        return {"arrayValue": {"values": [{"stringValue": str(v)} for v in value]}}
    return {"stringValue": str(value)}


def _attributes(attrs: Mapping[str, AttrValue]) -> list[dict[str, Any]]:
    return [{"key": key, "value": _value(value)} for key, value in attrs.items()]


def _ns(seconds: float) -> str:
    return str(round(seconds * 1_000_000_000))


def otlp_json(spans: Sequence[SpanData], *, service_name: str,
              resource: Mapping[str, AttrValue] | None = None) -> dict[str, Any]:
    """``spans`` as an OTLP/JSON ``ExportTraceServiceRequest``."""
    out = []
    for span in spans:
        item: dict[str, Any] = {
            "traceId": span.trace_id, "spanId": span.span_id, "name": span.name,
            "kind": _KIND_NUMBER[span.kind], "startTimeUnixNano": _ns(span.start),
            "endTimeUnixNano": _ns(span.end), "attributes": _attributes(span.attributes),
            "status": {"code": _STATUS_NUMBER[span.status]}}
        if span.parent_id:
            item["parentSpanId"] = span.parent_id
        if span.status_message:
            item["status"]["message"] = span.status_message
        out.append(item)
    attrs: dict[str, AttrValue] = {"service.name": service_name,
                                   "service.version": __version__,
                                   "telemetry.sdk.name": "agentd",
                                   "telemetry.sdk.language": "python"}
    attrs.update(resource or {})
    return {"resourceSpans": [{
        "resource": {"attributes": _attributes(attrs)},
        "scopeSpans": [{"scope": {"name": SCOPE, "version": __version__},
                        "spans": out}]}]}


def traces_url(endpoint: str) -> str:
    """The traces URL of an OTLP/HTTP endpoint: a base URL gets ``/v1/traces`` (as
    ``OTEL_EXPORTER_OTLP_ENDPOINT`` does); a URL ending in it is kept."""
    trimmed = endpoint.rstrip("/")
    return trimmed if trimmed.endswith("/v1/traces") else trimmed + "/v1/traces"


class OtlpSender:
    """Export spans with the official OTLP exporter of ``protocol`` (blocking: call
    :meth:`send` from a thread). Building one imports the SDK: only when traces are
    on."""

    def __init__(self, endpoint: str, protocol: str, *, service_name: str,
                 timeout_s: float = 10.0, headers: Mapping[str, str] | None = None) -> None:
        from opentelemetry.sdk.resources import Resource

        self.endpoint = endpoint
        self.protocol = protocol
        self._resource = Resource.create({"service.name": service_name,
                                          "service.version": __version__})
        self._exporter: Any
        if protocol == "grpc":
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
                OTLPSpanExporter as GrpcExporter,
            )
            target = endpoint.split("://", 1)[-1].rstrip("/")
            self._exporter = GrpcExporter(endpoint=target,
                                          insecure=not endpoint.startswith("https://"),
                                          timeout=timeout_s, headers=dict(headers or {}))
        else:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
                OTLPSpanExporter as HttpExporter,
            )
            self._exporter = HttpExporter(endpoint=traces_url(endpoint), timeout=timeout_s,
                                          headers=dict(headers or {}))

    def _readable(self, span: SpanData) -> ReadableSpan:
        from opentelemetry.sdk.trace import ReadableSpan
        from opentelemetry.sdk.util.instrumentation import InstrumentationScope
        from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

        context = SpanContext(int(span.trace_id, 16), int(span.span_id, 16),
                              is_remote=False, trace_flags=TraceFlags(1))
        parent = (SpanContext(int(span.trace_id, 16), int(span.parent_id, 16),
                              is_remote=True, trace_flags=TraceFlags(1))
                  if span.parent_id else None)
        return ReadableSpan(
            name=span.name, context=context, parent=parent, resource=self._resource,
            attributes=dict(span.attributes), kind=SpanKind[span.kind],
            status=Status(StatusCode[span.status],
                          span.status_message or None if span.status == "ERROR" else None),
            start_time=round(span.start * 1e9), end_time=round(span.end * 1e9),
            instrumentation_scope=InstrumentationScope(SCOPE, __version__))

    def send(self, spans: Sequence[SpanData]) -> bool:
        """Export ``spans``; True if the receiver took them."""
        from opentelemetry.sdk.trace.export import SpanExportResult

        result = self._exporter.export([self._readable(s) for s in spans])
        return bool(result is SpanExportResult.SUCCESS)

    def close(self) -> None:
        self._exporter.shutdown()
