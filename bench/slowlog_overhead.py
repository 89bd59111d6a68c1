"""What the slow-query log costs on the query path.

    .venv/bin/python bench/slowlog_overhead.py [--rounds 21] [--queries 2000]

Same method as bench/instrumentation_overhead.py (one held connection, instrumentation switched
between rounds, medians of per-round client CPU and wall time), on psycopg:

- "not slow": instrument() with the slow-query log (threshold far above every statement)
  against instrument() without it: the cost every ordinary statement pays for the log;
- "slow record": threshold 0, so every statement produces a record (call site, redacted
  parameters, queue), against the same log with a threshold nothing reaches: the cost of one
  record on the query path. The writer thread's JSON and I/O run beside it, not counted here
  (its output goes to a file so the terminal does not slow it).

`--call-site`: one call-site lookup on its own, from inside SQLAlchemy's execute path (a
listener posing as part of SQLAlchemy, so the walk passes SQLAlchemy's frames to this file):
the part of a record's cost that depends on the stack, repeatable on a busy machine.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import timeit
from typing import Any

import sqlalchemy
from instrumentation_overhead import Comparison, database, prepare, timed  # bench/ is on the path
from prometheus_client import CollectorRegistry
from sqlalchemy import create_engine, event, text

from exporter import Metrics, instrument, uninstrument
from exporter.dsn import sync_url
from exporter.inprocess_settings import CallSiteSettings, PlanSettings, SlowQuerySettings
from exporter.slowlog import SlowQueryLog
from exporter.slowlog.callsite import CallSiteFinder

# Compiled under SQLAlchemy's directory and module name: skipped like SQLAlchemy's own frames.
_LOOKUP = """
def measure(*_):
    results.append(min(timeit.repeat(finder.find, number=number, repeat=7)) / number)
    results.append(finder.find())
"""


def file_log(metrics: Metrics, path: str, **settings: Any) -> SlowQueryLog:
    """A slow-query log writing to `path` only (a terminal would slow its writer), no plans."""
    return SlowQueryLog(
        SlowQuerySettings(stdout=False, file=path, plans=PlanSettings(enabled=False), **settings),
        metrics,
    )


def call_site_cost(url: str, number: int = 20_000) -> None:
    engine = create_engine(sync_url(url))
    results: list[Any] = []
    finder = CallSiteFinder(CallSiteSettings())
    namespace = {"__name__": "sqlalchemy._bench", "timeit": timeit, "finder": finder}
    namespace.update(results=results, number=number)
    where = os.path.join(os.path.dirname(sqlalchemy.__file__), "_bench.py")
    exec(compile(_LOOKUP, where, "exec"), namespace)
    event.listen(engine, "before_cursor_execute", namespace["measure"])
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))
    engine.dispose()
    seconds, site = results
    print(f"call site    {seconds * 1e6:6.2f} us per lookup, found {site.file}:{site.line}")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=21)
    parser.add_argument("--queries", type=int, default=2000)
    parser.add_argument("--call-site", action="store_true", help="time one call-site lookup")
    args = parser.parse_args()
    if args.call_site:
        with database() as url:
            call_site_cost(url)
        return
    with database() as url, tempfile.TemporaryDirectory() as scratch:
        prepare(url)
        engine = create_engine(sync_url(url))
        metrics = Metrics(CollectorRegistry())
        out = os.path.join(scratch, "slow.jsonl")
        never = file_log(metrics, out, threshold_ms=1e9, queue_size=1_000_000)
        always = file_log(  # a record for each statement: no rate limit
            metrics, out, threshold_ms=0, queue_size=1_000_000, records_per_second=0
        )
        statement, params = text("SELECT name FROM bench_items WHERE id = :id"), {"id": 42}
        with engine.connect() as conn:

            def run() -> None:
                conn.execute(statement, params)

            timed(run, 200)
            cases = {
                "not slow": (
                    lambda: instrument(engine, metrics=metrics, slow_log=False),
                    lambda: instrument(engine, metrics=metrics, slow_log=never),
                ),
                "slow record": (
                    lambda: instrument(engine, metrics=metrics, slow_log=never),
                    lambda: instrument(engine, metrics=metrics, slow_log=always),
                ),
            }
            for label, (baseline, variant) in cases.items():

                def attach(variant=variant) -> None:  # type: ignore[no-untyped-def]
                    uninstrument(engine)
                    variant()

                def detach(baseline=baseline) -> None:  # type: ignore[no-untyped-def]
                    uninstrument(engine)
                    baseline()

                comparison = Comparison(attach, detach)
                for r in range(args.rounds):
                    for on in comparison.order(r):
                        comparison.switch(on)
                        comparison.record(on, timed(run, args.queries))
                uninstrument(engine)
                always.flush()
                _, cpu, wall = comparison.deltas()
                print(
                    f"{label:12} +{cpu:6.2f} us CPU per statement (+{wall:6.2f} wall)", flush=True
                )
        never.close()
        always.close()
        engine.dispose()


if __name__ == "__main__":
    main()
