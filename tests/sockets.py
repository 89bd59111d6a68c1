"""Free ports, and this process's TCP connections, read from /proc (Linux).

A TLS connection closes gracefully: after `close()`, asyncio waits on the event loop for the
server's close_notify before it lets go of the socket. A test whose loop ends first leaves that
socket to the garbage collector, which warns in whichever test happens to be running then. Tests
that connect wait with `until_closed()` and so also show that nothing was left open.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from pathlib import Path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (free when asked)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _socket_inodes() -> set[str]:
    inodes = set()
    for fd in Path("/proc/self/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:  # closed since the listing
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    return inodes


def connections_to(port: int) -> int:
    """How many of this process's TCP sockets have `port` as their remote end."""
    mine = _socket_inodes()
    count = 0
    for table in ("/proc/self/net/tcp", "/proc/self/net/tcp6"):
        for row in Path(table).read_text().splitlines()[1:]:
            fields = row.split()
            remote_port = int(fields[2].rsplit(":", 1)[1], 16)
            if remote_port == port and fields[9] in mine:
                count += 1
    return count


async def until_closed(port: int, within_seconds: float = 10.0) -> None:
    """Run the loop until this process holds no connection to `port`; still one after
    `within_seconds` fails the test: a connection was left open."""
    deadline = time.monotonic() + within_seconds
    while (left := connections_to(port)) > 0:
        assert time.monotonic() < deadline, f"{left} connection(s) to port {port} left open"
        await asyncio.sleep(0.01)
