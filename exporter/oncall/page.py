"""`GET /`: the on-call page, gathered from memory and rendered in a worker thread, so a large
log never holds up the event loop (in an application's own loop, the host's requests). No web
framework here: the sidecar (`exporter.oncall.web`, aiohttp) and the endpoints mounted in an
application (`exporter.integrations.asgi_endpoints`) send what `answer()` gives."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager, suppress

from exporter.collectors.runner import CollectorRunner
from exporter.endpoints import Answer, text_answer
from exporter.metrics import Metrics
from exporter.oncall import health, records, render, top
from exporter.oncall.health_html import collectors_section, health_section
from exporter.oncall.indexes import IndexesToFix, IndexToFix
from exporter.oncall.markup import Links
from exporter.oncall.plan_view import PlanViews
from exporter.oncall.query import PageQuery, page_query
from exporter.oncall.recent import EVERY_SECONDS, PoolHistory
from exporter.oncall.statements_html import n_plus_one_section, slow_section
from exporter.oncall.tables_html import indexes_section, top_section
from exporter.settings import PageSettings
from exporter.slowlog.log import SlowQueryLog
from exporter.slowlog.params import BadParameter


class OnCallPage:
    """What the page reads, and what it keeps between requests (bounded: see plan_view,
    indexes, recent)."""

    def __init__(
        self,
        settings: PageSettings,
        log: SlowQueryLog,
        metrics: Metrics,
        runner: Callable[[], CollectorRunner | None] = lambda: None,
    ) -> None:
        self.settings = settings
        self.log = log
        self.metrics = metrics
        self.runner = runner
        self.history = PoolHistory(metrics)
        self.plans = PlanViews()
        self.reader = records.Reader()
        self._indexes: IndexesToFix | None = None

    def indexes(self, runner: CollectorRunner | None) -> tuple[list[IndexToFix], bool]:
        if runner is None:
            return [], False
        if self._indexes is None:
            self._indexes = IndexesToFix(runner.store)
        return self._indexes.get(), runner.store.ran("indexes")

    def _plan(self, statement: records.SlowStatement) -> str:
        held = self.log.aggregates.plan_of(statement.database, statement.fingerprint)
        if held is None:
            return '<p class="muted">No plan: the fingerprint is no longer aggregated.</p>'
        return self.plans.html((statement.database, statement.fingerprint), held)

    def render(self, query: PageQuery, now: float | None = None) -> str:
        now = time.time() if now is None else now
        since = None if query.window_seconds is None else now - query.window_seconds
        window = self.reader.gather(self.log.ring.snapshot(), since)
        start = since if since is not None else (window.oldest or now)
        links = Links(self.settings)
        runner = self.runner()
        databases = runner.view() if runner is not None else ()
        store = runner.store if runner is not None else None
        state = health.gather(databases, store, self.metrics, self.history)
        indexes, collected = self.indexes(runner)
        threshold_ms = self.log.settings.threshold_ms
        sections = [
            health_section(state, links),
            slow_section(window, query, start, now, threshold_ms, self._plan, links),
            n_plus_one_section(window, query, links),
            indexes_section(indexes, collected, links),
            top_section(top.gather(databases)),
            collectors_section(state),
        ]
        return render.page(query, sections, now)

    async def answer(self, query: Mapping[str, str]) -> Answer:
        """The page for the request's query, or a 400 with one line naming a bad parameter.
        Its links are relative, so they work below any prefix the page is served at."""
        try:
            parsed = page_query(query)
        except BadParameter as exc:
            return text_answer(400, f"{exc}\n")
        html = await asyncio.to_thread(self.render, parsed)
        return Answer(200, html.encode(), {"Content-Type": HTML, **PAGE_HEADERS})

    @asynccontextmanager
    async def sampling(self) -> AsyncIterator[None]:
        """The pool counters' history (the health strip's recent checkouts), sampled while
        inside."""

        async def sample_forever() -> None:
            while True:
                self.history.sample()
                await asyncio.sleep(EVERY_SECONDS)

        task = asyncio.create_task(sample_forever(), name="db-exporter:pool-history")
        try:
            yield
        finally:
            task.cancel()
            with suppress(asyncio.CancelledError):
                await task


HTML = "text/html; charset=utf-8"
# Served from an application's own origin (mounted), a page that ran a script would run it
# beside the application's cookies: the page has no script, so none may run, and nothing is
# loaded from elsewhere. Its style is inline; its form submits to itself.
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
}
