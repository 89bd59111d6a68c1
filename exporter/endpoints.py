"""What `/metrics`, `/readyz` and `/slow-queries` answer, without a web framework: the aiohttp
server (`exporter.server`) and the ASGI app mounted inside an application
(`exporter.integrations.asgi_endpoints`) both serve these."""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping, Sequence
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from exporter.collectors.exposition import SnapshotStore, prerendered, render
from exporter.gzip_parts import EMPTY, deflate, gzip_member
from exporter.metrics import Metrics
from exporter.multiprocess import FoldingCollector
from exporter.probe import ProbeState
from exporter.slowlog import params
from exporter.slowlog.log import SlowQueryLog

MAX_LIMIT = 1000  # records and aggregates in one /slow-queries answer


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
