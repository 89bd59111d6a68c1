"""The Alembic environment and the initial revision, on real PostgreSQL databases."""

from __future__ import annotations

import io
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from sqlalchemy import Connection, Engine, create_engine, text
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import create_async_engine

from exporter.demo import schema
from exporter.demo.models import Base
from exporter.dsn import async_url, sync_url

# The newest revision of alembic/versions.
HEAD = "0002"
WALLET_TABLES = {"users", "balances", "transfers", "ledger_entries"}

# (table, name, contype): p primary key, u unique, c check, f foreign key.
EXPECTED_CONSTRAINTS = {
    ("users", "pk_users", "p"),
    ("users", "uq_users_tron_address", "u"),
    ("balances", "pk_balances", "p"),
    ("balances", "uq_balances_user_id_asset", "u"),
    ("balances", "ck_balances_amount_non_negative", "c"),
    ("balances", "ck_balances_locked_non_negative", "c"),
    ("balances", "ck_balances_locked_within_amount", "c"),
    ("balances", "fk_balances_user_id_users", "f"),
    ("transfers", "pk_transfers", "p"),
    ("transfers", "ck_transfers_amount_positive", "c"),
    ("transfers", "ck_transfers_kind_allowed", "c"),
    ("transfers", "ck_transfers_parties_match_kind", "c"),
    ("transfers", "fk_transfers_from_user_id_users", "f"),
    ("transfers", "fk_transfers_to_user_id_users", "f"),
    ("ledger_entries", "pk_ledger_entries", "p"),
    ("ledger_entries", "ck_ledger_entries_delta_non_zero", "c"),
    ("ledger_entries", "fk_ledger_entries_transfer_id_transfers", "f"),
    ("ledger_entries", "fk_ledger_entries_user_id_users", "f"),
}

# (table, index): the indexes behind primary keys and unique constraints included.
EXPECTED_INDEXES = {
    ("users", "pk_users"),
    ("users", "uq_users_tron_address"),
    ("users", "ix_users_email"),
    ("users", "ix_users_email_is_active"),
    ("balances", "pk_balances"),
    ("balances", "uq_balances_user_id_asset"),
    ("balances", "ix_balances_user_id_asset"),
    ("transfers", "pk_transfers"),
    ("transfers", "ix_transfers_from_user_id"),
    ("transfers", "ix_transfers_to_user_id"),
    ("ledger_entries", "pk_ledger_entries"),
    ("ledger_entries", "ix_ledger_entries_transfer_id"),
    ("ledger_entries", "ix_ledger_entries_user_id_created_at"),
}


def alembic_config(url: URL | None = None) -> Config:
    """The wallet's Alembic configuration, pointed at `url`, printing nowhere."""
    return schema.alembic_config(url, output_buffer=io.StringIO(), stdout=io.StringIO())


@pytest.fixture
def sync_engine(fresh_database: URL) -> Iterator[Engine]:
    engine = create_engine(sync_url(fresh_database))
    try:
        yield engine
    finally:
        engine.dispose()


@pytest.fixture
def no_database_url_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)


def relations(engine: Engine) -> set[tuple[str, str]]:
    """(relkind, name) of every table, index and sequence in the public schema."""
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT c.relkind::text, c.relname FROM pg_class c"
                " JOIN pg_namespace n ON n.oid = c.relnamespace"
                " WHERE n.nspname = 'public' AND c.relkind IN ('r', 'i', 'S')"
            )
        )
        return {(kind, name) for kind, name in rows}


