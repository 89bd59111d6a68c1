"""db-exporter's pytest plugin: statements, database time and N+1 per test, query budgets.

    pytest --db-queries                      # or `db_queries = true` in the ini file
    @pytest.mark.db_queries(max=5)           # fails the test when it runs more statements
    with db_queries(max=3): ...              # the fixture: a budget for a block
    pytest --db-queries --db-queries-fail-on-n-plus-one
    @pytest.mark.allow_n_plus_one("addresses")   # a known one, by table or fingerprint

It counts the statements of engines instrumented by `exporter.instrument()`. pytest imports
this module in every run wherever db-exporter is installed, so it is off until enabled and
imports nothing of db-exporter until then (exporter.integrations.pytest_session does the work).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from exporter.integrations.pytest_session import Budget

# The name the enabled session registers under with pytest's plugin manager.
SESSION = "db_exporter_queries"

_OPTIONS = (
    # (flag, ini name, kind, help)
    ("--db-queries", "db_queries", "bool", "count each test's statements (instrumented engines)"),
    ("--db-queries-report", "db_queries_report", "path", "write the JSON report for CI to PATH"),
    (
        "--db-queries-fail-on-n-plus-one",
        "db_queries_fail_on_n_plus_one",
        "bool",
        "fail each test with an N+1 finding not allowed by @pytest.mark.allow_n_plus_one",
    ),
    (
        "--db-queries-n-plus-one-threshold",
        "db_queries_n_plus_one_threshold",
        "int",
        "runs of one SELECT within a test or request that make an N+1 finding (default: 10)",
    ),
)
MARKERS = (
    "db_queries(max=N): fail the test when it runs more than N statements "
    "(db-exporter's plugin, enabled with --db-queries)",
    "allow_n_plus_one(*tables_or_fingerprints): N+1 findings this test is allowed "
    "(all of them without arguments) under --db-queries-fail-on-n-plus-one",
)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("db-queries", "db-exporter: statements, query budgets and N+1")
    for flag, ini, kind, help in _OPTIONS:
        if kind == "bool":
            group.addoption(flag, action="store_true", default=None, dest=ini, help=help)
            parser.addini(ini, help, type="bool", default=False)
        else:
            metavar = "PATH" if kind == "path" else "N"
            group.addoption(flag, default=None, dest=ini, metavar=metavar, help=help)
            parser.addini(ini, help, default="")
    parser.addini("db_queries_max_fingerprints", "statements kept per test/session", default="")
    parser.addini("db_queries_max_sql_length", "characters of SQL kept per statement", default="")


def setting(config: pytest.Config, name: str) -> object:
    """The flag when given, else the ini option."""
    value = config.getoption(name, default=None)
    return config.getini(name) if value is None else value


def pytest_configure(config: pytest.Config) -> None:
    # Registered whether enabled or not, so that --strict-markers accepts them in either case.
    for marker in MARKERS:
        config.addinivalue_line("markers", marker)
    if setting(config, "db_queries"):
        from exporter.integrations.pytest_session import QuerySession

        config.pluginmanager.register(QuerySession(config), SESSION)


@pytest.fixture
def db_queries(request: pytest.FixtureRequest) -> Budget:
    """`with db_queries(max=3): ...` fails the block past 3 statements; `db_queries.count`
    is the statements the test has run so far."""
    session = request.config.pluginmanager.get_plugin(SESSION)
    if session is None:
        pytest.fail(
            "the db_queries fixture counts statements with db-exporter's plugin: run pytest "
            "with --db-queries, or set db_queries = true in the ini file",
            pytrace=False,
        )
    budget: Budget = session.budget()
    return budget
