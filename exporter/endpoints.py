"""What `/metrics`, `/probe`, `/readyz` and `/slow-queries` answer, without a web framework: the
aiohttp server (`exporter.server`) and the ASGI app mounted inside an application
(`exporter.integrations.asgi_endpoints`) both serve these."""

from __future__ import annotations

import asyncio
import copy
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from exporter.collectors.exposition import SnapshotStore, prerendered, render
from exporter.collectors.runner import CollectorRunner
from exporter.gzip_parts import EMPTY, deflate, gzip_member
from exporter.metrics import Metrics
from exporter.multiprocess import FoldingCollector
from exporter.probe import ProbeState
from exporter.slowlog import params
from exporter.slowlog.log import SlowQueryLog

MAX_LIMIT = 1000  # records and aggregates in one /slow-queries answer
TEXT = "text/plain; charset=utf-8"


@dataclass(frozen=True)
class Answer:
    """What an endpoint answers, for a web framework to send as it is."""

    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def compressed(self) -> bool:
        return "Content-Encoding" in self.headers


def text_answer(status: int, line: str) -> Answer:
    return Answer(status, line.encode(), {"Content-Type": TEXT})


def scraped_registry(metrics: Metrics) -> CollectorRegistry:
    """What /metrics renders: this process's registry or, when PROMETHEUS_MULTIPROC_DIR is set
    (gunicorn/uvicorn workers writing their metrics to files), the sum over every process,
    the files of ended processes folded first (exporter.multiprocess)."""
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not directory:
        return metrics.registry
    registry = CollectorRegistry()
    registry.register(FoldingCollector(directory))
    return registry


def metrics_body(
    registry: CollectorRegistry,
    snapshot: SnapshotStore | None,
    accept: str,
    names: Sequence[str] | None = None,
) -> tuple[bytes, str]:
    """The body and content type of `/metrics`: the registry rendered by prometheus_client,
    plus the collectors' pre-rendered snapshot (rendering thousands of per-index series on
    every scrape would stall the event loop). `names` keeps only those families."""
    head, content_type, openmetrics = _registry_text(registry, accept, names)
    if snapshot is None:
        return head, content_type
    rendered = snapshot.exposition(openmetrics, list(names) if names else None)
    head, tail = _before_eof(head, bool(rendered))
    return b"".join((head, rendered, tail)), content_type  # one copy of a megabyte, not two


def metrics_gzip(
    registry: CollectorRegistry,
    snapshot: SnapshotStore | None,
    accept: str,
    names: Sequence[str] | None = None,
) -> tuple[bytes, str]:
    """`metrics_body()` gzipped: only the registry's text is compressed here; the snapshot's
    parts were deflated when its collectors ran (exporter.gzip_parts)."""
    head, content_type, openmetrics = _registry_text(registry, accept, names)
    if snapshot is None:
        return gzip_member([deflate(head)]), content_type
    rendered = snapshot.deflated(openmetrics, list(names) if names else None)
    head, tail = _before_eof(head, bool(rendered.size))
    return gzip_member([deflate(head), rendered, _DEFLATED_EOF if tail else EMPTY]), content_type


def wants_gzip(accept_encoding: str) -> bool:
    """Whether a request's `Accept-Encoding` asks for gzip, matched as aiohttp matches it (a
    substring), so the sidecar and the mounted endpoints agree on every header."""
    return "gzip" in accept_encoding.lower()


def metrics_answer(
    registry: CollectorRegistry,
    snapshot: SnapshotStore | None,
    accept: str,
    accept_encoding: str,
    names: Sequence[str] | None = None,
) -> Answer:
    """`/metrics`: gzipped when the request accepts it (Prometheus always does), from the
    snapshot's parts deflated when its collectors ran; otherwise plain."""
    if wants_gzip(accept_encoding):
        body, content_type = metrics_gzip(registry, snapshot, accept, names)
        return Answer(200, body, {"Content-Type": content_type, "Content-Encoding": "gzip"})
    body, content_type = metrics_body(registry, snapshot, accept, names)
    return Answer(200, body, {"Content-Type": content_type})


