"""The command line under test: `python -m exporter ...` as a real subprocess whose output lines
can be awaited and whose log lines can be read, or `exporter.cli.main` in this process, and the
shape of its error line."""

from __future__ import annotations

import json
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any

import pytest

from exporter.cli import main
from exporter.slowlog import report


class Running:
    """A `python -m exporter ...` subprocess whose output lines can be awaited.

    Its two streams are kept apart (`out_lines`, `err_lines`: slow-query records go to stdout,
    logs to stderr) and merged, in the order read, in `output`; `wait_for` watches both.
    """

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "exporter", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.output: list[str] = []
        self.out_lines: list[str] = []
        self.err_lines: list[str] = []
        self.pumps = [
            threading.Thread(target=self._pump, args=(stream, lines), daemon=True)
            for stream, lines in (
                (self.process.stdout, self.out_lines),
                (self.process.stderr, self.err_lines),
            )
        ]
        for pump in self.pumps:
            pump.start()

    def _pump(self, stream: IO[str] | None, lines: list[str]) -> None:
        assert stream is not None
        for line in stream:
            lines.append(line)
            self.output.append(line)
            self.lines.put(line)

    def wait_for(self, pattern: str, timeout: float = 60) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.2)
            except queue.Empty:
                if self.process.poll() is not None and self.lines.empty():
                    break
                continue
            if match := re.search(pattern, line):
                return match
        raise AssertionError(f"no line matching {pattern!r}; output:\n{''.join(self.output)}")

    def close(self) -> None:
        """Stop it if it still runs (asked first, so an embedded PostgreSQL is cleaned up; killed
        if it does not stop), and release its output pipe."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self.process.wait()
        for pump in self.pumps:
            pump.join(timeout=10)
        for stream in (self.process.stdout, self.process.stderr):
            assert stream is not None
            stream.close()

    def stop(self, signum: int = signal.SIGINT, timeout: float = 30) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signum)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise


@contextmanager
def running(*args: str, env: dict[str, str] | None = None) -> Iterator[Running]:
    proc = Running(*args, env=env)
    try:
        yield proc
    finally:
        proc.close()


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
    rows, skipped = report.read(lines)
    assert skipped == 0, "".join(lines)
    assert rows


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """`db-exporter ARGV...` in this process: (exit status, stdout, stderr)."""
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code: int, err: str, *fragments: str) -> None:
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("db-exporter: error: ")
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0]
