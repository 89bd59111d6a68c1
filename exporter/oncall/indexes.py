"""Indexes worth fixing, from the indexes collector's last run: unused candidates, invalid and
duplicate indexes, each with its table, size, scans, statistics age and the statement that
would fix it. The statement is a suggestion to review; nothing here runs it."""

from __future__ import annotations

import threading
from dataclasses import dataclass

from exporter.collectors.exposition import SnapshotStore

_SIZE = "pg_index_size_bytes"
_SCANS = "pg_stat_user_indexes_idx_scan_total"
_AGE = "pg_index_stats_age_seconds"
_FLAGS = ("pg_index_invalid", "pg_index_duplicate", "pg_index_unused")


def quote_ident(name: str) -> str:
    """An SQL identifier, always quoted (so any name, whatever its case or characters)."""
    return '"' + name.replace('"', '""') + '"'


@dataclass(frozen=True)
class IndexToFix:
    database: str  # the configured name
    schema: str
    table: str
    index: str
    problem: str  # "invalid", "duplicate of <name>", "unused"
    size_bytes: float | None
    scans: float | None
    stats_age_seconds: float | None
    fix: str  # the suggested statement


def _fix(flag: str, schema: str, index: str) -> str:
    name = f"{quote_ident(schema)}.{quote_ident(index)}"
    if flag == "pg_index_invalid":
        return f"REINDEX INDEX CONCURRENTLY {name};"
    return f"DROP INDEX CONCURRENTLY {name};"


def _read(store: SnapshotStore) -> list[IndexToFix]:
    found: dict[tuple[str, str, str], IndexToFix] = {}
    for database, families in store.runs("indexes"):
        sizes: dict[tuple[str, str], float] = {}
        scans: dict[tuple[str, str], float] = {}
        flagged: list[tuple[str, dict[str, str]]] = []
        age = None
        for family in families:
            for s in family.samples:
                key = (s.labels.get("schemaname", ""), s.labels.get("indexrelname", ""))
                if s.name == _SIZE:
                    sizes[key] = s.value
                elif s.name == _SCANS:
                    scans[key] = s.value
                elif s.name == _AGE:
                    age = s.value
                elif s.name in _FLAGS and s.value == 1:
                    flagged.append((s.name, s.labels))
        flagged.sort(key=lambda flag: _FLAGS.index(flag[0]))
        # Flags in order of precedence: an invalid index is fixed by rebuilding it, whatever
        # else is said of it; of two identical indexes, the one whose name sorts first is kept.
        for flag, labels in flagged:
            schema, index = labels["schemaname"], labels["indexrelname"]
            if (database, schema, index) in found:
                continue
            problem = flag.removeprefix("pg_index_")
            if flag == "pg_index_duplicate":
                other = labels.get("duplicate_of", "")
                if index < other:
                    continue  # the one kept; its duplicate's row says so
                problem = f"duplicate of {other}"
            found[(database, schema, index)] = IndexToFix(
                database, schema, labels["relname"], index, problem,
                sizes.get((schema, index)), scans.get((schema, index)), age,
                _fix(flag, schema, index),
            )  # fmt: skip
    return sorted(found.values(), key=lambda i: (-(i.size_bytes or 0), i.database, i.index))


class IndexesToFix:
    """What `_read` finds, kept until the snapshot changes (one entry)."""

    def __init__(self, store: SnapshotStore) -> None:
        self._store = store
        self._cached: tuple[int, list[IndexToFix]] | None = None
        self._lock = threading.Lock()

    def get(self) -> list[IndexToFix]:
        generation = self._store.generation
        with self._lock:
            if self._cached is not None and self._cached[0] == generation:
                return self._cached[1]
        found = _read(self._store)
        with self._lock:
            self._cached = (generation, found)
        return found
