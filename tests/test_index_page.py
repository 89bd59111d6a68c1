"""The `/` page as a person sees it: rendered by headless Chromium (Debian's `chromium`)."""

from __future__ import annotations

import asyncio
import html
import re
import shutil
import subprocess
import tempfile

import pytest
import source_lines
from prometheus_client import CollectorRegistry
from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL

from exporter import Exporter, Metrics, instrument, uninstrument
from exporter.dsn import sync_url
from exporter.settings import SlowQuerySettings
from exporter.slowlog import SlowQueryLog

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def rendered_text(url: str) -> str:
    """The page's DOM after Chromium rendered it, reduced to its visible text."""
    assert CHROMIUM is not None
    with tempfile.TemporaryDirectory() as profile:
        dom = subprocess.run(
            [
                CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", f"--user-data-dir={profile}",
                "--dump-dom", url,
            ],
            capture_output=True, text=True, timeout=90, check=True,
        ).stdout  # fmt: skip
    body = re.sub(r"(?s)<(script|style)\b.*?</\1>", "", dom)
    return html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", body)))


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (installed by .ci/run)")
async def test_index_page_shows_the_costliest_statements(fresh_database: URL) -> None:
    metrics = Metrics(CollectorRegistry())
    log = SlowQueryLog(SlowQuerySettings(threshold_ms=100, stdout=False), metrics)
    engine = create_engine(sync_url(fresh_database))
    instrument(engine, metrics=metrics, slow_log=log)
    exporter = Exporter(listen="127.0.0.1:0", metrics=metrics, slow_log=log)
    await exporter.start()
    try:
        with engine.connect() as conn:
            conn.execute(text("CREATE TABLE invoices (id int)"))
            for _ in range(2):
                conn.execute(text("SELECT pg_sleep(0.12), count(*) FROM invoices"))
            conn.execute(text("SELECT pg_sleep(0.3)"))
        log.flush()
        page = await asyncio.to_thread(rendered_text, f"{exporter.url}/")
    finally:
        await exporter.stop()
        uninstrument(engine)
        engine.dispose()
        log.close()
    assert "Slowest statements by total time" in page
    assert "Statements at or above 100 ms" in page
    # Both fingerprints, costliest first: pg_sleep(0.3) once beats 2 x 0.12 s.
    first = page.index("SELECT pg_sleep($1)")
    second = page.index("SELECT pg_sleep($1), count(*) FROM invoices")
    assert first < second
    assert re.search(r"SELECT invoices 2 \d+\.\d \d+\.\d", page)  # operation, table, count
    assert f"{source_lines.shown_path(__file__)}:" in page  # the call site of the slowest run
    assert "Result (cost" in page or "no plan" in page
    assert "Unused indexes" in page
    assert "/metrics" in page
