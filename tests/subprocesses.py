"""The command line under test: `python -m exporter ...` as a real subprocess (`Running`, from
processes.py) whose output lines can be awaited and whose log lines can be read, or
`exporter.cli.main` in this process, and the shape of its error line."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from processes import Running as Running
from processes import running as running

from exporter.cli import main
from exporter.slowlog import report


def run_exporter(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """`python -m exporter ...` to its end, its stdout and stderr captured apart."""
    command = [sys.executable, "-m", "exporter", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)


def first_line_then_close(*args: str) -> tuple[str, int, str]:
    """`python -m exporter ... | head -1`: read the first line of its stdout, close the pipe
    while it still writes, and let it end -> (that line, its exit code, its stderr)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "exporter", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    assert process.stderr is not None
    first = process.stdout.readline()
    process.stdout.close()
    errors = process.stderr.read()
    process.stderr.close()
    return first, process.wait(timeout=60), errors


TIMESTAMP = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
TEXT_LOG_LINE = re.compile(
    rf"(?P<timestamp>{TIMESTAMP}) (?P<level>{'|'.join(LEVELS)}) (?P<logger>\S+): (?P<message>.*)"
)


def log_records(lines: list[str], fmt: str) -> list[dict[str, Any]]:
    """Each stderr line as a record with its timestamp, level, logger and message; fails on
    any line that is not a log record in `fmt` (text or json)."""
    records = []
    for line in lines:
        if fmt == "json":
            record = json.loads(line)
            assert isinstance(record, dict), line
            assert re.fullmatch(TIMESTAMP, record.get("timestamp", "")), line
            assert record.get("level") in LEVELS, line
            assert {"logger", "message"} <= record.keys(), line
        else:
            match = TEXT_LOG_LINE.fullmatch(line.rstrip("\n"))
            assert match is not None, f"not a log line: {line!r} in\n{''.join(lines)}"
            record = match.groupdict()
        records.append(record)
    return records


def chatter(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Other libraries' records below WARNING: none may show at the default level."""
    quiet = ("DEBUG", "INFO")
    return [r for r in records if r["level"] in quiet and not r["logger"].startswith("exporter")]


def assert_slow_query_records_only(lines: list[str]) -> None:
    """stdout as a log shipper reads it: slow-query records (at least one), nothing else."""
    found = report.read(lines)
    assert found.skipped == 0, "".join(lines)
    assert found.slow


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """`db-exporter ARGV...` in this process: (exit status, stdout, stderr)."""
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def databases_config(tmp_path: Path, *databases: tuple[str, str]) -> str:
    """The path of a config file configuring `databases` (name, DSN); none: not one."""
    entries = "".join(f"  - name: {name}\n    dsn: {url}\n" for name, url in databases)
    path = tmp_path / "exporter.yaml"
    path.write_text(f"databases:\n{entries}" if entries else "log_level: INFO\n")
    return str(path)


def assert_one_line_error(code: int, err: str, *fragments: str) -> None:
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("db-exporter: error: ")
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0]


def run_python(code: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """`python -c code args...` in a fresh interpreter of the test's own Python, waited for."""
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=timeout
    )
