"""Call sites in the application's code: a SQLModel application, helper libraries installed
beside it, paths relative to the source root, and links to the source."""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import source_lines
import sqlmodel_app
from aiohttp.test_utils import TestClient
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL, Engine
from subprocesses import assert_one_line_error, run_exporter

from exporter import Metrics, create_app, instrument, uninstrument
from exporter.dsn import sync_url
from exporter.inprocess_settings import CallSiteSettings, SlowQuerySettings
from exporter.slowlog import SlowQueryLog, callsite
from exporter.slowlog.callsite import CallSiteFinder

REPOSITORY = str(Path(__file__).parent.parent)
TEMPLATE = "https://example.test/org/app/blob/{commit}/{path}#L{line}"
HELPER = "def run_slow(conn):\n    conn.exec_driver_sql('SELECT pg_sleep(0.12)')\n"


def line_of(marker: str) -> int:
    return source_lines.line_of(__file__, marker)


MakeLog = Callable[..., SlowQueryLog]


@pytest.fixture
def make_log(metrics: Metrics) -> Iterator[MakeLog]:
    """A slow-query log (100 ms, N+1 at 5) with the given call-site settings."""
    logs: list[SlowQueryLog] = []

    def make(**call_sites: Any) -> SlowQueryLog:
        settings = SlowQuerySettings(
            threshold_ms=100,
            stdout=False,
            n_plus_one_threshold=5,
            call_sites=CallSiteSettings(**call_sites),
        )
        logs.append(SlowQueryLog(settings, metrics))
        return logs[-1]

    yield make
    for log in logs:
        log.close()


@pytest.fixture
def engine(fresh_database: URL) -> Iterator[Engine]:
    engine = create_engine(sync_url(fresh_database))
    yield engine
    engine.dispose()


@pytest.fixture
def attach(engine: Engine, metrics: Metrics) -> Iterator[Callable[[SlowQueryLog], None]]:
    yield lambda log: instrument(engine, metrics=metrics, slow_log=log)
    uninstrument(engine)


def test_sqlmodel_slow_statement_and_n_plus_one_point_at_the_application(
    engine: Engine, make_log: MakeLog, attach: Callable[[SlowQueryLog], None]
) -> None:
    sqlmodel_app.create(engine, teams=6)
    log = make_log()
    attach(log)
    sqlmodel_app.slow_teams(engine)
    assert sqlmodel_app.heroes_per_team(engine) == [2] * 6
    log.flush()
    (slow,) = [r for r in log.records() if r["kind"] == "slow_query"]
    (warning,) = [r for r in log.records() if r["kind"] == "n_plus_one"]
    app_file = sqlmodel_app.__file__ or ""
    assert slow["call_site"] == {
        "file": source_lines.shown_path(app_file),
        "line": source_lines.line_of(app_file, "slow one"),
        "function": "slow_teams",
        "url": None,
    }
    assert warning["call_site"] == {
        "file": source_lines.shown_path(app_file),
        "line": source_lines.line_of(app_file, "lazy load"),
        "function": "heroes_per_team",
        "url": None,
    }


@pytest.fixture
def import_helper(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[Path], Any]]:
    """Imports HELPER as the package `directory.name` found in `directory.parent`."""
    names: list[str] = []

    def make(directory: Path) -> Any:
        directory.mkdir(parents=True)
        (directory / "__init__.py").write_text(HELPER)
        monkeypatch.syspath_prepend(str(directory.parent))
        names.append(directory.name)
        return importlib.import_module(directory.name)

    yield make
    for name in names:
        sys.modules.pop(name, None)


@pytest.fixture
def installed_helper(tmp_path: Path, import_helper: Callable[[Path], Any]) -> Any:
    """A helper library in a site-packages directory of its own."""
    return import_helper(tmp_path / "lib" / "site-packages" / "helperlib")


def run_helper(engine: Engine, helper: Any) -> None:
    with engine.connect() as conn:
        helper.run_slow(conn)  # helper call


def only_call_site(log: SlowQueryLog) -> dict[str, Any]:
    log.flush()
    (record,) = log.records()
    site: dict[str, Any] = record["call_site"]
    return site


