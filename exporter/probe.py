"""Is each configured database answering? Feeds `db_up{database}` and `/readyz`.

Each probe uses its own one-connection engine (never the application's pool) tagged with
`application_name=db-exporter`, runs `SELECT 1` under a timeout on its interval, and recovers by
itself when the database comes back.
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import suppress
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from exporter.dsn import async_url
from exporter.metrics import Metrics
from exporter.settings import DatabaseSettings

log = logging.getLogger("exporter.probe")

APPLICATION_NAME = "db-exporter"


def exporter_engine(dsn: str, timeout_seconds: float) -> AsyncEngine:
    """A small engine of the exporter's own: one connection, server-side timeouts set."""
    timeout_ms = str(int(timeout_seconds * 1000))
    return create_async_engine(
        async_url(dsn),
        pool_size=1,
        max_overflow=0,
        pool_timeout=timeout_seconds,
        connect_args={
            "timeout": timeout_seconds,
            "server_settings": {
                "application_name": APPLICATION_NAME,
                "statement_timeout": timeout_ms,
                "lock_timeout": timeout_ms,
            },
        },
    )


@dataclass
class ProbeState:
    ok: bool | None = None  # None until the first check finished
    reason: str = "not checked yet"


def _one_line(exc: BaseException) -> str:
    text_ = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    name = type(exc).__name__
    return f"{name}: {text_}"[:300] if text_ else name


class DatabaseProbe:
    def __init__(self, settings: DatabaseSettings, metrics: Metrics) -> None:
        self.settings = settings
        self.state = ProbeState()
        self._up = metrics.db_up.labels(settings.name)
        self._up.set(0)
        self._engine = exporter_engine(settings.dsn, settings.check_timeout_seconds)

    async def check(self) -> bool:
        try:
            async with asyncio.timeout(self.settings.check_timeout_seconds):
                async with self._engine.connect() as conn:
                    await conn.execute(text("SELECT 1"))
        except Exception as exc:
            if self.state.ok is not False:
                log.warning("database %s is not answering: %s", self.settings.name, _one_line(exc))
            self.state = ProbeState(False, _one_line(exc))
            self._up.set(0)
            # Drop a connection the failure may have broken, so the next check starts afresh.
            with suppress(Exception):
                await self._engine.dispose()
            return False
        if self.state.ok is False:
            log.info("database %s is answering again", self.settings.name)
        self.state = ProbeState(True, "ok")
        self._up.set(1)
        return True

    async def run(self) -> None:
        while True:
            await self.check()
            await asyncio.sleep(self.settings.check_interval_seconds)

    async def close(self) -> None:
        await self._engine.dispose()
