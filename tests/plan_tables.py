"""Tables whose plans show each finding of exporter.plan, built once per test session.

`items` has 20,000 rows: a sequential scan of it is large. `k` and `k2` are equal (100 values
each), so the planner, taking them as independent, estimates `k = 5 AND k2 = 5` at 2 rows
where 200 come back. `bucket` (1,000 rows each) has an index. `tags` is small (20 rows).
Statistics are taken explicitly and autovacuum is off for both, so every plan is the same on
every run.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Connection, Engine, text

SCHEMA = """
CREATE TABLE items (
    id int PRIMARY KEY, k int NOT NULL, k2 int NOT NULL, s text NOT NULL, bucket int NOT NULL
) WITH (autovacuum_enabled = off);
INSERT INTO items
    SELECT g, mod(g, 100), mod(g, 100), md5(g::text), g / 1000 FROM generate_series(1, 20000) g;
CREATE INDEX items_bucket ON items (bucket);
CREATE TABLE tags (id int PRIMARY KEY, name text NOT NULL) WITH (autovacuum_enabled = off);
INSERT INTO tags SELECT g, 'tag ' || g FROM generate_series(1, 20) g;
ANALYZE items;
ANALYZE tags;
"""

ITEMS_ROWS = 20_000


@contextmanager
def settings(conn: Connection, **values: str) -> Iterator[None]:
    """Planner settings (`work_mem="64kB"`) for what runs on `conn` inside the block; set with
    SET LOCAL in the transaction the block runs in, so they end with it."""
    with conn.begin():
        for name, value in values.items():
            conn.execute(
                text("SELECT set_config(:name, :value, true)"), {"name": name, "value": value}
            )
        yield


def items_checksum(engine: Engine) -> tuple[int, int]:
    """Rows and the sum of `k` in items, read on a connection of its own."""
    with engine.connect() as conn:
        count, total = conn.execute(text("SELECT count(*), sum(k) FROM items")).one()
    return count, total


def table_exists(engine: Engine, name: str) -> bool:
    with engine.connect() as conn:
        found = conn.execute(text("SELECT to_regclass(:name) IS NOT NULL"), {"name": name})
        return bool(found.scalar_one())
