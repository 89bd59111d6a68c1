"""The migrations collector: pending revisions and schema drift, with the repository's own
Alembic scripts and models (the exporter imports them only through the configured path)."""

from __future__ import annotations

import asyncio
import io
import subprocess
import sys
from typing import Any

import pytest
from alembic import command
from collector_helpers import execute, run_collector, samples
from prometheus_client import CollectorRegistry
from sqlalchemy.engine import URL

from exporter.collectors.migrations import MigrationsCollector, MigrationsError
from exporter.demo.schema import METADATA, SCRIPT_LOCATION, alembic_config
from exporter.settings import ConfigError, MigrationsCollectorSettings, settings_from_data

SCRIPTS = str(SCRIPT_LOCATION)


def collector(**options: Any) -> MigrationsCollector:
    settings = {"enabled": True, "script_location": SCRIPTS, "metadata": METADATA}
    return MigrationsCollector("main", MigrationsCollectorSettings(**{**settings, **options}))


async def alembic(url: URL, action: str, revision: str) -> None:
    cfg = alembic_config(url, output_buffer=io.StringIO(), stdout=io.StringIO())
    # The repository's env.py runs its own event loop: keep it off this one.
    await asyncio.to_thread(getattr(command, action), cfg, revision)


@pytest.fixture(autouse=True)
def no_database_url_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)  # env.py would prefer it


def gauge(registry: CollectorRegistry, name: str) -> float | None:
    return registry.get_sample_value(name, {"datname": "main"})


def info(registry: CollectorRegistry) -> list[tuple[str, str]]:
    return [
        (labels["database_revision"], labels["head_revision"])
        for labels, _ in samples(registry, "db_migrations_info")
    ]


async def test_at_head_nothing_is_pending_and_nothing_drifts(fresh_database: URL) -> None:
    await alembic(fresh_database, "upgrade", "head")
    registry = await run_collector(collector(), fresh_database)
    assert gauge(registry, "db_migrations_pending") == 0
    assert info(registry) == [("0002", "0002")]
    assert gauge(registry, "db_schema_drift_differences") == 0
    assert gauge(registry, "db_schema_drift_missing_indexes") == 0
    assert samples(registry, "db_schema_drift_missing_index") == []


async def test_an_index_dropped_by_hand_is_drift_named(fresh_database: URL) -> None:
    await alembic(fresh_database, "upgrade", "head")
    execute(
        fresh_database, "DROP INDEX ix_users_email_is_active", "DROP INDEX ix_transfers_to_user_id"
    )
    registry = await run_collector(collector(), fresh_database)
    assert gauge(registry, "db_migrations_pending") == 0
    assert gauge(registry, "db_schema_drift_differences") == 2
    assert gauge(registry, "db_schema_drift_missing_indexes") == 2
    assert samples(registry, "db_schema_drift_missing_index") == [
        (
            {
                "datname": "main",
                "schemaname": "public",
                "relname": "transfers",
                "indexrelname": "ix_transfers_to_user_id",
            },
            1,
        ),
        (
            {
                "datname": "main",
                "schemaname": "public",
                "relname": "users",
                "indexrelname": "ix_users_email_is_active",
            },
            1,
        ),
    ]
    # The cap bounds the named ones, never the count.
    registry = await run_collector(collector(max_missing_indexes=1), fresh_database)
    assert [
        labels["indexrelname"] for labels, _ in samples(registry, "db_schema_drift_missing_index")
    ] == ["ix_transfers_to_user_id"]
    assert gauge(registry, "db_schema_drift_missing_indexes") == 2


async def test_downgraded_to_base_every_revision_is_pending(fresh_database: URL) -> None:
    await alembic(fresh_database, "upgrade", "head")
    await alembic(fresh_database, "downgrade", "base")
    registry = await run_collector(collector(), fresh_database)
    assert gauge(registry, "db_migrations_pending") == 2
    assert info(registry) == [("none", "0002")]
    # The four wallet tables, and their seven indexes beside primary keys and unique ones.
    assert gauge(registry, "db_schema_drift_differences") == 11
    assert gauge(registry, "db_schema_drift_missing_indexes") == 7


async def test_without_metadata_only_migrations_are_reported(fresh_database: URL) -> None:
    # A database that never saw a migration: everything is pending.
    registry = await run_collector(collector(metadata=None), fresh_database)
    assert gauge(registry, "db_migrations_pending") == 2
    assert info(registry) == [("none", "0002")]
    assert gauge(registry, "db_schema_drift_differences") is None


async def test_unusable_paths_and_revisions_fail_clearly(fresh_database: URL) -> None:
    with pytest.raises(MigrationsError) as error:
        await run_collector(collector(metadata="no_such_module:Base.metadata"), fresh_database)
    assert str(error.value) == (
        "cannot import metadata 'no_such_module:Base.metadata': "
        "ModuleNotFoundError: No module named 'no_such_module'"
    )
    with pytest.raises(MigrationsError) as error:
        await run_collector(collector(metadata="exporter.demo.models:Base"), fresh_database)
    assert (
        str(error.value)
        == "metadata 'exporter.demo.models:Base' is a DeclarativeAttributeIntercept, not a MetaData"
    )

    with pytest.raises(MigrationsError) as error:
        await run_collector(collector(script_location="/nonexistent"), fresh_database)
    assert str(error.value).startswith("script_location '/nonexistent': ")

    execute(
        fresh_database,
        "CREATE TABLE alembic_version (version_num varchar(32) PRIMARY KEY)",
        "INSERT INTO alembic_version VALUES ('f00d')",
    )
    with pytest.raises(MigrationsError) as error:
        await run_collector(collector(), fresh_database)
    assert str(error.value).startswith(
        f"database revision f00d is not in {SCRIPTS!r} (is the database ahead of these scripts?)"
    )


def test_enabled_without_a_script_location_is_a_config_error() -> None:
    data = {
        "databases": [
            {
                "name": "main",
                "dsn": "postgresql://db/app",
                "collectors": {"migrations": {"enabled": True}},
            }
        ]
    }
    with pytest.raises(ConfigError) as error:
        settings_from_data(data, "exporter.yaml")
    assert str(error.value) == (
        "exporter.yaml: databases[0].collectors.migrations: "
        "script_location is required when the collector is enabled"
    )


def test_the_exporter_never_imports_the_models_itself() -> None:
    code = (
        "import sys, exporter, exporter.server, exporter.collectors;"
        " print(sorted(m for m in sys.modules"
        " if m.partition('.')[0] == 'models' or m.startswith('exporter.demo')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout == "[]\n"
