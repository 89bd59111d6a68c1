"""Serving an exporter for a test and reading its pages over real HTTP."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
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


async def until(condition: Callable[[], bool], what: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"never happened: {what}")
        await asyncio.sleep(0.1)
