"""Operational logs as people and log shippers read them, from real `serve` and `demo` processes:
stdout carries slow-query records only, stderr log records only (text or JSON, each with a
timestamp and a level), and other libraries' INFO chatter stays out."""

from __future__ import annotations

import logging
import os
import signal
import socket
from pathlib import Path

import pytest
from sqlalchemy.engine import URL
from subprocesses import (
    assert_slow_query_records_only,
    chatter,
    log_records,
    run_exporter,
    running,
)

from exporter.logs import LOG_LEVELS, LogLevel, setup_logging


def config_file(tmp_path: Path, dsn: URL | str, extra: str = "") -> str:
    path = tmp_path / "exporter.yaml"
    rendered = dsn if isinstance(dsn, str) else dsn.render_as_string(hide_password=False)
    path.write_text(f"{extra}databases:\n  - name: main\n    dsn: {rendered}\n")
    return str(path)


@pytest.mark.parametrize(
    ("config", "variables", "flags", "fmt"),
    [
        pytest.param("", {}, (), "text", id="text-by-default"),
        pytest.param("log_format: json\n", {}, (), "json", id="json-from-the-config"),
        pytest.param("", {"DB_EXPORTER_LOG_FORMAT": "json"}, (), "json", id="json-from-env"),
        pytest.param("log_format: json\n", {}, ("--log-format", "text"), "text", id="flag-wins"),
        pytest.param("", {}, ("--log-format", "json"), "json", id="json-from-the-flag"),
    ],
)
def test_serve_logs_records_on_stderr_and_nothing_on_stdout(
    tmp_path: Path,
    database_url: URL,
    config: str,
    variables: dict[str, str],
    flags: tuple[str, ...],
    fmt: str,
) -> None:
    path = config_file(tmp_path, database_url, config)
    env = os.environ | variables
    with running("serve", "--config", path, "--listen", "127.0.0.1:0", *flags, env=env) as serve:
        serve.wait_for(r"serving http://\S+/metrics")
        serve.wait_for(r"exporter\.collectors")  # the collectors' own records, too
        assert serve.stop(signal.SIGTERM) == 0
    assert serve.out_lines == []
    records = log_records(serve.err_lines, fmt)
    assert {r["logger"] for r in records} >= {"exporter.cli", "exporter.collectors"}
    assert chatter(records) == []


def test_log_level_flag_after_the_command_wins_over_the_config(tmp_path: Path) -> None:
    with socket.socket() as closed:  # a port nothing listens on: the database is down
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    path = config_file(tmp_path, f"postgresql://postgres@127.0.0.1:{port}/app", "log_level: INFO\n")
    flags = ("--listen", "127.0.0.1:0", "--log-level", "warning")
    with running("serve", "--config", path, *flags) as serve:
        serve.wait_for("database main is not answering")
        assert serve.stop(signal.SIGTERM) == 0
    records = log_records(serve.err_lines, "text")
    assert [r["level"] for r in records] == ["WARNING"]  # not the INFO "serving" line


def test_demo_json_logs_on_stderr_slow_query_records_on_stdout(fresh_database: URL) -> None:
    env = os.environ | {"DATABASE_URL": fresh_database.render_as_string(hide_password=False)}
    with running("--log-format", "json", "demo", "--listen", "127.0.0.1:0", env=env) as demo:
        demo.wait_for(r'"kind": "slow_query"', timeout=90)
        assert demo.stop(signal.SIGINT) == 0
    assert_slow_query_records_only(demo.out_lines)
    records = log_records(demo.err_lines, "json")
    messages = [r["message"] for r in records if r["logger"] == "exporter.demo"]
    assert messages[0].startswith("using DATABASE_URL postgresql://")
    assert any(m.startswith("serving http://") for m in messages)
    assert messages[-1] == "stopped"
    assert chatter(records) == []


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_port_in_use_is_one_line_and_no_database_work_was_started(
    tmp_path: Path, database_url: URL, fmt: str
) -> None:
    path = config_file(tmp_path, database_url)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        listen = f"127.0.0.1:{taken.getsockname()[1]}"
        result = run_exporter("serve", "--config", path, "--listen", listen, "--log-format", fmt)
    assert result.returncode == 2
    assert result.stdout == ""
    [line] = result.stderr.splitlines()
    message = f"cannot listen on {listen}: address already in use"
    if fmt == "text":
        assert line == f"db-exporter: error: {message}"
    else:
        [record] = log_records([line], "json")
        assert (record["level"], record["logger"], record["message"]) == (
            "ERROR",
            "exporter.cli",
            message,
        )
        assert "exception" not in record  # the traceback only with --debug


@pytest.mark.parametrize(
    ("level", "others"),
    [("DEBUG", "DEBUG"), ("INFO", "WARNING"), ("WARNING", "WARNING"), ("ERROR", "ERROR")],
)
def test_the_level_is_the_exporters_and_other_libraries_only_warn(
    capsys: pytest.CaptureFixture[str], level: LogLevel, others: str
) -> None:
    setup_logging(level)
    for name in ("exporter.collectors", "alembic.runtime.migration", "aiohttp.access"):
        for each in LOG_LEVELS:
            logging.getLogger(name).log(logging.getLevelName(each), "a %s record", each)
    records = log_records(capsys.readouterr().err.splitlines(), "text")
    shown = {(r["logger"], r["level"]) for r in records}
    expected = {("exporter.collectors", each) for each in LOG_LEVELS[LOG_LEVELS.index(level) :]}
    for name in ("alembic.runtime.migration", "aiohttp.access"):
        expected |= {(name, each) for each in LOG_LEVELS[LOG_LEVELS.index(others) :]}
    assert shown == expected


def test_a_json_record_carries_its_exception(capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging("INFO", "json")
    try:
        raise ValueError("the culprit")
    except ValueError:
        logging.getLogger("exporter.collectors").exception("collector failed")
    [record] = log_records(capsys.readouterr().err.splitlines(), "json")
    assert record["message"] == "collector failed"
    assert record["exception"].startswith("Traceback (most recent call last):")
    assert record["exception"].endswith("ValueError: the culprit")