_EOF = b"# EOF\n"
_DEFLATED_EOF = deflate(_EOF)


def _registry_text(
    registry: CollectorRegistry, accept: str, names: Sequence[str] | None
) -> tuple[bytes, str, bool]:
    """The registry without the snapshot, its content type, and whether it is OpenMetrics."""
    encoder, content_type = choose_encoder(accept)
    with prerendered():
        body = encoder(registry if not names else registry.restricted_registry(names))
    return body, content_type, content_type.startswith("application/openmetrics-text")


def _before_eof(body: bytes, more: bool) -> tuple[bytes, bytes]:
    """`body` split before its OpenMetrics `# EOF` line when `more` comes before it."""
    if more and body.endswith(_EOF):
        return body[: -len(_EOF)], _EOF
    return body, b""


NOT_ONE_TARGET = "give exactly one target: /probe?target=<name>\n"
UNKNOWN_TARGET = "unknown target: name a configured or discovered database (see /readyz)\n"


async def probe_answer(
    metrics: Metrics,
    runner: CollectorRunner,
    targets: Sequence[str],
    accept: str,
    accept_encoding: str,
) -> Answer:
    """`/probe?target=<name>`, postgres_exporter's multi-target pattern: the metrics of one
    configured (or discovered) database. Never a DSN from the request, never a connection:
    the answer is that database's last snapshot. A bad target is a 400 with one line that
    does not echo it (it may be a mistyped DSN). Gzipped when asked, in a worker thread (a
    database with a thousand indexes is a megabyte: milliseconds of CPU off the loop)."""
    if len(targets) != 1:
        return text_answer(400, NOT_ONE_TARGET)
    worker = runner.worker(targets[0])
    if worker is None:
        return text_answer(400, UNKNOWN_TARGET)
    body, content_type = probe_body(metrics, runner.store, worker.name, accept)
    if not wants_gzip(accept_encoding):
        return Answer(200, body, {"Content-Type": content_type})
    gzipped = await asyncio.to_thread(lambda: gzip_member([deflate(body)]))
    return Answer(200, gzipped, {"Content-Type": content_type, "Content-Encoding": "gzip"})


def probe_body(
    metrics: Metrics, snapshot: SnapshotStore, database: str, accept: str
) -> tuple[bytes, str]:
    """The body and content type of `/probe?target=<database>`: that database's `db_up` and
    its collectors' last snapshot, nothing else (no connection is made for it)."""
    _, content_type = choose_encoder(accept)
    openmetrics = content_type.startswith("application/openmetrics-text")
    up = copy.copy(next(iter(metrics.db_up.collect())))
    up.samples = [s for s in up.samples if s.labels.get("database") == database]
    rendered = render(up)
    body = rendered.header(openmetrics).encode() + rendered.body
    body += snapshot.exposition(openmetrics, database=database)
    return body + (b"# EOF\n" if openmetrics else b""), content_type


def readiness(states: Mapping[str, ProbeState]) -> tuple[dict[str, Any], int]:
    """The body and status of `/readyz`: 200 when every database answered its last check."""
    ready = all(state.ok for state in states.values())
    body = {
        "status": "ready" if ready else "not ready",
        "databases": {name: state.reason for name, state in states.items()},
    }
    return body, 200 if ready else 503


def slow_queries_body(log: SlowQueryLog, query: Mapping[str, str]) -> dict[str, Any]:
    """Recent records (newest first), per-fingerprint aggregates (costliest first) and N+1
    findings by fingerprint and call site (most requests first).
    Filters: `database`, `since` (ISO 8601, as in the records), `limit` (default 100);
    `params.BadParameter` names a bad one."""
    limit = params.whole_number(query, "limit", 100, 1, MAX_LIMIT)
    since = params.timestamp(query, "since")
    database = query.get("database")
    return {
        "threshold_ms": log.settings.threshold_ms,
        "records": log.records(database, since, limit),
        "aggregates": log.aggregates.ranked(database)[:limit],
        "n_plus_one": log.n_plus_one.ranked(database)[:limit],
    }
