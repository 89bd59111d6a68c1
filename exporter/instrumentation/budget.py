"""Label-set budgets: the one mechanism that bounds every metric whose label values come from
the application (a statement's table, a SQLSTATE class, a route template). Such a metric takes
at most so many label sets (its cap, `LabelLimits`); a further one is folded: its
application-given label becomes `other`, the rest stays. Each folded label set is counted once
in `exporter_label_overflow_total{metric}`. Which metrics are capped, and which label of each
folds, is `CAPPED_METRICS` (exporter/inprocess_settings.py).

Consulted when a label set is first seen (a statement's first execution, a request's end),
never per query: callers keep what `admit()` answered.

The database-side collectors bound their series differently, by design: each run replaces
its whole snapshot, so a `max_*_series` cap picks the top items of that run (the rest counted
in `pg_*_series_omitted`) and nothing accumulates over time. Folding into `other` would make
counters such as `idx_scan` jump whenever the chosen set changes.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar, cast

from exporter.inprocess_settings import CAPPED_METRICS, InstrumentationSettings

if TYPE_CHECKING:
    from exporter.metrics import Metrics

OTHER = "other"
StatementLabels = tuple[str, str, str, str]  # database, operation, table, status
Labels = TypeVar("Labels", bound=tuple[str, ...])

# Folded label sets remembered per metric (as hashes, ~80 bytes each), so that each is counted
# once. Past this many, the memory starts again: a set folded before then is counted again
# when next seen. Reached only by applications that make up table names or routes endlessly.
MAX_REMEMBERED_FOLDS = 20_000


@dataclass
class LabelLimits:
    """The most label sets one metric may have. From the config:
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
    """Admits label sets for one metric until its cap, then answers with the folded set (the
    same labels, the metric's folded one `other`), which is always allowed."""

    def __init__(self, metric: str, label_names: Sequence[str], metrics: Metrics) -> None:
        self._metric = metric
        self._fold_at = list(label_names).index(CAPPED_METRICS[metric])
        self._metrics = metrics
        self._admitted: set[tuple[str, ...]] = set()
        self._folded: set[int] = set()  # hashes of the label sets folded so far
        self._lock = threading.Lock()

    def admit(self, labels: Labels) -> Labels:
        at = self._fold_at
        with self._lock:
            if labels in self._admitted:
                return labels
            if labels[at] == OTHER or len(self._admitted) < self._metrics.limits.cap(self._metric):
                self._admitted.add(labels)
                return labels
            folded = cast(Labels, (*labels[:at], OTHER, *labels[at + 1 :]))
            self._admitted.add(folded)
            key = hash(labels)
            first_fold = key not in self._folded
            if first_fold:
                if len(self._folded) >= MAX_REMEMBERED_FOLDS:
                    self._folded.clear()
                self._folded.add(key)
        if first_fold:
            self._metrics.label_overflow.labels(self._metric).inc()
        return folded
