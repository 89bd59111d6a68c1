"""One-row statistics views (pg_stat_bgwriter, pg_stat_checkpointer, pg_stat_wal, ...) as
families without labels, one per column: a table of columns instead of a block per metric."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from exporter.collectors.base import number, timestamp


@dataclass(frozen=True)
class Column:
    """`column` of the row exported as the family `name` (a counter gets `_total` on
    exposition); `timestamp` is a timestamptz as Unix seconds (0: never); `scale` converts to
    the family's unit (milliseconds to seconds: 0.001)."""

    column: str
    name: str
    doc: str
    kind: Literal["counter", "gauge", "timestamp"] = "counter"
    scale: float = 1.0


def row_families(row: Any, columns: Sequence[Column]) -> list[Metric]:
    families: list[Metric] = []
    for c in columns:
        value = getattr(row, c.column)
        family: Metric
        if c.kind == "counter":
            family = CounterMetricFamily(c.name, c.doc, labels=[])
            family.add_metric([], number(value) * c.scale)
        else:
            family = GaugeMetricFamily(c.name, c.doc, labels=[])
            sample = timestamp(value) if c.kind == "timestamp" else number(value) * c.scale
            family.add_metric([], sample)
        families.append(family)
    return families
