"""What a collector is: a name, its SQL as module constants, and one async `collect()`.

A collector is built once per database with its own settings; the runner sets `datname` (the
label value: the database's real name, `current_database()`) after each check, and
`collect(conn, server_version)` returns fresh metric families built from one run's rows. It
never opens connections, sets timeouts or catches errors, and never adds the `database` label
(the configured name): the runner does all of these.
A collector with thousands of series builds them as `Steps` run by `slices.in_slices()`, so
the event loop is never stalled for long, into `LeanFamily`s (collectors/lean.py) from
`plain_rows()`, so what it keeps across its slices is not tracked by the garbage collector.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from itertools import chain, zip_longest
from typing import Any, ClassVar, Generic, Protocol, TypeVar

from prometheus_client.metrics_core import Metric
from sqlalchemy.engine import Result
from sqlalchemy.ext.asyncio import AsyncConnection

from exporter.collectors.slices import Steps
from exporter.settings import CollectorSettings

S = TypeVar("S", bound=CollectorSettings)


@dataclass(frozen=True)
class Shape:
    """How postgres_exporter shows one of our families, where it differs beyond the name and
    the unit (`compatibility: postgres_exporter`): its type, the only labels it has (the others
    summed away), and whether it carries its `server` label (host:port), as its built-in
    metrics do."""

    type: str | None = None
    labels: tuple[str, ...] | None = None
    server_label: bool = False


class Collector(ABC, Generic[S]):
    # A class attribute; a collector built from configuration (a custom query) sets its own.
    name: str
    # Used only when the config has no section for this collector's name.
    default_settings: ClassVar[CollectorSettings] = CollectorSettings()
    # True when every exporter of the database would report the same series (catalog and
    # statistics views): with several replicas, only the elected one runs it (see the runner).
    # False (the default, the safe side) runs it in every exporter.
    database_wide: ClassVar[bool] = False
    # True when its series describe the whole server (settings, WAL, replication...), not the
    # database it connects to: a server's discovered databases do not run it again, and of
    # several configured entries on one server only one runs it (collectors/servers.py).
    server_wide: ClassVar[bool] = False
    # postgres_exporter's name for each family (as given to the MetricFamily constructor) whose
    # name differs from ours, and its `Shape` where more differs: `compatibility:
    # postgres_exporter` renders the families so (exporter/collectors/compatibility.py).
    postgres_exporter_names: ClassVar[Mapping[str, str]] = {}
    postgres_exporter_shapes: ClassVar[Mapping[str, Shape]] = {}
    # {family name: factor} where postgres_exporter's unit differs (its value = ours x factor,
    # e.g. 1000 for its milliseconds against our seconds).
    postgres_exporter_scales: ClassVar[Mapping[str, float]] = {}
    # Families that only postgres_exporter's view shows (labels that would clash with ours in
    # the default mode): `collect()` returns them, the default view leaves them out.
    postgres_exporter_only: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, datname: str, settings: S) -> None:
        # Built with the configured name; the runner replaces `datname` (a label value) with the
        # real name after each check, and `database` stays the configured name, for log lines.
        self.datname = datname
        self.database = datname
        self.settings = settings

    def stopped(self) -> None:
        """This exporter stopped running it (another one leads): let go of what it started."""

    @abstractmethod
    async def collect(self, conn: AsyncConnection, server_version: int) -> Sequence[Metric]:
        """Run the collector's queries on `conn`; return the families for this run."""


class CollectorError(Exception):
    """A collector's own, clean failure (a missing grant, a result that does not fit): the run
    fails with this one-line message, and the connection, which is fine, is kept."""


# A row as a collector keeps it across a run's slices: column name -> value.
PlainRow = dict[str, Any]


def plain_rows(result: Result[Any]) -> Steps[list[PlainRow]]:
    """A query's rows as dicts of column -> value, in steps (~3 us a row: 1,200 rows at once
    would stall the loop for several ms). A collector with thousands of rows keeps them for
    the whole run, across its slices: a `Row` stays tracked by the garbage collector all that
    time (and is promoted to its oldest generation with the run), a dict of str, numbers and
    timestamps is never tracked."""
    columns = tuple(result.keys())
    rows = []
    for row in result:
        rows.append(dict(zip(columns, row, strict=True)))
        yield
    return rows


def number(value: Any) -> float:
    """A column value as a sample value: NULL becomes 0."""
    return 0.0 if value is None else float(value)


def timestamp(value: datetime | None) -> float:
    """A timestamptz column as Unix seconds: NULL (never happened) becomes 0."""
    return 0.0 if value is None else value.timestamp()


class Labelled(Protocol):
    """What `select()` breaks ties by."""

    @property
    def labels(self) -> tuple[str, ...]: ...


L = TypeVar("L", bound=Labelled)


class Ranked(Labelled, Protocol):
    """Indexes and tables, ranked by size and by scans."""

    @property
    def size(self) -> float: ...
    @property
    def scans(self) -> float: ...


def by_size(item: Ranked) -> float:
    return item.size


def by_scans(item: Ranked) -> float:
    return item.scans


def select(
    items: Sequence[L], forced: set[int], cap: int, rankings: Sequence[Callable[[L], float]]
) -> Steps[list[int]]:
    """Positions of the items (indexes, tables) that get series of their own: every forced one,
    then the top of each ranking in turn (highest first, ties by labels), until `cap` are
    chosen. In steps."""
    chosen = set(forced)
    orders: list[list[int]] = []
    for rank in rankings:
        orders.append(sorted(range(len(items)), key=lambda i: (-rank(items[i]), items[i].labels)))
        yield
    for position in chain.from_iterable(zip_longest(*orders)):
        if len(chosen) >= cap:
            break
        if position is not None:
            chosen.add(position)
        yield
    return sorted(chosen, key=lambda i: items[i].labels)
