"""What identifying a statement costs: once per distinct statement, and for every statement after.

    .venv/bin/python bench/identify_cost.py [--repeat 15] [--number 200]

For each statement kind, in the same run:

- "miss": identify() on a statement not seen before (the cache bypassed): libpg_query's parse,
  fingerprint and normalize, then the masking of what normalize() left;
- "masking": that last step alone (PostgreSQL's scanner over the normalised text), and its
  share of the miss; statements whose normalised text has no quote left skip it;
- "hit": identify() on a statement seen before, what every later execution pays.

No database is needed. Figures are medians over `--repeat` rounds of `--number` calls.
"""

from __future__ import annotations

import argparse
import statistics
import timeit
from collections.abc import Callable
from functools import partial

from exporter.sql import DML, _fully_masked, _identify, identify

STATEMENTS = {
    "point select": "SELECT id, email FROM users WHERE email = 'a@example.org' AND is_active",
    "insert, 20 literals": "INSERT INTO ledger (a, b) VALUES "
    + ", ".join(f"({i}, 'v{i}')" for i in range(10)),
    "comment on": "COMMENT ON TABLE users IS 'who may sign in'",
    "create table": "CREATE TABLE t (a text DEFAULT 'x', n int CHECK (n > 5), v varchar(40))",
    "create function": "CREATE FUNCTION f() RETURNS int AS $$ SELECT 42 + length('x') $$ "
    "LANGUAGE sql",
}


def median_us(call: Callable[[], object], number: int, repeat: int) -> float:
    rounds = timeit.repeat(call, number=number, repeat=repeat)
    return statistics.median(rounds) / number * 1e6


def measure(name: str, sql: str, number: int, repeat: int) -> None:
    from pglast import parser as pg

    miss = _identify.__wrapped__  # type: ignore[attr-defined]
    total = median_us(partial(miss, sql, True), number, repeat)
    identity = identify(sql)
    utility = identity.operation not in DML
    masking = partial(_fully_masked, identity.fingerprint, pg.normalize(sql), utility)
    masked = median_us(masking, number, repeat)
    hit = median_us(partial(identify, sql), number * 50, repeat)
    print(f"{name:22} {total:7.1f}us {masked:7.1f}us {masked / total:5.0%} {hit * 1000:5.0f}ns")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--number", type=int, default=200)
    args = parser.parse_args()
    print(f"{'statement':22} {'miss':>9} {'masking':>9} {'share':>5} {'hit':>7}")
    for name, sql in STATEMENTS.items():
        measure(name, sql, args.number, args.repeat)


if __name__ == "__main__":
    main()
