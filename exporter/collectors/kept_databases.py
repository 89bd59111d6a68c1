"""Which databases of the server keep a `datname` of their own in a server-wide collector of
gauges (`ServerDatabasesCollectorSettings.max_databases`): the connected one, then the busiest,
by name on ties. The others are summed under `datname="other"`, so totals stay whole."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Any

OTHER = "other"


def kept_databases(rows: Iterable[Any], weight: Callable[[Any], float], cap: int) -> set[str]:
    """The `datname`s of `rows` (each with `datname` and `connected`) that keep their own
    series: the connected database, then those with the largest `weight` summed over their
    rows, until `cap`."""
    totals: defaultdict[str, float] = defaultdict(float)
    kept: set[str] = set()
    for row in rows:
        totals[row.datname] += weight(row)
        if row.connected:
            kept.add(row.datname)
    others = sorted(set(totals) - kept, key=lambda d: (-totals[d], d))
    kept.update(others[: cap - len(kept)])
    return kept
