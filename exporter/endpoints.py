"""What `/metrics`, `/readyz` and `/slow-queries` answer, without a web framework: the aiohttp
server (`exporter.server`) and the ASGI app mounted inside an application
(`exporter.integrations.asgi_endpoints`) both serve these."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from prometheus_client.multiprocess import MultiProcessCollector

from exporter.collectors.exposition import SnapshotStore, prerendered
from exporter.metrics import Metrics
from exporter.probe import ProbeState
from exporter.slowlog.log import SlowQueryLog

MAX_LIMIT = 1000  # records and aggregates in one /slow-queries answer
LIMIT_ERROR = f"limit must be a whole number from 1 to {MAX_LIMIT}"


def scraped_registry(metrics: Metrics) -> CollectorRegistry:
    """What /metrics renders: this process's registry or, when PROMETHEUS_MULTIPROC_DIR is set
    (gunicorn/uvicorn workers writing their metrics to files), the sum over every process."""
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not directory:
        return metrics.registry
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
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
    encoder, content_type = choose_encoder(accept)
    with prerendered():
        body = encoder(registry if not names else registry.restricted_registry(names))
    if snapshot is None:
        return body, content_type
    openmetrics = content_type.startswith("application/openmetrics-text")
    rendered = snapshot.exposition(openmetrics, list(names) if names else None)
    if rendered and body.endswith(b"# EOF\n"):
        body = body[: -len(b"# EOF\n")] + rendered + b"# EOF\n"
    else:
        body += rendered
    return body, content_type


def readiness(states: Mapping[str, ProbeState]) -> tuple[dict[str, Any], int]:
    """The body and status of `/readyz`: 200 when every database answered its last check."""
    ready = all(state.ok for state in states.values())
    body = {
        "status": "ready" if ready else "not ready",
        "databases": {name: state.reason for name, state in states.items()},
    }
    return body, 200 if ready else 503


def parse_limit(raw: str | None) -> int:
    """The `limit` query parameter of `/slow-queries`; ValueError(LIMIT_ERROR) when bad."""
    raw = "100" if raw is None else raw
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
        raise ValueError(LIMIT_ERROR)
    return int(raw)


def slow_queries_body(
    log: SlowQueryLog, database: str | None, since: str | None, limit: int
) -> dict[str, Any]:
    """Recent records (newest first) and per-fingerprint aggregates (costliest first)."""
    return {
        "threshold_ms": log.settings.threshold_ms,
        "records": log.records(database, since, limit),
        "aggregates": log.aggregates.ranked(database)[:limit],
    }
