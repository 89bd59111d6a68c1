"""The sidecar freezes what start-up loaded; the library leaves the host's collector alone."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry

from exporter import Metrics
from exporter.server import Exporter
from exporter.sidecar_gc import freeze_start_up


class Node:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: only a collection frees it


@pytest.fixture
def unfrozen() -> Iterator[None]:
    """The test process's collector as it was: nothing frozen, before and after."""
    gc.unfreeze()
    try:
        yield
    finally:
        gc.unfreeze()


def test_freezing_start_up_collects_its_garbage_first(unfrozen: None) -> None:
    garbage = Node()
    gone = weakref.ref(garbage)
    del garbage
    kept = Node()
    frozen = freeze_start_up()
    assert gone() is None  # collected, not kept frozen for good
    # Everything loaded so far, this object too. (Not compared with gc.get_freeze_count()
    # later: a frozen object that dies leaves the count, and other tests' threads free some.)
    assert frozen > 10_000
    assert not any(o is kept for o in gc.get_objects())  # out of the collector's sight


async def test_an_embedded_exporter_never_freezes_the_hosts_objects(unfrozen: None) -> None:
    exporter = Exporter(listen="127.0.0.1:0", metrics=Metrics(CollectorRegistry()))
    await exporter.start()
    try:
        assert gc.get_freeze_count() == 0
    finally:
        await exporter.stop()
    assert gc.get_freeze_count() == 0
