"""`exporter.explain()` on the real PostgreSQL: the statement runs (ANALYZE) and is always
rolled back, from a Connection or a Session, for text and ORM statements; bad input is a clear
error that leaves nothing changed."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from plan_tables import ITEMS_ROWS, items_checksum, table_exists
from sqlalchemy import Connection, Engine, select, text
from sqlalchemy.exc import DataError, InternalError, StatementError
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from exporter import explain
from exporter.dsn import async_url
from exporter.explainer import DdlRefused


class Base(DeclarativeBase):
    pass


class Item(Base):
    __tablename__ = "items"
    id: Mapped[int] = mapped_column(primary_key=True)
    k: Mapped[int]
    k2: Mapped[int]
    s: Mapped[str]


@pytest.fixture
def conn(plan_engine: Engine) -> Iterator[Connection]:
    with plan_engine.connect() as conn:
        yield conn


def test_an_update_explained_with_analyze_runs_and_changes_nothing(
    plan_engine: Engine, conn: Connection
) -> None:
    before = items_checksum(plan_engine)
    plan = explain(conn, text("UPDATE items SET k = k + 1 WHERE k2 < :below"), {"below": 50})
    assert plan.root.node_type == "ModifyTable"
    assert plan.root.label() == "Update on items"
    (scan,) = plan.root.children
    assert scan.actual_rows == ITEMS_ROWS // 2  # it ran: half the rows were updated
    assert plan.execution_ms is not None
    assert not conn.in_transaction()
    assert items_checksum(plan_engine) == before


def test_inside_an_open_transaction_only_the_explained_statement_is_undone(
    plan_engine: Engine, conn: Connection
) -> None:
    before = items_checksum(plan_engine)
    with conn.begin() as transaction:
        conn.execute(text("UPDATE items SET k = k + 1 WHERE id = 1"))
        explain(conn, "DELETE FROM items")
        # The caller's own change is still there, in its transaction.
        assert conn.execute(text("SELECT count(*), sum(k) FROM items")).one() == (
            before[0],
            before[1] + 1,
        )
        transaction.rollback()
    assert items_checksum(plan_engine) == before


def test_without_analyze_the_statement_is_only_planned(conn: Connection) -> None:
    plan = explain(conn, "DELETE FROM items WHERE s < '1'", analyze=False)
    assert plan.root.node_type == "ModifyTable"
    assert plan.root.loops is None
    assert plan.execution_ms is None
    # The size of the table comes from the statistics.
    assert [f.short for f in plan.findings] == [f"seq scan on items (~{ITEMS_ROWS} rows)"]


def test_an_orm_select_from_a_session_with_its_parameters(plan_engine: Engine) -> None:
    with Session(plan_engine) as session:
        plan = explain(session, select(Item).where(Item.k == 5, Item.id.in_([1, 105, 205])))
    assert plan.root.node_type in ("Index Scan", "Bitmap Heap Scan")
    assert plan.root.actual_rows == 2  # ids 105 and 205 have k = 5
    assert plan.findings == ()


async def test_an_async_session_explains_through_run_sync(plan_engine: Engine) -> None:
    engine = create_async_engine(async_url(plan_engine.url))
    try:
        async with AsyncSession(engine) as session:
            statement = select(Item.k).where(Item.id == 105)
            plan = await session.run_sync(lambda sync_session: explain(sync_session, statement))
    finally:
        await engine.dispose()
    assert plan.root.label() == "Index Scan using items_pkey on items"
    assert plan.root.actual_rows == 1


def test_a_text_statement_with_parameters_shows_what_to_fix(conn: Connection) -> None:
    plan = explain(conn, text("SELECT * FROM items WHERE s < :low"), {"low": "1"})
    (finding,) = plan.findings
    assert finding.message == (
        f"sequential scan of items (~{ITEMS_ROWS} rows) with Filter (s < '1'::text):"
        " an index on those columns may help"
    )
    rendered = str(plan)
    assert rendered.startswith("Seq Scan on items  (cost=")
    assert rendered.endswith(f"Findings:\n  - {finding.message}")


def test_a_failing_statement_raises_its_error_and_changes_nothing(
    plan_engine: Engine, conn: Connection
) -> None:
    before = items_checksum(plan_engine)
    # Fails at id 10, after updating the rows before it.
    with pytest.raises(DataError, match="division by zero"):
        explain(conn, "UPDATE items SET k = 100 / (id - 10)")
    assert not conn.in_transaction()
    assert conn.execute(text("SELECT 1")).scalar_one() == 1  # the connection is usable
    assert items_checksum(plan_engine) == before


def test_a_missing_parameter_is_a_clear_error(plan_engine: Engine, conn: Connection) -> None:
    before = items_checksum(plan_engine)
    with pytest.raises(StatementError, match="A value is required for bind parameter 'low'"):
        explain(conn, text("UPDATE items SET k = 0 WHERE id > :low"))
    assert not conn.in_transaction()
    assert items_checksum(plan_engine) == before


def test_ddl_is_refused_with_analyze_unless_allowed(plan_engine: Engine, conn: Connection) -> None:
    ddl = "CREATE TABLE items_copy AS SELECT * FROM items"
    with pytest.raises(DdlRefused, match=r"refuses CREATE with analyze=True.*allow_ddl=True") as e:
        explain(conn, ddl)
    assert isinstance(e.value, ValueError)
    assert e.value.keyword == "CREATE"
    assert not conn.in_transaction()  # refused before anything ran
    assert explain(conn, ddl, analyze=False).root.node_type == "Seq Scan"
    assert explain(conn, ddl, allow_ddl=True).root.actual_rows == ITEMS_ROWS
    assert not table_exists(plan_engine, "items_copy")  # rolled back
    # Read as PostgreSQL reads it: a leading comment or lower case hides nothing.
    with pytest.raises(ValueError, match="refuses CREATE"):
        explain(conn, "/* copy */ create materialized view items_view as select * from items")


def test_on_a_read_only_server_analyze_of_a_write_fails_and_plain_explain_works(
    plan_engine: Engine, conn: Connection
) -> None:
    # What a hot standby answers: every transaction is read-only.
    conn.execute(text("SET default_transaction_read_only = on"))
    conn.commit()
    try:
        with pytest.raises(InternalError, match="read-only transaction"):
            explain(conn, "DELETE FROM items")
        assert explain(conn, "DELETE FROM items", analyze=False).root.node_type == "ModifyTable"
        assert explain(conn, "SELECT count(*) FROM items").root.actual_rows == 1
    finally:
        conn.execute(text("RESET default_transaction_read_only"))
        conn.commit()
    assert items_checksum(plan_engine)[0] == ITEMS_ROWS
