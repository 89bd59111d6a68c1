"""The last snapshot of every collector, rendered once per run so a scrape only joins bytes.

prometheus_client renders ~7,000 series in about 35 ms, on the event loop, on every scrape. A
collector's families change only when it runs, so `render()` turns them into exposition text
right after the run (`put_steps()`, in slices on the loop) and `/metrics` concatenates what is
stored. Sample lines are identical in the Prometheus text format and in OpenMetrics for gauges
and counters; only the `# HELP` and `# TYPE` headers differ, so one body serves both.

Every sample a collector returns for a configured database is stored with that database's
logical name as the `database` label (a sample that already has one, such as a replication
slot's database, keeps its own), so server-side series join application-side ones on it.

`SnapshotStore` is also a registry `Collector`, so `registry.get_sample_value()` and any other
exposition of the registry still see every family; the `/metrics` handler switches that off
with `prerendered()` while it renders the rest of the registry, then appends the stored text.
It keeps no `Sample` between runs (`StoredFamily`): a Sample is a namedtuple, which CPython's
garbage collector tracks for good (it stops tracking only plain tuples), so 12,000 stored
series were 12,000 more objects for every full collection to scan, on the loop, and each run's
labelled copies brought the next one closer. It builds the families again only when something
other than `/metrics` asks.

Each family is also deflated when it is rendered (`exporter.gzip_parts`): gzipping the whole
body cost a scrape more than rendering it, and a gzipped scrape now compresses only the rest of
the registry and lays the stored parts after it.
"""

from __future__ import annotations

import copy
import threading
import zlib
from collections.abc import Callable, Collection, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString as _untyped_float_to_go_string

from exporter.collectors.lean import Compact, compact_of, sample_list
from exporter.collectors.slices import Steps, at_once
from exporter.gzip_parts import Deflated, deflate, raw_compressor

# Bytes of a family's body deflated between two yields (~0.5 ms of CPU).
_DEFLATE_STEP = 64 * 1024

T = TypeVar("T")

_SKIP: ContextVar[bool] = ContextVar("db_exporter_skip_snapshots", default=False)


class BareCounter(Metric):
    """A counter whose samples are named without `_total` (postgres_exporter's names): `counter`
    in the Prometheus text format, `unknown` in OpenMetrics, whose counters need `_total`."""


@dataclass(frozen=True)
class RenderedFamily:
    name: str  # the OpenMetrics family name (a counter's without `_total`)
    type: str  # gauge, counter or unknown (untyped)
    documentation: str
    unit: str
    body: bytes  # the sample lines, the same in both formats
    deflated_body: Deflated
    total: bool = True  # a counter's samples end in `_total` (not a BareCounter's)
    # The headers deflated: in the text format, in OpenMetrics.
    deflated_headers: tuple[Deflated, Deflated] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        headers = (deflate(self.header(False).encode()), deflate(self.header(True).encode()))
        object.__setattr__(self, "deflated_headers", headers)

    def deflated_header(self, openmetrics: bool) -> Deflated:
        return self.deflated_headers[openmetrics]

    def header(self, openmetrics: bool) -> str:
        if openmetrics:
            doc = _escape(self.documentation)
            kind = self.type if self.total else "unknown"
            unit = f"# UNIT {self.name} {self.unit}\n" if self.unit else ""
            return f"# HELP {self.name} {doc}\n# TYPE {self.name} {kind}\n{unit}"
        name = f"{self.name}_total" if self.type == "counter" and self.total else self.name
        doc = self.documentation.replace("\\", r"\\").replace("\n", r"\n")
        kind = "untyped" if self.type == "unknown" else self.type
        return f"# HELP {name} {doc}\n# TYPE {name} {kind}\n"


def _float(value: Any) -> str:
    return cast(str, _untyped_float_to_go_string(value))  # type: ignore[no-untyped-call]