def test_an_installed_helper_is_skipped_by_default(
    engine: Engine, make_log: MakeLog, attach: Callable[[SlowQueryLog], None], installed_helper: Any
) -> None:
    log = make_log()
    attach(log)
    run_helper(engine, installed_helper)
    site = only_call_site(log)
    assert (site["file"], site["line"]) == (
        source_lines.shown_path(__file__),
        line_of("helper call"),
    )


def test_an_installed_package_named_in_app_packages_is_the_application(
    engine: Engine, make_log: MakeLog, attach: Callable[[SlowQueryLog], None], installed_helper: Any
) -> None:
    log = make_log(app_packages=("helperlib",))
    attach(log)
    run_helper(engine, installed_helper)
    site = only_call_site(log)
    # outside the source root: the absolute path, and no link
    assert site["file"] == os.path.realpath(installed_helper.__file__)
    assert (site["line"], site["function"]) == (2, "run_slow")


@pytest.mark.parametrize(
    ("skip", "function"),
    [
        pytest.param(lambda root: (), "run_slow", id="nothing: the helper is the application"),
        pytest.param(lambda root: ("vendored",), "run_helper", id="by module"),
        pytest.param(lambda root: (str(root),), "run_helper", id="by directory"),
    ],
)
def test_skip_packages_skips_a_module_or_a_directory(
    engine: Engine,
    make_log: MakeLog,
    attach: Callable[[SlowQueryLog], None],
    import_helper: Callable[[Path], Any],
    tmp_path: Path,
    skip: Callable[[Path], tuple[str, ...]],
    function: str,
) -> None:
    helper = import_helper(tmp_path / "vendor" / "vendored")
    log = make_log(skip_packages=skip(tmp_path / "vendor"))
    attach(log)
    run_helper(engine, helper)
    assert only_call_site(log)["function"] == function


def test_paths_are_relative_to_the_source_root_and_linked(
    engine: Engine,
    make_log: MakeLog,
    attach: Callable[[SlowQueryLog], None],
    metrics: Metrics,
) -> None:
    log = make_log(source_root=REPOSITORY, source_url_template=TEMPLATE, source_commit="0a1b2c")
    attach(log)
    with engine.connect() as conn:
        conn.execute(text("SELECT pg_sleep(0.12)"))  # linked one
    line = line_of("linked one")
    url = f"https://example.test/org/app/blob/0a1b2c/tests/test_callsite.py#L{line}"
    assert only_call_site(log) == {
        "file": "tests/test_callsite.py",
        "line": line,
        "function": "test_paths_are_relative_to_the_source_root_and_linked",
        "url": url,
    }


async def test_the_link_is_on_the_page_and_in_slow_queries(
    engine: Engine,
    make_log: MakeLog,
    attach: Callable[[SlowQueryLog], None],
    metrics: Metrics,
    aiohttp_client: Any,
) -> None:
    log = make_log(source_root=REPOSITORY, source_url_template="https://x.test/{path}?l={line}")
    attach(log)
    with engine.connect() as conn:
        conn.execute(text("SELECT pg_sleep(0.12)"))  # on the page
    log.flush()
    client: TestClient[Any, Any] = await aiohttp_client(create_app(metrics, slow_log=log))
    url = f"https://x.test/tests/test_callsite.py?l={line_of('on the page')}"
    body = await (await client.get("/slow-queries")).json()
    assert body["records"][0]["call_site"]["url"] == url
    assert body["aggregates"][0]["worst"]["call_site"]["url"] == url
    page = await (await client.get("/")).text()
    shown = f"tests/test_callsite.py:{line_of('on the page')}"
    assert f'<a href="{url.replace("&", "&amp;")}">{shown}</a>' in page


def test_a_file_outside_the_source_root_keeps_its_absolute_path_and_has_no_link(
    engine: Engine, make_log: MakeLog, attach: Callable[[SlowQueryLog], None], tmp_path: Path
) -> None:
    log = make_log(source_root=str(tmp_path), source_url_template="https://x.test/{path}")
    attach(log)
    with engine.connect() as conn:
        conn.execute(text("SELECT pg_sleep(0.12)"))
    site = only_call_site(log)
    assert (site["file"], site["url"]) == (os.path.realpath(__file__), None)


