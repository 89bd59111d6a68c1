"""Families that hold their samples as plain tuples, for collectors with thousands of series.

A prometheus_client `Sample` is a namedtuple, which CPython's garbage collector tracks for as
long as it lives (it stops tracking only exact tuples of untracked things). A run over 1,200
indexes built ~7,200 of them and kept them all until the run was stored, across the slices it
runs in: every one outlived two young collections and was promoted to the oldest generation,
and in a host application (nothing frozen) what a run promotes sets off full collections, each
scanning every object the application tracks, on the event loop. A `LeanFamily` keeps each
sample as the snapshot store does, one flat tuple of str and numbers, which the first
collection that sees it stops tracking; the store takes those tuples as they are.

It is still a prometheus_client `Metric`: whoever reads `samples` (the compatibility view,
a registry, tests) gets `Sample`s, built afresh for that reader.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from prometheus_client.metrics_core import Metric
from prometheus_client.samples import Sample

# A sample as the store keeps it: (sample name, value, label names, *label values), the label
# names' tuple shared by the samples that have the same. Flat, not a tuple of label values
# inside: a collection moves a young object reachable only from another young one behind it,
# so it checks the outer tuple before the inner one is untracked, and keeps it tracked for
# another collection (one in ten of 7,200 series then reached the oldest generation).
Compact = tuple[str, Any, tuple[str, ...], *tuple[str, ...]]


class LeanFamily(Metric):
    """A gauge, counter or untyped family whose samples are `Compact` tuples. A counter's name
    may end in `_total` or not (as with `CounterMetricFamily`); its samples' does."""

    compact: list[Compact]  # set by `samples`' setter, which Metric's __init__ calls

    def __init__(self, name: str, documentation: str, typ: str, labels: Sequence[str]) -> None:
        if typ == "counter":
            name = name.removesuffix("_total")
        super().__init__(name, documentation, typ)
        self._sample_name = f"{self.name}_total" if typ == "counter" else self.name
        self._label_names = tuple(labels)

    def add_metric(self, labels: Sequence[str], value: float) -> None:
        if len(labels) != len(self._label_names):
            raise ValueError(f"{self.name}: {len(labels)} label values for {self._label_names}")
        self.compact.append((self._sample_name, value, self._label_names, *labels))

    @property
    def samples(self) -> list[Sample]:
        return sample_list(self.compact)

    @samples.setter
    def samples(self, samples: Iterable[Sample]) -> None:
        self.compact = list(compact_samples(samples, self.name))


def sample_list(compact: Iterable[Compact]) -> list[Sample]:
    """`Compact` tuples as `Sample`s (~1 us a sample)."""
    return [Sample(name, dict(zip(k, v, strict=True)), x) for name, x, k, *v in compact]


def compact_samples(samples: Iterable[Sample], family: str) -> Iterator[Compact]:
    """`Sample`s as `Compact` tuples. Only what is pre-rendered is kept: no timestamps,
    exemplars or native histograms."""
    for sample in samples:
        if sample.timestamp is not None or sample.exemplar is not None:
            raise ValueError(f"{family}: timestamps and exemplars are not pre-rendered")
        if sample.native_histogram is not None:
            raise ValueError(f"{family}: native histograms are not pre-rendered")
        yield sample.name, sample.value, tuple(sample.labels), *sample.labels.values()


def compact_of(family: Metric) -> Iterator[Compact]:
    """Every sample of `family` as a `Compact` tuple: a `LeanFamily`'s as they are, without a
    `Sample` made in between."""
    if isinstance(family, LeanFamily):
        return iter(family.compact)
    return compact_samples(family.samples, family.name)
