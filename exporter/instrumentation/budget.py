"""Label-set budgets: every capped metric takes at most so many label sets; further ones are
folded into `table="other"` and counted once each in `exporter_label_overflow_total{metric}`.

Consulted when a statement is seen for the first time, never per query.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from exporter.inprocess_settings import InstrumentationSettings

if TYPE_CHECKING:
    from exporter.metrics import Metrics

OTHER = "other"
StatementLabels = tuple[str, str, str, str]  # database, operation, table, status


@dataclass
class LabelLimits:
    """The most label sets one metric may have; further ones are folded into `table="other"`
    and counted in `exporter_label_overflow_total{metric}`. From the config:
    `LabelLimits(s.instrumentation.max_label_sets, s.instrumentation.max_label_sets_per_metric)`.
    """

    default: int = 2000
    per_metric: Mapping[str, int] = field(default_factory=dict)

    @classmethod
    def from_settings(cls, settings: InstrumentationSettings) -> LabelLimits:
        return cls(settings.max_label_sets, dict(settings.max_label_sets_per_metric))

    def cap(self, metric: str) -> int:
        return self.per_metric.get(metric, self.default)


class LabelBudget:
    """Admits label sets for one metric until its cap, then answers with the overflow set
    (the same labels with table="other").

    Called only when a statement is seen for the first time, never per query.
    """

    def __init__(self, metric: str, metrics: Metrics) -> None:
        self._metric = metric
        self._metrics = metrics
        self._admitted: set[StatementLabels] = set()
        self._lock = threading.Lock()

    def admit(self, labels: StatementLabels) -> StatementLabels:
        with self._lock:
            if labels in self._admitted:
                return labels
            if len(self._admitted) < self._metrics.limits.cap(self._metric):
                self._admitted.add(labels)
                return labels
        self._metrics.label_overflow.labels(self._metric).inc()
        folded = (labels[0], labels[1], OTHER, labels[3])
        with self._lock:
            self._admitted.add(folded)  # the overflow set itself is always allowed
        return folded
