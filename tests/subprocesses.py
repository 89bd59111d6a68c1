"""`python -m exporter ...` (or another command) as a real subprocess whose output lines can be
awaited, and the small HTTP, port and process helpers that go with it.

Standard library only: `.ci/install-check` uses it too, outside the test environment.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

EXPORTER = (sys.executable, "-m", "exporter")


class Running:
    """A `python -m exporter ...` (or `command ...`) subprocess whose output lines can be
    awaited."""

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
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
            cwd=cwd,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.output: list[str] = []
        self.pump = threading.Thread(target=self._pump, daemon=True)
        self.pump.start()

    def _pump(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
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
                raise AssertionError(
                    f"exited {self.process.returncode} before {what}; output:\n"
                    + "".join(self.output)
                )
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"not {what} after {timeout:.0f} s; output:\n" + "".join(self.output)
                )
            time.sleep(0.25)

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
        self.pump.join(timeout=10)
        assert self.process.stdout is not None
        self.process.stdout.close()

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


def run_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """`python -m exporter ARGS` to its end, its output captured."""
    return subprocess.run(
        [sys.executable, "-m", "exporter", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def get(url: str) -> tuple[int, str]:
    """Status and body of GET `url` (0 and the reason when nothing answers)."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()
    except OSError as error:
        return 0, str(error)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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
