"""Which configured entry runs each server-wide collector when several entries share a server.

A `server_wide` collector (settings, locks, WAL, replication...) reports the whole server, so
two configured databases of one server would report every such series twice. With several
entries configured, each check also reads which server answered (`identify()`), and
`ServerWideOwners` picks, per server and per server-wide collector, the first entry in config
order that answers and enables that collector; the other entries of that server skip it and
withdraw its series and runner metrics, as the followers of an election do. An entry whose
role cannot read the server's identity counts as a server of its own (it runs them all).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

# A server is its cluster's system_identifier (pg_control_system(): EXECUTE is granted to
# PUBLIC, but it is a per-database grant an administrator or a managed service may revoke) and
# its postmaster's start time. A primary and its physical replicas share the identifier; the
# start time tells them apart, and it is a fact of the server itself, unlike
# inet_server_addr()/port(), which describe the route (localhost, 127.0.0.1, a socket or a
# proxy would read as several servers) and pg_is_in_recovery(), which two replicas share. A
# restart changes it: every entry of the server reads the new one at its next check.
# has_function_privilege() first, in a statement of its own (a call is checked for EXECUTE
# before the statement runs, even in a CASE branch that a run-time condition skips), so that
# a role without the grant never leaves an error in the server's log at every check.
_ALLOWED = text(
    "SELECT has_function_privilege('pg_catalog.pg_control_system()', 'EXECUTE')"
    " AND has_function_privilege('pg_catalog.pg_postmaster_start_time()', 'EXECUTE')"
)
_IDENTITY = text(
    "SELECT system_identifier, pg_postmaster_start_time() FROM pg_catalog.pg_control_system()"
)


@dataclass(frozen=True)
class Server:
    """One running server: its cluster and its postmaster's start."""

    system_identifier: int
    started: datetime


@dataclass(frozen=True)
class Unidentified:
    """An entry whose role may not call pg_control_system(): a server of its own."""

    entry: str


ServerIdentity = Server | Unidentified


async def identify(conn: AsyncConnection, entry: str) -> ServerIdentity:
    """The server `conn` is connected to, as `entry` sees it."""
    if not (await conn.execute(_ALLOWED)).scalar_one():
        return Unidentified(entry)
    system_identifier, started = (await conn.execute(_IDENTITY)).one()
    return Server(int(system_identifier), started)


class Entry(Protocol):
    """What ownership needs to know of a configured database's worker."""

    @property
    def name(self) -> str: ...
    @property
    def server(self) -> ServerIdentity | None: ...  # the last one read; None before any
    @property
    def answered(self) -> bool | None: ...  # its last check; None before the first ends
    def enables(self, collector: str) -> bool: ...
    def wake(self) -> None: ...  # look at what it runs again now


class ServerWideOwners:
    """The configured entries, in config order, and which of them runs what."""

    def __init__(self) -> None:
        self._entries: list[Entry] = []

    def join(self, entry: Entry) -> None:
        self._entries.append(entry)

    def changed(self, entry: Entry) -> None:
        """`entry` answered or not, or found another server: the others settle again now, so
        that an owner that stops answering is replaced without waiting for their checks."""
        for other in self._entries:
            if other is not entry:
                other.wake()

    def owner(self, server: ServerIdentity, collector: str) -> str | None:
        """The entry that runs `collector` for `server`: the first that is on it, enables it
        and answers; while none answers, the first on it that enables it (its runs fail, as a
        lone entry's would). None until every entry before the owner has been checked once:
        any of them may be on the same server."""
        down: str | None = None
        for entry in self._entries:
            if entry.answered is None:
                return None
            if entry.server == server and entry.enables(collector):
                if entry.answered:
                    return entry.name
                down = down or entry.name
        return down


def ownership_line(
    database: str, elsewhere: dict[str, str], server_wide: Sequence[str], *, answering: bool
) -> str:
    """The log line saying which of `database`'s server-wide collectors (`server_wide`, all it
    enables) other entries of its server run (`elsewhere`: collector -> entry). An entry left
    with them while it does not answer (every entry of its server down, or its last server
    identity gone with a restart until its next check) runs nothing: it reports their failure."""
    if not elsewhere and not answering:
        return (
            f"database {database}: its server-wide collectors report failure here "
            "while it is not answering"
        )
    if not elsewhere:
        return f"database {database}: its server-wide collectors run here"
    by_owner: dict[str, list[str]] = {}
    for collector, owner in sorted(elsewhere.items()):
        by_owner.setdefault(owner, []).append(collector)
    parts = [
        f"{'' if len(names) == len(server_wide) else ', '.join(names) + ' '}"
        f"run by database {owner} (same server)"
        for owner, names in sorted(by_owner.items())
    ]
    return f"database {database}: server-wide collectors {'; '.join(parts)}"
