"""Custom queries: config validation at start-up, results and failures at run time."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
import yaml
from collector_helpers import dsn, execute, names, samples
from prometheus_client import CollectorRegistry
from sqlalchemy.engine import URL

from exporter import Metrics
from exporter.collectors.database import DatabaseCollector
from exporter.collectors.exposition import SnapshotStore
from exporter.collectors.runner import DatabaseWorker
from exporter.settings import ConfigError, DatabaseSettings, settings_from_data

SOURCE = "exporter.yaml"


def query(**fields: Any) -> dict[str, Any]:
    return {"name": "q", "help": "A query.", "sql": "SELECT 1 AS v", "values": ["v"], **fields}


def config_error(*queries: dict[str, Any], second: list[dict[str, Any]] | None = None) -> str:
    databases: list[dict[str, Any]] = [
        {"name": "main", "dsn": "postgresql://db/app", "custom_queries": list(queries)}
    ]
    if second is not None:
        databases.append({"name": "other", "dsn": "postgresql://db/b", "custom_queries": second})
    with pytest.raises(ConfigError) as error:
        settings_from_data({"databases": databases}, SOURCE)
    return str(error.value)


AT = f"{SOURCE}: databases[0].custom_queries[0]: custom query 'q': "


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"sql": "SELECT a FORM t"}, 'sql: syntax error at or near "t", at index 14'),
        ({"sql": "DELETE FROM t"}, "sql: must be exactly one SELECT statement"),
        ({"sql": "SELECT 1 AS v; SELECT 2 AS v"}, "sql: must be exactly one SELECT statement"),
        ({"type": "histogram"}, "type must be gauge or counter, not 'histogram'"),
        ({"labels": ["v"]}, "columns both label and value: v"),
        ({"labels": ["a", "a"]}, "label columns repeated: a"),
        ({"labels": ["datname"]}, "datname is added by the exporter; it cannot be a label column"),
        (
            {"labels": ["database"]},
            "database is added by the exporter; it cannot be a label column",
        ),
        ({"labels": ["bad-name"]}, "'bad-name' is not a valid label name"),
        ({"values": ["a", "b"]}, "several value columns need a value_label to tell them apart"),
        ({"value_label": "column"}, "value_label needs more than one value column"),
        (
            {"values": ["a", "b"], "labels": ["column"], "value_label": "column"},
            "label columns repeated: column",
        ),
        (
            {"min_server_version": 160000, "max_server_version": 150000},
            "min_server_version 160000 is above max_server_version 150000",
        ),
    ],
)
def test_bad_queries_fail_at_start_up_naming_the_query(
    fields: dict[str, Any], message: str
) -> None:
    assert config_error(query(**fields)) == AT + message


def test_field_errors_name_the_query_by_position() -> None:
    assert config_error(query(values=[])) == (
        f"{SOURCE}: databases[0].custom_queries[0].values: "
        "Tuple should have at least 1 item after validation, not 0"
    )
    assert config_error(query(name="bad name")) == (
        f"{SOURCE}: databases[0].custom_queries[0].name: "
        "String should match pattern '^[A-Za-z_:][A-Za-z0-9_:]*$'"
    )
    assert config_error(query(colour="red")) == (
        f"{SOURCE}: databases[0].custom_queries[0].colour: unknown key"
    )


def test_metric_names_are_unique_and_agree_across_databases() -> None:
    gauge, counter = query(name="x"), query(name="x_total", type="counter")
    assert config_error(query(name="x_total", type="counter"), query(name="x", type="counter")) == (
        f"{SOURCE}: databases[0]: custom query metric names must be unique, repeated: x"
    )
    assert config_error(gauge, second=[counter]) == (
        f"{SOURCE}: (top level): custom query 'x_total': type, help, labels and value_label "
        "must be the same in every database that defines it"
    )
    # The same query in two databases is fine.
    data = {
        "databases": [
            {"name": n, "dsn": "postgresql://db/app", "custom_queries": [gauge]} for n in "ab"
        ]
    }
    assert len(settings_from_data(data, SOURCE).databases) == 2


# --- at run time ----------------------------------------------------------------------------

SCHEMA = (
    "CREATE TABLE orders (id int, status text, amount numeric)",
    "INSERT INTO orders VALUES (1, 'paid', 10.5), (2, 'paid', 4.5), (3, 'open', 1), (4, NULL, 2)",
)


def worker(url: URL, registry: CollectorRegistry, *queries: dict[str, Any]) -> DatabaseWorker:
    store = SnapshotStore()
    registry.register(store)
    settings = DatabaseSettings.model_validate(
        {"name": "main", "dsn": dsn(url), "custom_queries": queries}
    )
    return DatabaseWorker(settings, Metrics(registry), store, {"database": DatabaseCollector})


def success(registry: CollectorRegistry, collector: str) -> float | None:
    labels = {"collector": collector, "database": "main"}
    return registry.get_sample_value("exporter_collector_success", labels)


async def test_labels_values_and_types(registry: CollectorRegistry, fresh_database: URL) -> None:
    execute(fresh_database, *SCHEMA)
    w = worker(
        fresh_database,
        registry,
        query(
            name="shop_orders",
            sql="SELECT status, count(*) AS n, sum(amount) AS amount FROM orders GROUP BY status",
            labels=["status"],
            values=["n", "amount"],
            value_label="column",
        ),
        query(
            name="shop_orders_seen_total",
            type="counter",
            # A colon inside a literal is not a bind parameter; ::int is a cast.
            sql="SELECT 'a:b' AS tag, count(*)::int AS n, NULL::int AS never FROM orders",
            labels=["tag"],
            values=["n", "never"],
            value_label="column",
        ),
    )
    try:
        assert await w.check()
        orders, seen = w.jobs[1:]
        assert await w.run_collector(orders)
        assert await w.run_collector(seen)
    finally:
        await w.close()
    assert sorted(
        (labels["status"], labels["column"], value)
        for labels, value in samples(registry, "shop_orders")
    ) == [
        ("open", "amount", 1),
        ("open", "n", 1),
        ("paid", "amount", 15),
        ("paid", "n", 2),
        ("unknown", "amount", 2),  # a NULL label
        ("unknown", "n", 1),
    ]
    counter = {"database": "main", "datname": str(fresh_database.database), "tag": "a:b"}
    assert registry.get_sample_value("shop_orders_seen_total", {**counter, "column": "n"}) == 4
    assert registry.get_sample_value("shop_orders_seen_total", {**counter, "column": "never"}) == 0
    assert success(registry, "custom:shop_orders") == 1
    assert success(registry, "custom:shop_orders_seen_total") == 1


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        (
            {"sql": "SELECT n FROM nope"},
            'UndefinedTableError: relation "nope" does not exist (SQLSTATE 42P01)',
        ),
        (
            {"sql": "SELECT 1 AS a, 2 AS b", "values": ["n"]},
            "CustomQueryError: column 'n' is not in the result (columns: a, b)",
        ),
        (
            {"sql": "SELECT 'x' AS l, 1 AS v", "labels": ["l", "m"]},
            "CustomQueryError: column 'm' is not in the result (columns: l, v)",
        ),
        (
            {"sql": "SELECT status AS v FROM orders"},
            "CustomQueryError: value column 'v' holds str, not a number "
            "(cast it in the SQL, e.g. ::numeric)",
        ),
        (
            {"sql": "SELECT id AS v FROM orders", "max_rows": 3},
            "CustomQueryError: more than max_rows (3) rows",
        ),
        (
            {"sql": "SELECT 'same' AS l, id AS v FROM orders", "labels": ["l"]},
            "CustomQueryError: two rows have the same labels ['same']",
        ),
        (
            {"sql": "WITH d AS (DELETE FROM orders RETURNING 1) SELECT count(*) AS v FROM d"},
            "ReadOnlySQLTransactionError: cannot execute SELECT in a read-only transaction "
            "(SQLSTATE 25006)",  # and the rows are still there (below)
        ),
    ],
)
async def test_run_time_failures_fail_only_that_query(
    fields: dict[str, Any],
    reason: str,
    registry: CollectorRegistry,
    fresh_database: URL,
    caplog: pytest.LogCaptureFixture,
) -> None:
    execute(fresh_database, *SCHEMA)
    w = worker(fresh_database, registry, query(name="broken", **fields), query(name="fine"))
    try:
        assert await w.check()
        database, broken, fine = w.jobs
        with caplog.at_level(logging.WARNING):
            assert not await w.run_collector(broken)
        assert [r.getMessage() for r in caplog.records] == [
            f"collector custom:broken on database main failed: {reason}"
        ]
        assert await w.run_collector(fine)
        assert await w.run_collector(database)
        assert await w.check()
    finally:
        await w.close()
    assert success(registry, "custom:broken") == 0
    assert success(registry, "custom:fine") == 1
    assert registry.get_sample_value("fine", names(fresh_database)) == 1
    assert samples(registry, "broken") == []
    assert execute(fresh_database, "SELECT count(*) FROM orders") == [(4,)]


async def test_outside_its_server_versions_a_query_is_skipped(
    registry: CollectorRegistry, fresh_database: URL, caplog: pytest.LogCaptureFixture
) -> None:
    w = worker(
        fresh_database,
        registry,
        query(name="future", min_server_version=990000),
        query(name="now", min_server_version=100000, max_server_version=990000),
    )
    try:
        assert await w.check()
        _, future, now = w.jobs
        with caplog.at_level(logging.INFO, logger="exporter.collectors"):
            assert await w.run_collector(future)
            assert await w.run_collector(future)
        assert await w.run_collector(now)
    finally:
        await w.close()
    assert [r.getMessage() for r in caplog.records] == [
        f"collector custom:future on database main skipped: server version {w.server_version} "
        "is outside 990000..",
    ]
    assert samples(registry, "future") == []
    assert success(registry, "custom:future") == 1
    assert registry.get_sample_value("now", names(fresh_database)) == 1


def test_the_shipped_config_example_is_valid() -> None:
    lines = (Path(__file__).resolve().parent.parent / "config" / "exporter.yaml").read_text()
    start = lines.index("    # custom_queries:\n")
    example = []
    for line in lines[start:].splitlines():
        if not line.startswith("    #"):
            break
        example.append(line.replace("    # ", "    ", 1))
    data = yaml.safe_load(
        "databases:\n  - name: main\n    dsn: postgresql://db/app\n" + "\n".join(example)
    )
    [q] = settings_from_data(data, SOURCE).databases[0].custom_queries
    assert (q.name, q.labels, q.values, q.value_label) == (
        "wallet_locked_balances",
        ("asset",),
        ("accounts", "amount"),
        "column",
    )
