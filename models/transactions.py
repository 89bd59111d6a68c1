"""A transaction manager whose blocks nest: the outermost block is the transaction, every block
inside it (in the same task) is a savepoint.

    transactions = TransactionManager(session_factory(engine))
    async with transactions.begin() as session:          # BEGIN
        ...
        try:
            async with transactions.begin() as inner:    # SAVEPOINT (inner is session)
                ...                                      # raises: ROLLBACK TO SAVEPOINT
        except InsufficientFunds:
            ...                                          # the outer transaction carries on
    # COMMIT (or ROLLBACK, and the error re-raised, if the outer block raised)

The current session is found through a context variable, so code several calls deep joins the
transaction without being handed the session. A task started inside a block inherits the
variable but not the session: an AsyncSession must not be used by two tasks at once, so a block
in another task starts a transaction of its own.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from contextvars import ContextVar

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

# The session of the innermost open block and the task that owns it.
_current: ContextVar[tuple[AsyncSession, asyncio.Task[object] | None] | None] = ContextVar(
    "models.transactions.current", default=None
)


class TransactionManager:
    """Blocks of work on sessions from `factory`: `begin()` nests as savepoints."""

    def __init__(self, factory: async_sessionmaker[AsyncSession]) -> None:
        self._factory = factory

    def current(self) -> AsyncSession | None:
        """The session of the block this task is in, or None outside any block."""
        found = _current.get()
        if found is None or found[1] is not asyncio.current_task():
            return None
        return found[0]

    @asynccontextmanager
    async def begin(self) -> AsyncIterator[AsyncSession]:
        """A transaction, or a savepoint inside the one this task is in.

        Leaving the block normally commits (or releases the savepoint); an exception rolls
        back the transaction (or only back to the savepoint) and propagates.
        """
        session = self.current()
        if session is not None:
            async with session.begin_nested():
                yield session
            return
        async with self._factory() as session, session.begin():
            token = _current.set((session, asyncio.current_task()))
            try:
                yield session
            finally:
                _current.reset(token)
