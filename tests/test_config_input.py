"""Config input bounded: no file hangs, crashes or floods `check-config`/`serve`, and every
value `check-config` accepts is one `serve` can use."""

from __future__ import annotations

import asyncio
import resource
import time
import tracemalloc
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError
from subprocesses import assert_one_line_error, run_exporter

from exporter import config_yaml
from exporter.config_bounds import MAX_COUNT, MAX_SECONDS, MAX_SQL_BYTES
from exporter.probe import exporter_engine
from exporter.settings import ConfigError, load_settings

SECRET = "canary-s3cret-pw"
DATABASE = f"databases:\n  - name: main\n    dsn: postgresql://app:{SECRET}@db/app\n"


def billion_laughs() -> str:
    """Nine levels of nine aliases each: 1 kB that expands to 9^9 strings."""
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for level in range(1, 9):
        aliases = ",".join([f"*a{level - 1}"] * 9)
        lines.append(f"a{level}: &a{level} [{aliases}]")
    return "\n".join(lines) + "\n"


def custom_query(sql: str) -> str:
    return DATABASE + (
        f'    custom_queries:\n      - {{name: q, help: q, values: [v], sql: "{sql}"}}\n'
    )


HOSTILE = {
    "billion laughs": (billion_laughs(), ":6: more than 100000 values once its aliases"),
    "alias in its anchor": ("databases: &a [*a]\n", ":1: an alias inside its own anchor"),
    "5,000 brackets": ("log_level: " + "[" * 5000 + "]" * 5000, ":1: nested deeper than 32"),
    "5,000 digits": ("log_level: " + "9" * 5000, ":1: a number longer than 100 characters"),
    "duplicate key": ("log_level: INFO\nlog_format: text\nlog_level: DEBUG\n", ":3: duplicate"),
    "newline in a key": ('"bad\\nkey": 1\n', "'bad\\nkey': unknown key"),
    "too large": ("#" * (config_yaml.MAX_FILE_BYTES + 1), "larger than 1048576 bytes"),
    "200,000 operands": (
        custom_query("SELECT " + "+".join(["1"] * 200_000) + " AS v"),
        f"sql: longer than {MAX_SQL_BYTES} bytes",
    ),
    "infinite timeout": (DATABASE + "    check_timeout_seconds: .inf\n", "check_timeout_seconds"),
    "1e308 timeout": (DATABASE + "    check_timeout_seconds: 1e308\n", "at most 2147483"),
    "timeout beyond statement_timeout": (
        DATABASE + "    collectors: {tables: {timeout_seconds: 3000000}}\n",
        "collectors.tables.timeout_seconds: must be a finite number of at most 2147483",
    ),
    "NaN threshold": (
        "slow_queries: {threshold_ms: .nan}\n",
        "slow_queries: threshold_ms must be a finite",
    ),
    "huge buffer": ("slow_queries: {ring_buffer_size: 1e30}\n", "ring_buffer_size"),
    "huge cap": (f"instrumentation: {{max_label_sets: {MAX_COUNT + 1}}}\n", "max_label_sets"),
}


def _children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def refused(tmp_path: Path, content: str, fragment: str, *command: str) -> None:
    path = tmp_path / "exporter.yaml"
    path.write_text(content)
    # In a process of its own: before the bounds, some of these hung or died of SIGSEGV. Its
    # CPU time, not the wall clock, tells a loop from a machine busy with other work.
    before = _children_cpu_seconds()
    done = run_exporter(*command, str(path))
    assert _children_cpu_seconds() - before < 20
    assert done.stdout == ""
    assert_one_line_error(done.returncode, done.stderr, fragment)
    assert SECRET not in done.stderr


@pytest.mark.parametrize(("content", "fragment"), HOSTILE.values(), ids=HOSTILE.keys())
def test_check_config_refuses_a_hostile_file_in_one_line(
    tmp_path: Path, content: str, fragment: str
) -> None:
    refused(tmp_path, content, fragment, "check-config")


@pytest.mark.parametrize("case", ["billion laughs", "200,000 operands", "1e308 timeout"])
def test_serve_refuses_what_check_config_refuses(tmp_path: Path, case: str) -> None:
    refused(tmp_path, *HOSTILE[case], "serve", "--config")


