"""`LeanFamily`: reads as prometheus_client's families do, and holds no `Sample`."""

from __future__ import annotations

import gc

import pytest
from collector_helpers import registry_of
from prometheus_client import generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from exporter.collectors.exposition import render
from exporter.collectors.lean import LeanFamily, compact_of


def pair(kind: str) -> tuple[Metric, LeanFamily]:
    """The same family as prometheus_client builds it and as a `LeanFamily`."""
    name, doc, labels = "test_things_total", "Things.", ["datname", "relname"]
    theirs: Metric
    if kind == "counter":
        theirs = CounterMetricFamily(name, doc, labels=labels)
    else:
        theirs = GaugeMetricFamily(name, doc, labels=labels)
    ours = LeanFamily(name, doc, kind, labels)
    for n, value in enumerate((0, 1.5, float("nan"), 1e21)):
        for family in (theirs, ours):
            family.add_metric(["d", f'r"{n}\\\n'], value)
    return theirs, ours


@pytest.mark.parametrize("kind", ["counter", "gauge"])
def test_reads_and_renders_as_prometheus_client_families_do(kind: str) -> None:
    theirs, ours = pair(kind)
    assert (ours.name, ours.type) == (theirs.name, theirs.type)
    assert repr(ours.samples) == repr(theirs.samples)  # by repr: NaN is not NaN
    assert render(ours) == render(theirs)
    assert generate_latest(registry_of([ours])) == generate_latest(registry_of([theirs]))
    assert list(compact_of(ours)) == list(compact_of(theirs))


def test_holds_no_sample_and_its_samples_leave_the_collectors_sight() -> None:
    _, ours = pair("gauge")
    gc.collect()  # one collection has seen each sample: plain tuples of str and numbers
    assert not any(gc.is_tracked(sample) for sample in ours.compact)
    ours.samples = pair("gauge")[0].samples  # set as prometheus_client sets it
    assert repr(ours.samples) == repr(pair("gauge")[0].samples)


def test_wrong_number_of_label_values_is_refused_and_nothing_added() -> None:
    _, ours = pair("counter")
    before = list(ours.compact)
    for labels in (["d"], ["d", "r", "extra"]):
        with pytest.raises(ValueError, match=r"test_things: \d label values for"):
            ours.add_metric(labels, 1)
    assert ours.compact == before
