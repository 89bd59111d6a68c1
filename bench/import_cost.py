"""What `import exporter` + `instrument(engine)` costs an application, beside OpenTelemetry's
SQLAlchemy instrumentor, in the same run.

Each figure is the median over `--runs` fresh interpreters (the scenarios take turns, so a
busy machine slows them alike). A child first imports the baseline every instrumented
application already has (`sqlalchemy`, `prometheus_client`) and creates its engine (no
connection is made), then times the step and counts the modules it added to `sys.modules`.

The one-off cost of the first new statement (db-exporter loads pglast there, not on import)
is measured the same way, as the first `identify()` minus the second one.

OpenTelemetry's instrumentor needs SQLAlchemy < 2.1: run this with the `.venv-bench` Python
(bench/README.md); with the main `.venv` its line says it was skipped.

    .venv-bench/bin/python bench/import_cost.py [--runs 15]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from typing import NamedTuple

BASELINE = """
import sys, time
import sqlalchemy, prometheus_client
{engine}
before = set(sys.modules)
start = time.perf_counter()
{step}
seconds = time.perf_counter() - start
added = sorted(set(sys.modules) - before)
print(__import__("json").dumps({{"seconds": seconds, "added": added}}))
"""
SYNC_ENGINE = 'engine = sqlalchemy.create_engine("postgresql+psycopg://u@localhost/db")'
ASYNC_ENGINE = """from sqlalchemy.ext.asyncio import create_async_engine
engine = create_async_engine("postgresql+asyncpg://u@localhost/db")"""

SCENARIOS = {
    "db-exporter, sync engine": (SYNC_ENGINE, "import exporter\nexporter.instrument(engine)"),
    "db-exporter, async engine": (ASYNC_ENGINE, "import exporter\nexporter.instrument(engine)"),
    "OpenTelemetry, sync engine": (
        SYNC_ENGINE,
        "from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor\n"
        "SQLAlchemyInstrumentor().instrument(engine=engine)",
    ),
    # The first statement db-exporter has not seen before parses it with pglast: on the first
    # one of the process that includes importing pglast.
    "db-exporter, first new statement (one-off)": (
        "from exporter.sql import identify",
        "identify('SELECT id FROM users WHERE id = 1')",
    ),
    "db-exporter, a later new statement": (
        "from exporter.sql import identify\nidentify('SELECT 1')",
        "identify('SELECT id FROM users WHERE id = 1')",
    ),
}
# What the light import promises not to load (pglast: not before the first statement).
HEAVY = ("aiohttp", "asyncpg", "psycopg", "alembic", "yaml", "pydantic", "pglast")


class Run(NamedTuple):
    seconds: float
    added: list[str]  # modules the step loaded


def child(engine: str, step: str) -> Run | None:
    code = BASELINE.format(engine=engine, step=step)
    # With bytecode caches, as an installed package has them (pip compiles on install): the
    # warm-up round writes them for a source checkout.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    if done.returncode != 0:
        return None  # e.g. OpenTelemetry not installed, or refusing this SQLAlchemy
    result = json.loads(done.stdout.splitlines()[-1])
    return Run(result["seconds"], result["added"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=15)
    runs = parser.parse_args().runs
    results: dict[str, list[Run]] = {name: [] for name in SCENARIOS}
    for round in range(runs + 1):
        for name, (engine, step) in SCENARIOS.items():
            result = child(engine, step)
            if result is not None and round > 0:  # round 0 warms the caches up
                results[name].append(result)
    import sqlalchemy

    print(f"median of {runs} fresh interpreters each, Python {sys.version.split()[0]}, ", end="")
    print(f"SQLAlchemy {sqlalchemy.__version__}")
    print(f"{'over import sqlalchemy, prometheus_client + engine':<46} {'modules':>8} {'ms':>8}")
    for name, rows in results.items():
        if not rows:
            print(f"{name:<46} skipped (failed in this environment; see the docstring)")
            continue
        modules = statistics.median(len(run.added) for run in rows)
        ms = statistics.median(run.seconds for run in rows) * 1000
        tops = {module.split(".")[0] for run in rows for module in run.added}
        heavy = sorted(tops & set(HEAVY))
        note = f"  loads {', '.join(heavy)}" if heavy else ""
        print(f"{name:<46} {modules:>8.0f} {ms:>8.1f}{note}")


if __name__ == "__main__":
    main()
