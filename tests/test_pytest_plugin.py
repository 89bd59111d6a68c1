"""The pytest plugin (exporter/integrations/pytest_plugin.py), run the way a user runs it: inner
pytest sessions (`pytester`) over a small application (tests/nplusone_app.py) on a database of
their own on the real server, with the plugin loaded from its entry point."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import nplusone_app
import pytest
from hypothesis import given
from hypothesis import strategies as st
from source_lines import line_of
from sqlalchemy import create_engine
from sqlalchemy.engine import URL

from exporter.dsn import async_url, sync_url
from exporter.instrumentation import queries
from exporter.integrations.pytest_session import whole_number, whole_number_text

APP = Path(__file__).with_name("nplusone_app.py")
LAZY_LINE = line_of(str(APP), "lazy load")
BY_AUTHOR_LINE = line_of(str(APP), "one per author")
LAZY_STATEMENTS = 1 + 12  # the authors, then each author's books
EAGER_STATEMENTS = 2

CONFTEST = """
import os

import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy import create_engine
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

from exporter import instrument
from exporter.metrics import Metrics

# Made and instrumented as this file is imported: before the plugin starts.
early_async = create_async_engine(os.environ["SAMPLE_ASYNC_URL"], poolclass=NullPool)
instrument(early_async, "early", metrics=Metrics(CollectorRegistry()), slow_log=False)


@pytest.fixture(scope="session")
def engine():
    # Made and instrumented once the plugin runs.
    engine = create_engine(os.environ["SAMPLE_URL"])
    instrument(engine, metrics=Metrics(CollectorRegistry()), slow_log=False)
    yield engine
    engine.dispose()


@pytest.fixture
def session(engine):
    with Session(engine) as session:
        yield session


@pytest.fixture
async def async_session(engine):
    async with AsyncSession(early_async) as session:
        yield session
"""

INI = """
[pytest]
asyncio_mode = auto
asyncio_default_fixture_loop_scope = function
addopts = -p no:cacheprovider
filterwarnings = error
"""

LAZY_AND_EAGER = """
import sample_app

def test_lazy(session):
    assert len(sample_app.titles_lazy(session)) == 24

def test_eager(session):
    assert len(sample_app.titles_eager(session)) == 24
