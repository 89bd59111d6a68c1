"""`explain()`: a statement's plan for a developer, read by exporter.plan.

    from exporter import explain
    print(explain(session, select(User).where(User.email == "a@example.com")))

EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) runs the statement for real, so it runs inside a
transaction (or, when the caller already has one open, a savepoint) that is always rolled back:
an UPDATE explained this way changes nothing. What a rollback cannot undo still happens:
sequences advance, and DDL takes its locks, so DDL is refused with ANALYZE unless allowed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Session
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import ClauseElement
from sqlalchemy.sql.expression import Executable

from exporter.plan import RELATION_ROWS, Plan, read
from exporter.sql import identify

# Statements that change the schema (or hold its locks) even when rolled back.
DDL = frozenset({"CREATE", "ALTER", "DROP", "TRUNCATE", "GRANT", "REVOKE", "COMMENT", "REINDEX"})


class DdlRefused(ValueError):
    """DDL given with `analyze` and without `allow_ddl`; `keyword` is its first word."""

    def __init__(self, keyword: str) -> None:
        super().__init__(
            f"explain() refuses {keyword} with analyze=True: EXPLAIN ANALYZE runs it, and a"
            " rollback does not undo its locks; pass allow_ddl=True, or analyze=False"
        )
        self.keyword = keyword


class _Explain(Executable, ClauseElement):
    """`EXPLAIN (options) <statement>`, compiled by the connection's dialect, so that bound
    parameters (expanding IN lists, types) are handled as when the statement itself runs."""

    inherit_cache = False  # built once per call; nothing to cache

    def __init__(self, statement: ClauseElement, options: str) -> None:
        self.statement = statement
        self.explain_options = options


@compiles(_Explain)
def _compile_explain(element: _Explain, compiler: SQLCompiler, **kw: Any) -> str:
    return f"EXPLAIN ({element.explain_options}) {compiler.process(element.statement, **kw)}"


def explain(
    target: Connection | Session,
    statement: str | ClauseElement,
    params: Mapping[str, Any] | None = None,
    *,
    analyze: bool = True,
    allow_ddl: bool = False,
) -> Plan:
    """The plan of `statement` (SQL text, `text()`, or a Core/ORM statement) with `params`,
    with its findings; `str()` of it is the readable tree. With `analyze` the statement runs
    (EXPLAIN ANALYZE, BUFFERS) and is rolled back; without, it is only planned.

    A Session's transaction begins if it had none (as for any statement it runs); the
    statement is explained in a savepoint inside it. Async code: `await
    session.run_sync(lambda s: explain(s, statement))`.

    DdlRefused (a ValueError) for DDL with `analyze` (unless `allow_ddl`); a statement that
    fails raises SQLAlchemy's error, after the rollback."""
    clause = text(statement) if isinstance(statement, str) else statement
    conn = target.connection() if isinstance(target, Session) else target
    keyword = identify(str(clause.compile(dialect=conn.dialect))).operation
    if analyze and keyword in DDL and not allow_ddl:
        raise DdlRefused(keyword)
    options = "ANALYZE, BUFFERS, FORMAT JSON" if analyze else "FORMAT JSON"
    # A savepoint inside the caller's transaction, so that its earlier work survives.
    transaction = conn.begin_nested() if conn.in_transaction() else conn.begin()
    try:
        raw = conn.execute(_Explain(clause, options), dict(params or {})).scalar_one()
        plan = read(raw)
        rows = conn.execute(
            text(RELATION_ROWS.format(names=":names")), {"names": plan.seq_scanned()}
        ).all()
    finally:
        transaction.rollback()
    return plan.with_sizes({relname: size for relname, size in rows})
