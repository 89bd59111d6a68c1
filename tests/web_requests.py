"""What the request-context tests of every framework (ASGI, WSGI) share: the canary, the slow
statement, the request ids to clean, the authors whose books load lazily, and reading back
what db-exporter put out (records, per-request histograms)."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from collector_helpers import samples
from prometheus_client import CollectorRegistry
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session
from test_slowlog import Author, Book

from exporter.slowlog import SlowQueryLog

CANARY = "canary-7d1e@example.com"  # in paths and headers; must reach no output
SLOW = "SELECT pg_sleep(0.12)"
GENERATED_ID = re.compile(r"^[0-9a-f]{32}$")

# (the request id a client sent, the one kept; None: nothing visible, so a generated one)
REQUEST_IDS = [
    ("a" * 10_000, "a" * 128),
    ("id\r\nX-Injected: 1\x00\x1b[31m", "idX-Injected:1[31m"),
    ("\x01\x02 \t", None),
    ("überall-1", "berall-1"),
]


@pytest.fixture
def lazy_authors(engine: Engine) -> None:
    """Six authors with a book each: six lazy loads, one more than the N+1 threshold."""
    with Session(engine) as session:
        session.add_all(Author(id=i, books=[Book(id=i)]) for i in range(1, 7))
        session.commit()


def records(log: SlowQueryLog, kind: str = "slow_query") -> list[dict[str, Any]]:
    log.flush()
    return [r for r in reversed(log.records(limit=1000)) if r["kind"] == kind]  # oldest first


def get_context(route: str, request_id: str) -> dict[str, str]:
    return {"route": route, "method": "GET", "request_id": request_id}


def assert_request_id(record: dict[str, Any], kept: str | None) -> None:
    request_id = record["context"]["request_id"]
    assert request_id == kept if kept is not None else GENERATED_ID.match(request_id)


def outputs(
    log: SlowQueryLog,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    served: dict[str, str],
    client_logger: str | None = None,
) -> dict[str, str]:
    """Everything db-exporter put out: the records, the `served` pages (`/metrics`,
    `/slow-queries`), stdout and the log lines (but those of the test's own client)."""
    return {
        "records": json.dumps(log.records(limit=1000)),
        **served,
        "stdout": capsys.readouterr().out,
        "logs": "\n".join(r.getMessage() for r in caplog.records if r.name != client_logger),
    }


def assert_no_canary(places: dict[str, str]) -> None:
    for place, content in places.items():
        assert CANARY.split("@")[0] not in content, place  # also when percent-encoded


def per_request(registry: CollectorRegistry, name: str, route: str) -> dict[str, float]:
    """One route's series of a per-request histogram: `le` -> cumulative count, `sum`, `count`."""
    found = {}
    for labels, value in samples(registry, f"{name}_bucket"):
        if labels["route"] == route:
            found[labels["le"]] = value
    for part in ("sum", "count"):
        found[part] = registry.get_sample_value(f"{name}_{part}", {"route": route}) or 0.0
    return found


def statements_of(registry: CollectorRegistry, route: str) -> tuple[float, float]:
    """(requests, statements) observed for `route`."""
    found = per_request(registry, "db_request_statements", route)
    return found["count"], found["sum"]
