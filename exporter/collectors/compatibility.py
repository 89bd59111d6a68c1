"""`compatibility: postgres_exporter`: server-side families under postgres_exporter's names.

By default the database-side families follow Prometheus conventions (counters end in `_total`,
times are in seconds). postgres_exporter names several of the same series otherwise (counters
without `_total`, milliseconds, `pg_up`), so its users' dashboards and alert rules find nothing.
With `compatibility: postgres_exporter`, each family a collector lists in
`postgres_exporter_names` / `_scales` / `_shapes` is renamed, rescaled, retyped and
relabelled here, after the run and before the snapshot is rendered: the scrape costs the same.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from prometheus_client.metrics_core import Metric
from prometheus_client.samples import Sample

from exporter.collectors.base import Collector, Shape
from exporter.collectors.exposition import BareCounter
from exporter.collectors.lean import compact_of

POSTGRES_EXPORTER = "postgres_exporter"  # the `compatibility` setting's value for this view
_SAME = Shape()


def postgres_exporter_view(
    collector: Collector[Any], families: Sequence[Metric], server: str
) -> list[Metric]:
    """`families` as postgres_exporter shows them; `server` is its `server` label (host:port).

    A name in `postgres_exporter_names` is the sample name postgres_exporter exposes: a counter
    mapped to a name without `_total` (even its own family name) is written without it."""
    names, shapes = collector.postgres_exporter_names, collector.postgres_exporter_shapes
    scales = collector.postgres_exporter_scales
    view: list[Metric] = []
    for family in families:
        name, shape = names.get(family.name), shapes.get(family.name, _SAME)
        scale = scales.get(family.name, 1.0)
        if name is None and shape == _SAME and scale == 1.0:
            view.append(family)
        else:
            view.append(_reshaped(family, name or _sample_name(family), shape, scale, server))
    return view


def default_view(collector: Collector[Any], families: Sequence[Metric]) -> list[Metric]:
    """`families` in the default mode: without those only postgres_exporter's view shows."""
    only = collector.postgres_exporter_only
    return [family for family in families if family.name not in only]


def _sample_name(family: Metric) -> str:
    return f"{family.name}_total" if family.type == "counter" else family.name


def _reshaped(family: Metric, name: str, shape: Shape, scale: float, server: str) -> Metric:
    kind = shape.type or family.type
    sample_name = name
    if kind == "counter" and name.endswith("_total"):
        result = Metric(name.removesuffix("_total"), family.documentation, kind)
    elif kind == "counter":
        result = BareCounter(name, family.documentation, kind)
    else:
        result = Metric(name, family.documentation, kind)
    # Samples that differ only in labels postgres_exporter does not have are summed.
    values: dict[tuple[tuple[str, str], ...], float] = {}
    for _, number, names, *label_values in compact_of(family):  # no Sample of a LeanFamily made
        labels = dict(zip(names, label_values, strict=True))
        if shape.labels is not None:
            labels = {k: v for k, v in labels.items() if k in shape.labels}
        if shape.server_label:
            labels = {**labels, "server": server}
        key = tuple(labels.items())
        values[key] = values.get(key, 0.0) + number * scale
    result.samples = [Sample(sample_name, dict(key), value) for key, value in values.items()]
    return result
