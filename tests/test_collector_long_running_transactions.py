"""The long_running_transactions collector: open transactions on the server."""

from __future__ import annotations

import pytest
from collector_helpers import (
    execute,
    held_in_transaction,
    refused_without_pg_monitor,
    run_collector,
)
from sqlalchemy.engine import URL

from exporter.collectors.long_running_transactions import LongRunningTransactionsCollector
from exporter.settings import CollectorSettings

# The age of the one transaction with an ID in the test's own database: the held one.
HELD_AGE = (
    "SELECT extract(epoch FROM clock_timestamp() - xact_start)::float8 FROM pg_stat_activity"
    " WHERE datname = current_database() AND backend_xid IS NOT NULL"
)


def collector() -> LongRunningTransactionsCollector:
    return LongRunningTransactionsCollector("main", CollectorSettings())


async def test_an_open_transaction_is_counted_with_its_age(fresh_database: URL) -> None:
    with held_in_transaction(fresh_database, "SELECT txid_current()"):
        [(age,)] = execute(fresh_database, HELD_AGE)
        registry = await run_collector(collector(), fresh_database)
    # Other sessions of the (shared) test server may be in transactions too.
    count = registry.get_sample_value("pg_long_running_transactions", {})
    assert count is not None
    assert count >= 1
    oldest = registry.get_sample_value("pg_long_running_transactions_oldest_age_seconds", {})
    assert oldest is not None
    assert oldest >= age > 0


async def test_a_role_without_pg_monitor_is_told_which_grant_it_lacks(
    unprivileged_database: URL, caplog: pytest.LogCaptureFixture
) -> None:
    await refused_without_pg_monitor(
        collector(),
        unprivileged_database,
        "see other roles' transactions in pg_stat_activity (needs pg_read_all_stats)",
        caplog,
    )
