"""Exemplars: the active OpenTelemetry span's ids, attached to histogram observations.

OpenTelemetry is optional (`pip install 'db-exporter[otel]'`); without it, or outside a span,
observations carry no exemplar. Exemplars appear in the OpenMetrics exposition only.
"""

from __future__ import annotations

import sys


def current_exemplar() -> dict[str, str] | None:
    # A span can only be active once the application has imported OpenTelemetry: until then
    # there is nothing to look up, and nothing to import (it is asked at most once per bucket
    # per second, so the lookup costs the query path nothing measurable).
    trace = sys.modules.get("opentelemetry.trace")
    if trace is None:
        return None
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return {
        "trace_id": format(context.trace_id, "032x"),
        "span_id": format(context.span_id, "016x"),
    }
