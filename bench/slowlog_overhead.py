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
"""

from __future__ import annotations

import argparse
import os
import tempfile

from instrumentation_overhead import Comparison, database, prepare, timed  # bench/ is on the path
from prometheus_client import CollectorRegistry
from sqlalchemy import create_engine, text

from exporter import Metrics, instrument, uninstrument
from exporter.dsn import sync_url
from exporter.inprocess_settings import PlanSettings, SlowQuerySettings
from exporter.slowlog import SlowQueryLog


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=21)
    parser.add_argument("--queries", type=int, default=2000)
    args = parser.parse_args()
    with database() as url, tempfile.TemporaryDirectory() as scratch:
        prepare(url)
        engine = create_engine(sync_url(url))
        metrics = Metrics(CollectorRegistry())
        out = os.path.join(scratch, "slow.jsonl")

        def log(threshold_ms: float) -> SlowQueryLog:
            settings = SlowQuerySettings(
                threshold_ms=threshold_ms,
                stdout=False,
                file=out,
                queue_size=1_000_000,
                plans=PlanSettings(enabled=False),
            )
            return SlowQueryLog(settings, metrics)

        never, always = log(1e9), log(0)
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