def test_an_out_of_range_variable_is_named() -> None:
    variable = "DB_EXPORTER_DATABASES__0__CHECK_TIMEOUT_SECONDS"
    env = {"DATABASE_URL": f"postgresql://app:{SECRET}@db/app", variable: "1e308"}
    with pytest.raises(ConfigError, match=f"^{variable} .*at most 2147483") as refused:
        load_settings(env=env)
    assert SECRET not in str(refused.value)


def test_aliases_within_the_bound_are_expanded(tmp_path: Path) -> None:
    path = tmp_path / "exporter.yaml"
    path.write_text(
        "databases:\n"
        "  - &main {name: main, dsn: postgresql://db/app, check_timeout_seconds: 3}\n"
        "  - {<<: *main, name: replica}\n"
    )
    loaded = load_settings(path, env={})
    assert [(db.name, db.check_timeout_seconds) for db in loaded.databases] == [
        ("main", 3),
        ("replica", 3),
    ]


def test_the_bounds_accept_the_longest_timeouts_postgresql_and_asyncio_take(
    database_url: URL,
) -> None:
    async def probe(timeout_seconds: float) -> None:
        engine = exporter_engine(
            database_url.render_as_string(hide_password=False), timeout_seconds
        )
        try:
            async with asyncio.timeout(timeout_seconds), engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
        finally:
            await engine.dispose()

    asyncio.run(probe(MAX_SECONDS))
    with pytest.raises(DBAPIError, match="statement_timeout"):
        asyncio.run(probe(MAX_SECONDS + 1))  # the bound is PostgreSQL's own, to the second


# --- fuzzing: any document, any values ---------------------------------------------------

_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**120), max_value=10**120),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.sampled_from(["postgresql://u:" + SECRET + "@h/d", "${UNSET}", "0.0.0.0:9188"]),
)
_KEYS = st.one_of(
    st.sampled_from(
        [
            "databases",
            "name",
            "dsn",
            "collectors",
            "tables",
            "timeout_seconds",
            "slow_queries",
            "threshold_ms",
            "ring_buffer_size",
            "check_timeout_seconds",
            "custom_queries",
            "sql",
        ]
    ),
    st.text(max_size=8),
)
_DOCUMENTS = st.recursive(
    _SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(_KEYS, inner, max_size=4)),
    max_leaves=30,
)


def _one_config_error_quickly(tmp_path: Path, content: str) -> None:
    """Loading `content` gives settings or one ConfigError of one line without the secret, in
    bounded time and memory."""
    path = tmp_path / "fuzzed.yaml"
    path.write_text(content)
    tracemalloc.start()
    started = time.process_time()  # CPU time: a busy machine does not make it fail
    message = ""
    try:
        load_settings(path, env={})
    except ConfigError as error:
        message = str(error)
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert "\n" not in message
    assert SECRET not in message
    assert time.process_time() - started < 5  # traced: a few times slower than untraced
    assert peak < 64 * 1024 * 1024


_FUZZ = settings(
    max_examples=60,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@_FUZZ
@given(document=_DOCUMENTS)
def test_any_yaml_structure_gives_settings_or_one_config_error(
    tmp_path: Path, document: object
) -> None:
    _one_config_error_quickly(tmp_path, yaml.safe_dump(document, width=10**6))


@settings(_FUZZ, max_examples=20)
@given(
    levels=st.integers(1, 8),
    width=st.integers(1, 8),
    depth=st.integers(0, 3000),
    digits=st.integers(1, 6000),
)
def test_any_alias_fan_out_nesting_or_number_gives_one_config_error_quickly(
    tmp_path: Path, levels: int, width: int, depth: int, digits: int
) -> None:
    lines = [f"x0: &x0 [{digits * '7'}]"]
    for level in range(1, levels):
        lines.append(f"x{level}: &x{level} [{','.join([f'*x{level - 1}'] * width)}]")
    lines.append("y: " + "[" * depth + "]" * depth)
    _one_config_error_quickly(tmp_path, "\n".join(lines) + "\n")


@_FUZZ
@given(content=st.text(max_size=300))
def test_any_text_gives_settings_or_one_config_error(tmp_path: Path, content: str) -> None:
    _one_config_error_quickly(tmp_path, content)
