"""A command as a real subprocess whose output lines can be awaited, and the HTTP, port and
process helpers that go with it.

Standard library only: `.ci/install-check` uses it too, outside the test environment.
"""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

EXPORTER = (sys.executable, "-m", "exporter")


class Running:
    """A `python -m exporter ...` (or `command ...`) subprocess whose output lines can be awaited.

    Its two streams are kept apart (`out_lines`, `err_lines`: slow-query records go to stdout,
    logs to stderr) and merged, in the order read, in `output`; `wait_for` watches both.
    """

    def __init__(
        self,
        *args: str,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
        command: Sequence[str] = EXPORTER,
    ) -> None:
        self.process = subprocess.Popen(
            [*command, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=cwd,
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

    def wait_until(self, what: str, check: Callable[[], bool], timeout: float = 60) -> None:
        """Poll `check` until it holds; fails naming `what`, with the output, when the process
        exits first or `timeout` passes."""
        deadline = time.monotonic() + timeout
        while not check():
            if self.process.poll() is not None:
                problem = f"exited {self.process.returncode} before {what}"
            elif time.monotonic() > deadline:
                problem = f"not {what} after {timeout:.0f} s"
            else:
                time.sleep(0.25)
                continue
            raise AssertionError(f"{problem}; output:\n{''.join(self.output)}")

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
def running(
    *args: str,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    command: Sequence[str] = EXPORTER,
) -> Iterator[Running]:
    proc = Running(*args, env=env, cwd=cwd, command=command)
    try:
        yield proc
    finally:
        proc.close()


def get(url: str) -> tuple[int, str]:
    """Status and body of GET `url` (0 and the reason when nothing answers)."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()
    except OSError as error:
        return 0, str(error)


def processes_mentioning(text: str) -> list[str]:
    """Command lines of the running processes that contain `text` (e.g. a data directory)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if text in cmdline:
            found.append(cmdline)
    return found


def child_pids(pid: int) -> set[int]:
    """The processes `pid` started that are still its children (Linux's /proc)."""
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        found.update(int(child) for child in (task / "children").read_text().split())
    return found


def is_running(pid: int) -> bool:
    """Whether `pid` is a process that has not ended (a zombie has ended)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in status


def slow_queries(url: str) -> dict[str, Any]:
    """A server's /slow-queries answer, every record it keeps."""
    status, body = get(f"{url}/slow-queries?limit=1000")
    assert status == 200, body
    answer: dict[str, Any] = json.loads(body)
    return answer


def wait_for_slow_queries(
    server: Running, url: str, what: str, check: Callable[[dict[str, Any]], object]
) -> dict[str, Any]:
    """Poll `url`'s /slow-queries until `check(answer)` holds; fails naming `what`, with the
    server's output and the last answer, when `server` exits first or a minute and a half
    passes."""
    found: dict[str, Any] = {}

    def holds() -> bool:
        nonlocal found
        found = slow_queries(url)
        return bool(check(found))

    try:
        server.wait_until(what, holds, timeout=90)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\nlast answer: {json.dumps(found)[:4000]}") from None
    return found
