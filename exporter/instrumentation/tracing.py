"""Exemplars: the active OpenTelemetry span's ids, attached to histogram observations.

OpenTelemetry is optional (`pip install 'db-exporter[otel]'`); without it, or outside a span,
observations carry no exemplar. Exemplars appear in the OpenMetrics exposition only.
"""

from __future__ import annotations

try:
    from opentelemetry import trace
except ImportError:  # the optional dependency is absent
    trace = None  # type: ignore[assignment]


def current_exemplar() -> dict[str, str] | None:
    if trace is None:
        return None
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return {
        "trace_id": format(context.trace_id, "032x"),
        "span_id": format(context.span_id, "016x"),
    }
