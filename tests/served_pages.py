"""Serving an exporter for a test and reading its pages over real HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp

from exporter import Exporter
from exporter.slowlog import SlowQueryLog


@asynccontextmanager
async def serving(log: SlowQueryLog | None = None, **options: Any) -> AsyncIterator[Exporter]:
    exporter = Exporter(listen="127.0.0.1:0", slow_log=log, **options)
    await exporter.start()
    try:
        yield exporter
    finally:
        await exporter.stop()


async def get(url: str, **options: Any) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session, session.get(url, **options) as response:
        return response.status, await response.text()
