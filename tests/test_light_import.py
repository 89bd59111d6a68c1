"""`import exporter` + `instrument(engine)` loads no server, driver, config or parser code,
prints nothing, and each of those loads when its part is used. Fresh interpreters, since the
test process itself has loaded everything."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy.engine import URL
from subprocesses import run_python

from exporter.dsn import async_url, sync_url

# Top-level packages the application should not get from `import exporter` + `instrument()`.
HEAVY = {"aiohttp", "asyncpg", "psycopg", "alembic", "yaml", "pydantic", "pglast"}

ENGINES = {
    "sync": "engine = sqlalchemy.create_engine(sys.argv[1])",
    "async": "from sqlalchemy.ext.asyncio import create_async_engine\n"
    "engine = create_async_engine(sys.argv[1])",
}
STATEMENTS = {
    "sync": "with engine.connect() as conn:\n    conn.exec_driver_sql('SELECT 1')",
    "async": "import asyncio\n"
    "async def statement():\n"
    "    async with engine.connect() as conn:\n"
    "        await conn.exec_driver_sql('SELECT 1')\n"
    "    await engine.dispose()\n"
    "asyncio.run(statement())",
}

# The application configures INFO logging first (Alembic's import used to print six lines),
# creates its engine (which loads its driver), then instruments it and runs one statement.
APPLICATION = """
import json, logging, sys
logging.basicConfig(level=logging.INFO)
import sqlalchemy
{engine}
before = set(sys.modules)
import exporter
exporter.instrument(engine)
instrumented = set(sys.modules)
{statement}
print(json.dumps({{"before": sorted(before), "instrumented": sorted(instrumented),
                   "ran": sorted(sys.modules)}}))
"""


def packages(modules: list[str]) -> set[str]:
    return {module.split(".")[0] for module in modules}


def url_for(kind: str, database_url: URL) -> str:
    url = sync_url(database_url) if kind == "sync" else async_url(database_url)
    return url.render_as_string(hide_password=False)


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_instrument_loads_nothing_heavy_and_prints_nothing(kind: str, database_url: URL) -> None:
    code = APPLICATION.format(engine=ENGINES[kind], statement=STATEMENTS[kind])
    done = run_python(code, url_for(kind, database_url))
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""  # no log line, no warning, at INFO
    # The last line: before it, slow-query records of SQLAlchemy's first-connect statements, if
    # a busy machine made them slower than the default threshold.
    modules = json.loads(done.stdout.splitlines()[-1])
    before = packages(modules["before"])
    added_by_instrument = packages(modules["instrumented"]) - before
    assert added_by_instrument & HEAVY == set()
    assert "exporter" in added_by_instrument  # the check saw the import happen
    if kind == "sync":
        assert "sqlalchemy.ext.asyncio" not in modules["instrumented"]
    # pglast loads on the first statement, to fingerprint it; nothing else heavy does.
    added_by_statement = packages(modules["ran"]) - packages(modules["instrumented"])
    assert added_by_statement & HEAVY == {"pglast"}


# Each part of db-exporter that needs a heavy package loads it when it is used.
PARTS = """
import json, sys
import exporter

def loaded():
    return sorted({m.split(".")[0] for m in sys.modules})

steps = {"import": loaded()}
assert callable(exporter.explain)
steps["explain"] = loaded()
exporter.Settings
steps["config"] = loaded()
exporter.Exporter
steps["server"] = loaded()
import sqlalchemy
engine = sqlalchemy.create_engine(sys.argv[1])
exporter.configure(exporter.Settings(slow_queries={"threshold_ms": 0, "stdout": False}))
exporter.instrument(engine)
with engine.connect() as conn:
    conn.exec_driver_sql("SELECT count(*) FROM pg_class")
from exporter.slowlog import default_slow_log
default_slow_log().flush()
steps["plans"] = loaded()
print(json.dumps(steps))
"""


def test_each_heavy_package_loads_when_its_part_is_used(database_url: URL) -> None:
    done = run_python(PARTS, url_for("sync", database_url))
    assert done.returncode == 0, done.stderr
    steps = {name: set(loaded) & HEAVY for name, loaded in json.loads(done.stdout).items()}
    assert steps["import"] == set()
    assert steps["explain"] == set()  # SQLAlchemy, which the application has loaded, is enough
    assert steps["config"] == {"pydantic", "yaml"}
    assert steps["server"] - steps["config"] == {"aiohttp", "alembic"}  # with the collectors
    # The slow statement's plan is taken over asyncpg (psycopg is the application's driver).
    assert steps["plans"] - steps["server"] == {"asyncpg", "pglast", "psycopg"}


# `db-exporter slowlog` reads a log on the engineer's machine: no server, driver or demo code.
SLOWLOG = """
import contextlib, io, json, sys
from exporter.cli import main
with contextlib.redirect_stdout(io.StringIO()) as report:
    code = main(["slowlog", sys.argv[1]])
print(json.dumps({"code": code, "report": report.getvalue(), "loaded": sorted(sys.modules)}))
"""


def test_the_slowlog_command_loads_no_server_driver_or_demo(tmp_path: Path) -> None:
    log = tmp_path / "slow.jsonl"
    record = {"kind": "slow_query", "database": "main", "duration_ms": 120.0}
    log.write_text(json.dumps({**record, "fingerprint": "ab12", "sql": "SELECT 1"}) + "\n")
    done = run_python(SLOWLOG, str(log))
    assert done.returncode == 0, done.stderr
    ran = json.loads(done.stdout)
    assert ran["code"] == 0
    assert "SELECT 1" in ran["report"]
    loaded = set(ran["loaded"])
    assert packages(ran["loaded"]) & HEAVY <= {"pydantic"}  # the record reader's
    assert not {"exporter.server", "exporter.demo", "exporter.collectors"} & loaded


# `db-exporter explain` on a developer's machine: SQLAlchemy and asyncpg, no server or demo.
EXPLAIN = """
import contextlib, io, json, sys
from exporter.cli import main
with contextlib.redirect_stdout(io.StringIO()) as shown:
    code = main(["explain", "--no-analyze", "SELECT 1"])
print(json.dumps({"code": code, "plan": shown.getvalue(), "loaded": sorted(sys.modules)}))
"""


def test_the_explain_command_loads_no_server_or_demo(
    database_url: URL, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABASE_URL", database_url.render_as_string(hide_password=False))
    done = run_python(EXPLAIN)
    assert done.returncode == 0, done.stderr
    ran = json.loads(done.stdout)
    assert ran["code"] == 0
    assert ran["plan"].startswith("Result")
    # The config's readers, the exporter's driver and exporter.sql's parser: no aiohttp.
    assert packages(ran["loaded"]) & HEAVY == {"pydantic", "yaml", "asyncpg", "pglast"}
    assert not {"exporter.server", "exporter.demo", "exporter.collectors"} & set(ran["loaded"])


# pytest imports the plugin's entry point in every run wherever db-exporter is installed.
ENTRY_POINT = """
import json, sys
import exporter.integrations.pytest_plugin
print(json.dumps(sorted(sys.modules)))
"""


def test_the_pytest_entry_point_loads_nothing_else() -> None:
    done = run_python(ENTRY_POINT)
    assert done.returncode == 0, done.stderr
    loaded = set(json.loads(done.stdout))
    ours = {module for module in loaded if module.split(".")[0] == "exporter"}
    assert ours == {"exporter", "exporter.integrations", "exporter.integrations.pytest_plugin"}
    assert not packages(list(loaded)) & (HEAVY | {"sqlalchemy", "prometheus_client"})
