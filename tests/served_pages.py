"""Serving an exporter for a test and reading its pages over real HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
from mounted import MountedExporter, serving_on

from exporter import Exporter
from exporter.slowlog import SlowQueryLog


@asynccontextmanager
async def serving(
    log: SlowQueryLog | None = None, side: str = "sidecar", **options: Any
) -> AsyncIterator[Exporter | MountedExporter]:
    """An exporter serving `log` (mounted.SIDES: the sidecar or the mounted endpoints)."""
    async with serving_on(side, slow_log=log, **options) as exporter:
        yield exporter


async def get(url: str, **options: Any) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session, session.get(url, **options) as response:
        return response.status, await response.text()