BAD_TEMPLATES = [
    ("https://x.test/{file}", "unknown placeholder {file} (allowed: {path}, {line}, {commit})"),
    ("https://x.test/{path}#L{line", "source_url_template: expected '}'"),
    ("https://x.test/{commit}/{path}", "uses {commit} but source_commit is not set"),
    ("https://x.test/{}", "unknown placeholder {}"),
]


@pytest.mark.parametrize(("template", "message"), BAD_TEMPLATES)
def test_a_bad_template_is_refused_in_one_line(template: str, message: str) -> None:
    with pytest.raises(ValueError, match=r"^source_url_template[^\n]*$") as raised:
        CallSiteSettings(source_url_template=template)
    assert message in str(raised.value)


@given(st.text(max_size=40))
def test_any_template_is_either_refused_or_makes_a_link(template: str) -> None:
    try:
        CallSiteSettings(source_url_template=template, source_commit="c0ffee")
    except ValueError as exc:
        refused = str(exc)
    else:  # accepted: the three placeholders make a link, whatever the text around them
        url = template.format(path="a/b.py", line=3, commit="c0ffee")
        assert len(url) <= len(template) + len("a/b.py3c0ffee") * template.count("{")
        return
    assert refused.startswith("source_url_template")
    assert "\n" not in refused


def test_check_config_refuses_a_bad_template_and_takes_the_commit_from_the_environment(
    tmp_path: Path,
) -> None:
    config = tmp_path / "exporter.yaml"
    config.write_text(f"slow_queries:\n  call_sites:\n    source_url_template: '{TEMPLATE}'\n")
    refused = run_exporter("check-config", str(config))
    assert_one_line_error(
        refused.returncode,
        refused.stderr,
        "slow_queries.call_sites: source_url_template uses {commit} but source_commit is not set",
    )
    env = {**os.environ, "DB_EXPORTER_SLOW_QUERIES__CALL_SITES__SOURCE_COMMIT": "0a1b2c"}
    accepted = run_exporter("check-config", str(config), env=env)
    assert accepted.returncode == 0, accepted.stderr
    assert "source_commit: 0a1b2c" in accepted.stdout


def test_the_remembered_decisions_stay_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(callsite, "MAX_CACHED_CODE", 3)
    finder = CallSiteFinder(CallSiteSettings(source_root=REPOSITORY))
    # Ten functions with the same body in ten files: equal code objects, told apart by identity.
    for i in range(10):
        namespace = {"finder": finder}
        source = "def f():\n    return finder.find()\n"
        exec(compile(source, f"{REPOSITORY}/m{i}.py", "exec"), namespace)
        assert namespace["f"]() == (f"m{i}.py", 2, "f", None)
    assert len(finder._shown) <= 3


def test_the_demo_workload_is_the_application_even_when_installed(tmp_path: Path) -> None:
    installed = tmp_path / "site-packages" / "exporter" / "demo" / "workload.py"
    namespace = {"__name__": "exporter.demo.workload", "finder": CallSiteFinder(CallSiteSettings())}
    exec(compile("def f():\n    return finder.find()\n", str(installed), "exec"), namespace)
    assert namespace["f"]() == (str(installed), 2, "f", None)


def test_the_demos_repository_plumbing_is_skipped_for_its_caller(tmp_path: Path) -> None:
    """Statements the workload runs through the generic repository point at the workload."""
    finder = CallSiteFinder(CallSiteSettings())
    plumbing = {"__name__": "exporter.demo.models.repository", "finder": finder}
    exec(compile("def lookup():\n    return finder.find()\n", "/x/repository.py", "exec"), plumbing)
    workload = {"__name__": "exporter.demo.workload", "lookup": plumbing["lookup"]}
    caller = str(tmp_path / "workload.py")
    exec(compile("def deposit():\n    return lookup()\n", caller, "exec"), workload)
    assert workload["deposit"]() == (caller, 2, "deposit", None)
