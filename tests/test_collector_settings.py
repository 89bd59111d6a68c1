"""The settings collector: pg_settings as postgres_exporter exports it."""

from __future__ import annotations

from collections import namedtuple
from pathlib import Path

import pytest
from collector_helpers import execute, run_collector
from pg_cluster import binary_dirs, private_cluster, server_version
from prometheus_client import CollectorRegistry
from sqlalchemy.engine import URL, make_url

from exporter.collectors.compatibility import postgres_exporter_view
from exporter.collectors.settings import SettingsCollector, setting_family
from exporter.settings import SettingsCollectorSettings


def setting(url: URL, name: str) -> str:
    return str(execute(url, f"SELECT setting FROM pg_settings WHERE name = '{name}'")[0][0])


def value(registry: CollectorRegistry, name: str) -> float | None:
    return registry.get_sample_value(name, {})


async def test_units_are_converted_and_names_are_postgres_exporters(fresh_database: URL) -> None:
    name = fresh_database.database
    execute(
        fresh_database,
        f"""ALTER DATABASE "{name}" SET idle_in_transaction_session_timeout = '1500ms'""",
        f"""ALTER DATABASE "{name}" SET enable_seqscan = off""",
        f"""ALTER DATABASE "{name}" SET work_mem = '3MB'""",
    )
    registry = await run_collector(
        SettingsCollector("main", SettingsCollectorSettings()), fresh_database
    )
    max_connections = int(setting(fresh_database, "max_connections"))
    assert value(registry, "pg_settings_max_connections") == max_connections
    assert value(registry, "pg_settings_idle_in_transaction_session_timeout_seconds") == 1.5  # ms
    assert value(registry, "pg_settings_work_mem_bytes") == 3 * 1024 * 1024  # kB
    blocks = int(setting(fresh_database, "shared_buffers"))
    assert value(registry, "pg_settings_shared_buffers_bytes") == blocks * 8192  # 8kB
    assert value(registry, "pg_settings_enable_seqscan") == 0  # bool off
    assert value(registry, "pg_settings_enable_indexscan") == 1
    # -1 ("disabled") is kept as it is, not converted.
    assert setting(fresh_database, "log_min_duration_statement") == "-1"
    assert value(registry, "pg_settings_log_min_duration_statement_seconds") == -1
    # Strings (data_directory, ...) are not exported.
    names = {family.name for family in registry.collect()}
    assert "pg_settings_data_directory" not in names
    count = execute(
        fresh_database,
        "SELECT count(*) FROM pg_settings WHERE vartype IN ('bool', 'integer', 'real')",
    )
    assert len(names) == count[0][0]
    docs = {family.name: family.documentation for family in registry.collect()}
    assert docs["pg_settings_work_mem_bytes"].endswith("[Units converted to bytes.]")


async def test_at_most_max_settings_are_exported(fresh_database: URL) -> None:
    collector = SettingsCollector("main", SettingsCollectorSettings(max_settings=3))
    registry = await run_collector(collector, fresh_database)
    assert len(list(registry.collect())) == 3


@pytest.mark.parametrize("bindir", binary_dirs(), ids=lambda d: f"pg{server_version(d)}")
async def test_reserved_connections_is_exported_from_postgresql_16_on(bindir: Path) -> None:
    # The connections alert takes it off the usable ones; before 16 it has no series at all.
    version = server_version(bindir)
    settings = ["reserved_connections = 4"] if version >= 16 else []
    with private_cluster(*settings, bindir=bindir) as cluster:
        collector = SettingsCollector("main", SettingsCollectorSettings())
        registry = await run_collector(collector, make_url(cluster.url))
    expected = 4 if version >= 16 else None
    assert value(registry, "pg_settings_reserved_connections") == expected
    assert value(registry, "pg_settings_superuser_reserved_connections") == 3


def test_a_unit_it_does_not_know_skips_that_setting() -> None:
    Row = namedtuple("Row", "name setting unit short_desc vartype")
    assert setting_family(Row("future.size", "4", "128kB", "A size.", "integer")) is None
    family = setting_family(Row("custom.limit", "4", "", "A limit.", "integer"))
    assert family is not None
    assert (family.name, family.samples[0].value) == ("pg_settings_custom_limit", 4)


def test_names_promtool_would_flag_are_changed_here_and_kept_for_postgres_exporter() -> None:
    Row = namedtuple("Row", "name setting unit short_desc vartype")
    for setting, unit, name, kind, theirs in (
        ("tcp_keepalives_count", "", "pg_settings_tcp_keepalives_count", "unknown", None),
        (
            "wal_summary_keep_time",
            "min",
            "pg_settings_wal_summaries_keep_time_seconds",
            "gauge",
            "pg_settings_wal_summary_keep_time_seconds",
        ),
    ):
        family = setting_family(Row(setting, "9", unit, "A setting.", "integer"))
        assert family is not None
        assert (family.name, family.type) == (name, kind)
        view = postgres_exporter_view(
            SettingsCollector("main", SettingsCollectorSettings()), [family], "db:5432"
        )
        assert [(f.name, f.type, f.samples[0].name, f.samples[0].labels) for f in view] == [
            (theirs or name, "gauge", theirs or name, {"server": "db:5432"})
        ]
    plain = setting_family(Row("max_connections", "100", "", "Connections.", "integer"))
    assert plain is not None
    assert plain.type == "gauge"
