"""What an operator sees of the daemon: traces, metrics and structured logs.

- **Traces** (:mod:`agentd.telemetry.spans`, :mod:`agentd.telemetry.export`): spans
  of every run, built from the event log by a follower off the hot path, following
  OpenTelemetry's GenAI semantic conventions, exported over OTLP by the official
  ``opentelemetry-sdk`` exporters (the ``otel`` extra). Off: nothing imported,
  nothing done per turn.
- **Metrics**: ``/metrics`` in Prometheus' text format.
- **Logs**: a JSON line format carrying agent, session, run and trace ids.

A capability like the others (docs/architecture.md): the composition root builds it
with the store and the bus, and the doors reach it through the runtime's facade.
"""