"""


@pytest.fixture
def inner(pytester: pytest.Pytester) -> pytest.Pytester:
    """A test directory with the ini file and no application, run in this process (quick)."""
    pytester.makeini(INI)
    return pytester


@pytest.fixture
def sample(inner: pytest.Pytester, fresh_database: URL) -> Iterator[pytest.Pytester]:
    """A test directory holding the application, a conftest with its engines (one made before
    the plugin starts, one after) and the ini file; its database is the test's own, with the
    application's tables and rows. Run in a child process: SQLAlchemy's mappers of an
    application imported anew in this process would meet the ones of the previous run."""
    engine = create_engine(sync_url(fresh_database))
    try:
        nplusone_app.create(engine)
    finally:
        engine.dispose()
    inner.makepyfile(sample_app=APP.read_text())
    inner.makeconftest(CONFTEST)
    with pytest.MonkeyPatch.context() as patch:
        for name, url in (("SAMPLE_URL", sync_url), ("SAMPLE_ASYNC_URL", async_url)):
            patch.setenv(name, url(fresh_database).render_as_string(hide_password=False))
        yield inner


def report_of(path: Path) -> dict[str, object]:
    report = json.loads(path.read_text())
    assert isinstance(report, dict)
    return report


def test_a_lazy_load_n_plus_one_fails_and_the_selectinload_version_passes(
    sample: pytest.Pytester,
) -> None:
    sample.makepyfile(test_authors=LAZY_AND_EAGER)
    result = sample.runpytest_subprocess(
        "--db-queries", "--db-queries-fail-on-n-plus-one", "--db-queries-report=out/q.json"
    )
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*test_lazy*",
            "N+1: SELECT books.* ran 12 times within the test "
            f"at sample_app.py:{LAZY_LINE} in titles_lazy",
        ]
    )
    report = report_of(sample.path / "out" / "q.json")
    tests = report["tests"]
    assert isinstance(tests, dict)
    lazy, eager = tests["test_authors.py::test_lazy"], tests["test_authors.py::test_eager"]
    assert (lazy["statements"], eager["statements"]) == (LAZY_STATEMENTS, EAGER_STATEMENTS)
    assert eager["n_plus_one"] == []
    [finding] = lazy["n_plus_one"]
    assert finding["table"] == "books"
    assert finding["repeats"] == 12
    assert finding["call_site"] == f"sample_app.py:{LAZY_LINE} in titles_lazy"
    assert lazy["seconds"] > 0
    # The terminal summary: the busiest test first, the finding, the slowest statements.
    result.stdout.fnmatch_lines(
        [
            "*= db-queries =*",
            f"{LAZY_STATEMENTS + EAGER_STATEMENTS} statements in 2 tests, * ms in the database",
            "most statements:",
            f"*{LAZY_STATEMENTS}*ms*test_authors.py::test_lazy",
            f"*{EAGER_STATEMENTS}*ms*test_authors.py::test_eager",
            "N+1 (the same SELECT repeated within a test or a request):",
            "  test_authors.py::test_lazy",
            f"    12x in one test at sample_app.py:{LAZY_LINE} in titles_lazy: SELECT books.*",
            "slowest statements (total database time):",
            "*SELECT*",
            "report: *q.json",
        ]
    )


def test_a_known_n_plus_one_is_allowed_by_its_marker_and_still_reported(
    sample: pytest.Pytester,
) -> None:
    sample.makepyfile(
        test_known="""
        import pytest
        import sample_app

        @pytest.mark.allow_n_plus_one("books", reason="fixed in the next release")
        def test_lazy_known(session):
            sample_app.titles_lazy(session)

        @pytest.mark.allow_n_plus_one("orders")
        def test_lazy_other_table_allowed(session):
            sample_app.titles_lazy(session)
        """
    )
    result = sample.runpytest_subprocess("--db-queries", "--db-queries-fail-on-n-plus-one")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*test_lazy_other_table_allowed*",
            "N+1: SELECT books.*",
            "  test_known.py::test_lazy_known [allowed]",
        ]
    )


def test_without_the_fail_option_an_n_plus_one_is_reported_not_failed(
    sample: pytest.Pytester,
) -> None:
    sample.makepyfile(test_authors=LAZY_AND_EAGER)
    result = sample.runpytest_subprocess("--db-queries")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(
        [f"    12x in one test at sample_app.py:{LAZY_LINE} in titles_lazy:*"]
    )


def test_the_budget_marker_fails_a_test_over_it(sample: pytest.Pytester) -> None:
    sample.makepyfile(
        test_budget=f"""
        import pytest
        import sample_app

        @pytest.mark.db_queries(max={EAGER_STATEMENTS})
        def test_eager_within(session):
            sample_app.titles_eager(session)

        @pytest.mark.db_queries(max=5)
        def test_lazy_over(session):
            sample_app.titles_lazy(session)
        """
    )
    result = sample.runpytest_subprocess("--db-queries")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*test_lazy_over*",
            f"db_queries(max=5): the test ran {LAZY_STATEMENTS} statements (* ms in the database):",
            f"    12x SELECT books.*(sample_app.py:{LAZY_LINE} in titles_lazy)",
            "     1x SELECT authors.*",
        ]
    )


def test_the_fixture_counts_and_holds_a_block_to_its_budget(sample: pytest.Pytester) -> None:
    sample.makepyfile(
        test_fixture=f"""
        import pytest
        import sample_app

        def test_count_and_a_block_within(session, db_queries):
            with db_queries(max={EAGER_STATEMENTS}) as block:
                sample_app.titles_eager(session)
            assert block.count == {EAGER_STATEMENTS}
            sample_app.titles_lazy(session)
            assert db_queries.count == {EAGER_STATEMENTS + LAZY_STATEMENTS}

        def test_a_block_over(session, db_queries):
            with db_queries(max=3):
                sample_app.titles_lazy(session)

        @pytest.mark.parametrize("bad", [-1, 2.5, "3", True])
        def test_a_bad_budget(db_queries, bad):
            with pytest.raises(ValueError, match="max must be a whole number of at least 0"):
                db_queries(max=bad)
        """
    )
    result = sample.runpytest_subprocess("--db-queries")
    result.assert_outcomes(passed=5, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*AssertionError: db_queries(max=3): 13 statements ran in the block*",
            f"*12x SELECT books.*(sample_app.py:{LAZY_LINE} in titles_lazy)",
        ]
    )


def test_async_engine_made_before_the_plugin_starts(sample: pytest.Pytester) -> None:
    sample.makepyfile(
        test_async="""
        import sample_app

        async def test_by_author(async_session):
            assert len(await sample_app.titles_by_author(async_session)) == 24
        """
    )
    result = sample.runpytest_subprocess("--db-queries", "--db-queries-fail-on-n-plus-one")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "N+1: SELECT books.title FROM books WHERE books.author_id = $1* ran 12 times within "
            f"the test at sample_app.py:{BY_AUTHOR_LINE} in titles_by_author"
        ]
    )


def test_statements_are_counted_per_request_under_the_middleware(sample: pytest.Pytester) -> None:
    """Within the Flask middleware a SELECT is counted per request: two requests that each run
    a statement 6 times make no finding at a threshold of 10; one that runs it 12 times does."""
    sample.makepyfile(
        test_requests="""
        import pytest
        import sample_app
        from prometheus_client import CollectorRegistry
        from exporter.integrations.flask import instrument_flask
        from exporter.metrics import Metrics

        @pytest.fixture
        def client(engine):
            app = sample_app.flask_app(engine)
            instrument_flask(app, metrics=Metrics(CollectorRegistry()))
            return app.test_client()

        def test_two_requests_of_six(client):
            for _ in range(2):
                assert client.get("/authors/lazy?limit=6").status_code == 200

        def test_one_request(client):
            assert client.get("/authors/lazy").status_code == 200
        """
    )
    result = sample.runpytest_subprocess("--db-queries", "--db-queries-report=q.json")
    result.assert_outcomes(passed=2)
    tests = report_of(sample.path / "q.json")["tests"]
    assert isinstance(tests, dict)
    assert tests["test_requests.py::test_two_requests_of_six"]["n_plus_one"] == []
    [finding] = tests["test_requests.py::test_one_request"]["n_plus_one"]
    assert finding["route"] == "/authors/lazy"
    assert finding["repeats"] == 12


def test_xdist_workers_reports_are_merged(sample: pytest.Pytester) -> None:
    sample.makepyfile(test_authors=LAZY_AND_EAGER)
    sample.makepyfile(
        test_more="""
        import sample_app

        def test_eager_again(session):
            sample_app.titles_eager(session)

        def test_nothing():
            pass
        """
    )
    result = sample.runpytest_subprocess("-n", "2", "--db-queries", "--db-queries-report=q.json")
    result.assert_outcomes(passed=4)
    report = report_of(sample.path / "q.json")
    tests = report["tests"]
    assert isinstance(tests, dict)
    statements = {name: test["statements"] for name, test in tests.items()}
    assert statements == {
        "test_authors.py::test_lazy": LAZY_STATEMENTS,
        "test_authors.py::test_eager": EAGER_STATEMENTS,
        "test_more.py::test_eager_again": EAGER_STATEMENTS,
        "test_more.py::test_nothing": 0,
    }
    fingerprints = report["fingerprints"]
    assert isinstance(fingerprints, dict)
    assert sum(f["statements"] for f in fingerprints.values()) == sum(statements.values())
    result.stdout.fnmatch_lines(
        [f"{LAZY_STATEMENTS + 2 * EAGER_STATEMENTS} statements in 4 tests, * ms in the database"]
    )


def test_no_instrumented_engine_is_one_warning_line_and_no_failure(
    inner: pytest.Pytester,
) -> None:
    inner.makepyfile(test_plain="def test_nothing():\n    pass\n")
    result = inner.runpytest_inprocess("--db-queries")
    result.assert_outcomes(passed=1)
    warnings = [line for line in result.outlines if "db-queries" in line]
    assert warnings == [
        "db-queries: warning: no statement of an instrumented engine ran in a test, so nothing "
        "was counted: call exporter.instrument(engine) where the application creates its "
        "engine, or in a conftest.py fixture"
    ]


BAD_BUDGETS = ["max=-1", "max=2.5", "max='5'", "max=True", "max=None", "5", "limit=5"]


@pytest.mark.parametrize("arguments", BAD_BUDGETS)
def test_a_bad_budget_marker_is_a_collection_error_naming_the_test(
    inner: pytest.Pytester, arguments: str
) -> None:
    """Nothing runs, and the previous report is left as it was."""
    inner.makepyfile(
        test_bad=f"""
        import pytest

        def test_fine():
            pass

        @pytest.mark.db_queries({arguments})
        def test_bad_budget():
            pass
        """
    )
    previous = inner.path / "q.json"
    previous.write_text('{"kept": true}')
    result = inner.runpytest_inprocess("--db-queries", "--db-queries-report=q.json")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    errors = [line for line in result.errlines if line.startswith("ERROR:")]
    assert len(errors) == 1, result.errlines
    assert errors[0].startswith("ERROR: test_bad.py::test_bad_budget: @pytest.mark.db_queries")
    assert "whole number" in errors[0]
    assert "passed" not in result.stdout.str()
    assert previous.read_text() == '{"kept": true}'


@pytest.mark.parametrize("arguments", ["''", "3", "tables=['books']"])
def test_a_bad_allow_marker_is_a_collection_error(inner: pytest.Pytester, arguments: str) -> None:
    inner.makepyfile(
        test_bad=f"""
        import pytest

        @pytest.mark.allow_n_plus_one({arguments})
        def test_bad_allow():
            pass
        """
    )
    result = inner.runpytest_inprocess("--db-queries")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["ERROR: test_bad.py::test_bad_allow: @pytest.mark.allow_n_plus_one takes table names*"]
    )


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("--db-queries-n-plus-one-threshold", "1"),
        ("--db-queries-n-plus-one-threshold", "ten"),
        ("-o", "db_queries_max_fingerprints=0"),
        ("-o", "db_queries_max_sql_length=-5"),
    ],
)
def test_a_bad_setting_is_one_usage_error(inner: pytest.Pytester, option: str, value: str) -> None:
    inner.makepyfile(test_plain="def test_nothing():\n    pass\n")
    result = inner.runpytest_inprocess("--db-queries", option, value)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: db_queries_*: expected a whole number of at least *"])


def test_off_by_default_markers_accepted_and_nothing_counted(sample: pytest.Pytester) -> None:
    """Installed but not enabled: a budget marker changes nothing (even under
    --strict-markers), no observer is set and no summary is shown."""
    sample.makepyfile(
        test_off="""
        import pytest
        import sample_app

        @pytest.mark.db_queries(max=0)
        @pytest.mark.allow_n_plus_one
        def test_lazy(session, request):
            sample_app.titles_lazy(session)
            assert request.config.pluginmanager.get_plugin("db_exporter_queries") is None
        """
    )
    result = sample.runpytest_subprocess("--strict-markers", "--db-queries-fail-on-n-plus-one")
    result.assert_outcomes(passed=1)
    assert "db-queries" not in result.stdout.str()


def test_the_ini_option_enables_it(sample: pytest.Pytester) -> None:
    sample.makeini(INI + "db_queries = true\ndb_queries_n_plus_one_threshold = 13\n")
    sample.makepyfile(test_authors=LAZY_AND_EAGER)
    observer = queries._observer  # the outer session's, when it runs with the plugin
    result = sample.runpytest_subprocess("--db-queries-report=q.json")
    result.assert_outcomes(passed=2)
    tests = report_of(sample.path / "q.json")["tests"]
    assert isinstance(tests, dict)
    # 12 runs of the books SELECT are below a threshold of 13.
    assert tests["test_authors.py::test_lazy"]["n_plus_one"] == []
    assert queries._observer is observer  # the inner session put back what it found


def test_the_fixture_without_the_plugin_says_how_to_enable_it(inner: pytest.Pytester) -> None:
    inner.makepyfile(test_fixture="def test_it(db_queries):\n    pass\n")
    result = inner.runpytest_inprocess()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*run pytest with --db-queries, or set db_queries = true*"])


@given(st.one_of(st.integers(), st.floats(), st.booleans(), st.text(), st.none()))
def test_whole_numbers_are_ints_only(value: object) -> None:
    number = whole_number(value, 0)
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        assert number == value
    else:
        assert number is None


@given(st.text())
def test_whole_number_settings_are_decimal_digits(text: str) -> None:
    number = whole_number_text(text, 2)
    digits = text.strip()
    if number is not None:
        assert number == int(digits) >= 2
        assert digits.isascii()
        assert digits.isdecimal()
    else:
        assert not (digits.isascii() and digits.isdecimal() and 2 <= int(digits) < 10**18)
