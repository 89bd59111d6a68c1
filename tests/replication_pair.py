"""A primary with a streaming replica (tests/pg_cluster.py's `replicated_pair`), as the
collector tests use it: SQLAlchemy URLs, and a role without `pg_monitor` on both servers."""

from __future__ import annotations

from dataclasses import dataclass

from pg_cluster import SLOT, STANDBY, PrivateCluster
from sqlalchemy.engine import URL

from exporter.dsn import parse_dsn

__all__ = ["SLOT", "STANDBY", "UNPRIVILEGED", "Pair"]

# A login role without pg_monitor, created on the primary (and so replicated).
UNPRIVILEGED = "dbx_unprivileged"


@dataclass(frozen=True)
class Pair:
    primary: PrivateCluster
    replica: PrivateCluster

    @property
    def version(self) -> int:
        return self.primary.version

    @property
    def primary_url(self) -> URL:
        return parse_dsn(self.primary.url).set(drivername="postgresql")

    @property
    def replica_url(self) -> URL:
        return parse_dsn(self.replica.url).set(drivername="postgresql")

    def caught_up(self) -> None:
        """Wait until the replica has replayed everything the primary has written so far."""
        position = self.primary.query("SELECT pg_current_wal_lsn()")
        self.replica.wait_for(f"SELECT pg_last_wal_replay_lsn() >= '{position}'", "t")