def current_version(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        return list(conn.execute(text("SELECT version_num FROM alembic_version")).scalars())


def test_upgrade_downgrade_upgrade_round_trip(
    fresh_database: URL, sync_engine: Engine, no_database_url_env: None
) -> None:
    cfg = alembic_config(fresh_database)

    command.upgrade(cfg, "head")
    tables = {name for kind, name in relations(sync_engine) if kind == "r"}
    assert tables == {*WALLET_TABLES, "alembic_version"}
    assert current_version(sync_engine) == [HEAD]
    schema_after_first_upgrade = relations(sync_engine)

    command.downgrade(cfg, "base")
    assert relations(sync_engine) == {("r", "alembic_version"), ("i", "alembic_version_pkc")}
    assert current_version(sync_engine) == []

    command.upgrade(cfg, "head")
    assert relations(sync_engine) == schema_after_first_upgrade
    assert current_version(sync_engine) == [HEAD]


def test_autogenerate_finds_no_difference(
    fresh_database: URL, sync_engine: Engine, no_database_url_env: None
) -> None:
    command.upgrade(alembic_config(fresh_database), "head")
    with sync_engine.connect() as conn:
        context = MigrationContext.configure(
            conn, opts={"compare_type": True, "compare_server_default": True}
        )
        assert compare_metadata(context, Base.metadata) == []


def test_constraints_and_indexes_have_conventional_names(
    fresh_database: URL, sync_engine: Engine, no_database_url_env: None
) -> None:
    command.upgrade(alembic_config(fresh_database), "head")
    with sync_engine.connect() as conn:
        constraints = {
            (table, name, kind)
            for table, name, kind in conn.execute(
                text(
                    # PostgreSQL 18 lists NOT NULL as constraints too (contype n), named by
                    # the server; the naming convention covers the other kinds.
                    "SELECT t.relname, c.conname, c.contype::text FROM pg_constraint c"
                    " JOIN pg_class t ON t.oid = c.conrelid WHERE t.relname = ANY(:tables)"
                    " AND c.contype <> 'n'"
                ),
                {"tables": sorted(WALLET_TABLES)},
            )
        }
        indexes = {
            (table, name)
            for table, name in conn.execute(
                text(
                    "SELECT tablename, indexname FROM pg_indexes"
                    " WHERE schemaname = 'public' AND tablename = ANY(:tables)"
                ),
                {"tables": sorted(WALLET_TABLES)},
            )
        }
    assert constraints == EXPECTED_CONSTRAINTS
    assert indexes == EXPECTED_INDEXES

    # Whatever the models declare exists under the same name.
    for table in Base.metadata.sorted_tables:
        for constraint in table.constraints:
            assert (table.name, constraint.name) in {(t, n) for t, n, _ in constraints}
        for index in table.indexes:
            assert (table.name, index.name) in indexes


def test_url_from_database_url_environment_variable(
    fresh_database: URL, sync_engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `postgres://`, as platforms hand it out; env.py gives it the asyncpg driver.
    dsn = fresh_database.set(drivername="postgres").render_as_string(hide_password=False)
    monkeypatch.setenv("DATABASE_URL", dsn)
    cfg = alembic_config()
    assert not cfg.get_main_option("sqlalchemy.url")

    command.upgrade(cfg, "head")

    assert current_version(sync_engine) == [HEAD]


def test_sqlalchemy_url_option_wins_over_environment(
    fresh_database: URL, sync_engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://nobody@127.0.0.1:1/nowhere")
    command.upgrade(alembic_config(fresh_database), "head")
    assert current_version(sync_engine) == [HEAD]


def test_reuses_a_connection_passed_in_attributes(
    sync_engine: Engine, no_database_url_env: None
) -> None:
    cfg = alembic_config()  # no URL at all: only the connection can be used
    with sync_engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
        # The caller's transaction: nothing is visible to others before it commits.
        with sync_engine.connect() as other:
            visible = other.execute(text("SELECT to_regclass('public.users')")).scalar()
            assert visible is None
    assert current_version(sync_engine) == [HEAD]


def _upgrade_on(conn: Connection, cfg: Config) -> None:
    cfg.attributes["connection"] = conn
    command.upgrade(cfg, "head")


async def test_async_caller_passes_its_connection_through_run_sync(
    fresh_database: URL, sync_engine: Engine, no_database_url_env: None
) -> None:
    engine = create_async_engine(async_url(fresh_database))
    try:
        async with engine.begin() as conn:
            await conn.run_sync(_upgrade_on, alembic_config())
    finally:
        await engine.dispose()
    assert current_version(sync_engine) == [HEAD]


async def test_inside_a_running_loop_without_connection_is_refused(
    fresh_database: URL, sync_engine: Engine, no_database_url_env: None
) -> None:
    with pytest.raises(RuntimeError, match=r"call alembic\.command outside the event loop"):
        command.upgrade(alembic_config(fresh_database), "head")
    assert "alembic_version" not in {name for _, name in relations(sync_engine)}


async def test_async_connection_in_attributes_is_refused(no_database_url_env: None) -> None:
    engine = create_async_engine("postgresql+asyncpg://nobody@127.0.0.1:1/nowhere")
    cfg = alembic_config()
    cfg.attributes["connection"] = engine.connect()  # not started: no connection is made
    try:
        with pytest.raises(TypeError, match="must be a sync Connection"):
            command.upgrade(cfg, "head")
    finally:
        await engine.dispose()


def test_without_any_url_online_mode_fails_clearly(no_database_url_env: None) -> None:
    with pytest.raises(RuntimeError, match="no database URL"):
        command.upgrade(alembic_config(), "head")


def test_offline_mode_writes_the_sql(no_database_url_env: None) -> None:
    cfg = alembic_config()
    command.upgrade(cfg, "head", sql=True)
    assert isinstance(cfg.output_buffer, io.StringIO)
    sql = cfg.output_buffer.getvalue()
    assert "CREATE TABLE users (" in sql
    assert "CREATE UNIQUE INDEX ix_users_email ON users (email);" in sql
    assert "CONSTRAINT ck_balances_locked_within_amount CHECK (locked_amount <= amount)" in sql
    assert (
        "CONSTRAINT fk_balances_user_id_users FOREIGN KEY(user_id) REFERENCES users (id)"
        " ON DELETE CASCADE" in sql
    )
    assert "INSERT INTO alembic_version (version_num) VALUES ('0001')" in sql


def test_the_checkouts_alembic_ini_drives_the_same_scripts(
    no_database_url_env: None, tmp_path: Path
) -> None:
    """`alembic` from the command line (the repository's alembic.ini, for new revisions) runs
    the same env.py and models as the packaged configuration the demo uses."""
    ini = Path(__file__).resolve().parent.parent / "alembic.ini"
    result = subprocess.run(
        [sys.executable, "-m", "alembic", "-c", str(ini), "upgrade", "head", "--sql"],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    cfg = alembic_config()
    command.upgrade(cfg, "head", sql=True)
    assert isinstance(cfg.output_buffer, io.StringIO)
    assert result.stdout == cfg.output_buffer.getvalue()