def _escape(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


@dataclass(frozen=True)
class StoredFamily:
    """A family as the store keeps it: the family without its samples, and each sample as a
    flat `Compact` tuple of str and numbers (exporter/collectors/lean.py), which CPython's
    garbage collector leaves alone once one collection has seen it, so a stored series costs
    the collector nothing."""

    shell: Metric  # the family, `samples` empty
    samples: tuple[Compact, ...]

    def sample_list(self) -> list[Sample]:
        # A reader other than /metrics pays for what a collection no longer does.
        return sample_list(self.samples)

    def metric(self) -> Metric:
        """The family as a prometheus_client `Metric`, built afresh."""
        family = copy.copy(self.shell)
        family.samples = self.sample_list()
        return family


def stored_steps(family: Metric, label: str | None = None, value: str = "") -> Steps[StoredFamily]:
    """`family` as the store keeps it, each sample carrying the label `label` (unless it has
    it). In steps. Only what is pre-rendered is kept: gauges, counters and untyped, without
    timestamps or exemplars."""
    if family.type not in ("gauge", "counter", "unknown"):
        raise ValueError(f"{family.name}: only gauges, counters and untyped are pre-rendered")
    samples = []
    shared: dict[tuple[str, ...], tuple[str, ...]] = {}
    for name, number, names, *values in compact_of(family):
        if label is not None and label not in names:
            names, values = (*names, label), [*values, value]
        names = shared.setdefault(names, names)
        samples.append((name, number, names, *values))
        yield
    shell = copy.copy(family)
    shell.samples = []
    return StoredFamily(shell, tuple(samples))


def render(family: Metric) -> RenderedFamily:
    """One family's sample lines, exactly as prometheus_client would print them."""
    return at_once(render_steps(family))


def render_steps(family: Metric) -> Steps[RenderedFamily]:
    """`render()` in steps, for `in_slices()`."""
    stored = yield from stored_steps(family)
    return (yield from rendered_steps(stored))


def rendered_steps(stored: StoredFamily) -> Steps[RenderedFamily]:
    """A stored family's `RenderedFamily`, in steps."""
    lines = []
    for name, number, label_names, *label_values in stored.samples:
        value = _float(number)
        if label_names:
            labels = sorted(zip(label_names, label_values, strict=True))
            pairs = ",".join(f'{k}="{_escape(v)}"' for k, v in labels)
            lines.append(f"{name}{{{pairs}}} {value}\n")
        else:
            lines.append(f"{name} {value}\n")
        yield
    body = "".join(lines).encode()
    deflated_body = yield from _deflate_steps(body)
    family = stored.shell
    total = not isinstance(family, BareCounter)
    return RenderedFamily(
        family.name, family.type, family.documentation, family.unit, body, deflated_body, total
    )


def _deflate_steps(body: bytes) -> Steps[Deflated]:
    """`deflate(body)` in steps of `_DEFLATE_STEP` bytes."""
    if len(body) <= _DEFLATE_STEP:
        return deflate(body)
    compressor = raw_compressor()
    blocks = []
    for start in range(0, len(body), _DEFLATE_STEP):
        blocks.append(compressor.compress(body[start : start + _DEFLATE_STEP]))
        yield
    blocks.append(compressor.flush(zlib.Z_SYNC_FLUSH))
    return Deflated(b"".join(blocks), zlib.crc32(body), len(body))


@contextmanager
def prerendered() -> Iterator[None]:
    """While active (in this context), `SnapshotStore.collect()` yields nothing."""
    token = _SKIP.set(True)
    try:
        yield
    finally:
        _SKIP.reset(token)


@dataclass(frozen=True)
class _Run:
    families: tuple[StoredFamily, ...]
    rendered: tuple[RenderedFamily, ...]


class SnapshotStore(Collector):
    """The families of each (database, collector)'s last successful run."""

    def __init__(self) -> None:
        self._runs: dict[tuple[str, str], _Run] = {}
        self._lock = threading.Lock()
        # The whole exposition, by format (OpenMetrics or not): as text, and deflated.
        self._exposition: dict[bool, bytes] = {}
        self._deflated: dict[bool, Deflated] = {}
        self._generation = 0  # bumped on every change, so a stale rendering is never cached

    def put(self, database: str, collector: str, families: Iterable[Metric]) -> None:
        at_once(self.put_steps(database, collector, families))

    def put_steps(self, database: str, collector: str, families: Iterable[Metric]) -> Steps[None]:
        """`put()` in steps, for `in_slices()`: labels each sample with the database's logical
        name, renders, then stores in one step at the end."""
        run = []
        rendered = []
        for family in families:
            stored = yield from stored_steps(family, "database", database)
            run.append(stored)
            rendered.append((yield from rendered_steps(stored)))
        with self._lock:
            self._runs[(database, collector)] = _Run(tuple(run), tuple(rendered))
            self._changed()

    def drop(self, database: str, collector: str | None = None) -> None:
        with self._lock:
            for key in [k for k in self._runs if k[0] == database]:
                if collector is None or key[1] == collector:
                    del self._runs[key]
            self._changed()

    @property
    def generation(self) -> int:
        """Changes whenever a run is stored or dropped (readers cache what they derive)."""
        return self._generation

    def ran(self, collector: str) -> bool:
        """Whether `collector` has a successful run stored (without building its families)."""
        with self._lock:
            return any(key[1] == collector for key in self._runs)

    def runs(self, collector: str) -> list[tuple[str, tuple[Metric, ...]]]:
        """(database, families) of `collector`'s last successful run in each database (the
        families built afresh)."""
        with self._lock:
            found = [
                (key[0], run) for key, run in sorted(self._runs.items()) if key[1] == collector
            ]
        return [(database, tuple(f.metric() for f in run.families)) for database, run in found]

    def _changed(self) -> None:
        self._generation += 1
        self._exposition.clear()
        self._deflated.clear()

    def _ordered(self) -> list[_Run]:
        with self._lock:
            return [self._runs[key] for key in sorted(self._runs)]

    def exposition(
        self,
        openmetrics: bool,
        names: Collection[str] | None = None,
        database: str | None = None,
    ) -> bytes:
        """Every stored family once (samples of all databases under one header), as bytes;
        only the families `names` asks for (by family or sample name) when given, and only
        the runs of `database` (`/probe`) when given."""
        return self._cached(self._exposition, openmetrics, names, database, self._joined)

    def deflated(self, openmetrics: bool, names: Collection[str] | None = None) -> Deflated:
        """`exposition()` as raw deflate blocks, from the parts deflated when each family was
        rendered: for a gzipped `/metrics` (`exporter.gzip_parts.gzip_member`)."""
        return self._cached(self._deflated, openmetrics, names, None, self._deflated_of)

    def _cached(
        self,
        cache: dict[bool, T],
        openmetrics: bool,
        names: Collection[str] | None,
        database: str | None,
        build: Callable[[bool, list[list[RenderedFamily]]], T],
    ) -> T:
        """What `build` makes of the selected families; the whole exposition's is kept (one
        per format) until the next change, the generation guarding against a change made
        while it was built."""
        whole = names is None and database is None
        with self._lock:
            cached = cache.get(openmetrics) if whole else None
            if cached is not None:
                return cached
            keys = [k for k in sorted(self._runs) if database is None or k[0] == database]
            runs = [self._runs[key] for key in keys]
            generation = self._generation
        by_name: dict[str, list[RenderedFamily]] = {}
        for run in runs:
            for family in run.rendered:
                if names is None or family.name in names or f"{family.name}_total" in names:
                    by_name.setdefault(family.name, []).append(family)
        result = build(openmetrics, [by_name[name] for name in sorted(by_name)])
        with self._lock:
            if whole and generation == self._generation:
                cache[openmetrics] = result
        return result

    @staticmethod
    def _joined(openmetrics: bool, groups: list[list[RenderedFamily]]) -> bytes:
        parts: list[bytes] = []
        for families in groups:
            parts.append(families[0].header(openmetrics).encode())
            parts.extend(f.body for f in families)
        return b"".join(parts)

    @classmethod
    def _deflated_of(cls, openmetrics: bool, groups: list[list[RenderedFamily]]) -> Deflated:
        parts: list[bytes] = []
        for families in groups:
            parts.append(families[0].deflated_header(openmetrics).data)
            parts.extend(f.deflated_body.data for f in families)
        # The CRC in one C pass over the same families' text (combining hundreds of parts'
        # CRCs in Python costs more).
        text = cls._joined(openmetrics, groups)
        return Deflated(b"".join(parts), zlib.crc32(text), len(text))

    def collect(self) -> Iterator[Metric]:
        if _SKIP.get():
            return
        by_name: dict[str, list[StoredFamily]] = {}
        for run in self._ordered():
            for family in run.families:
                by_name.setdefault(family.shell.name, []).append(family)
        # Each family built as it is asked for: `get_sample_value()` stops at the one it wants.
        for name in sorted(by_name):
            first, *others = by_name[name]
            merged = first.metric()
            for family in others:
                merged.samples.extend(family.sample_list())
            yield merged

    def describe(self) -> Iterator[Metric]:
        return iter(())
