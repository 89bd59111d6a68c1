"""The grant a collector needs, checked before it reads views that hide rows instead of failing.

`pg_stat_activity`, `pg_stat_replication` and `pg_stat_wal_receiver` show another role's rows
with NULL details to a role without `pg_read_all_stats`, and `pg_ls_waldir()` needs
`pg_monitor`: rather than report wrong values, the collector fails with one line naming the
grant (`pg_monitor` includes both), which the runner logs once.
"""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from exporter.collectors.base import CollectorError

# A superuser is a member of every role, so this is true for one too.
_MEMBER_SQL = text("SELECT current_user, pg_has_role(:role, 'USAGE')")


class InsufficientPrivilegeError(CollectorError):
    """The exporter's role cannot see what the collector needs; the message names the grant."""


async def require_role(conn: AsyncConnection, role: str, needed_for: str) -> None:
    """Raise `InsufficientPrivilegeError` unless the current user has `role`'s privileges."""
    user, member = (await conn.execute(_MEMBER_SQL, {"role": role})).one()
    if not member:
        raise InsufficientPrivilegeError(
            f"role {user} cannot {needed_for} (needs {role}); GRANT pg_monitor TO {user}"
        )
