"""What several benchmarks need around the server they measure: an administrative statement
(CREATE or DROP DATABASE) in autocommit, a scratch database dropped afterwards, a free local
port. A sibling module: the scripts run as `python bench/x.py` or from bench/, and Python puts
bench/ on the path either way."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL

from exporter.dsn import parse_dsn, sync_url


def admin(server: URL | str, sql: str) -> None:
    """Run one statement on `server` outside a transaction (CREATE DATABASE needs that)."""
    engine = create_engine(sync_url(server), isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(text(sql))
    finally:
        engine.dispose()


@contextmanager
def scratch_database(server: URL | str, purpose: str) -> Iterator[URL]:
    """A new database on `server` for this run, dropped afterwards (its sessions ended)."""
    name = f"dbx_bench_{purpose}_{uuid.uuid4().hex[:8]}"
    admin(server, f'CREATE DATABASE "{name}"')
    try:
        yield parse_dsn(server).set(database=name)
    finally:
        admin(server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (free when asked)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
