"""The settings of the in-process side (`instrument()`, the slow-query log), as plain frozen
dataclasses: the application imports them without pydantic. Each default is written here
once; a config file validates them through pydantic as fields of `exporter.settings.Settings`
(which also checks types and refuses unknown keys), and `__post_init__` checks the bounds in
both cases, so a value made in code is held to the same rules.
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

from exporter.config_bounds import out_of_range

# The metrics whose label values come from the application, and so carry a cap (one default,
# `max_label_sets`, and per-metric overrides), each with its label that folds into `other`
# beyond the cap (exporter/instrumentation/budget.py). `query_rows_total` has the label sets
# `query_duration_seconds` admitted.
CAPPED_METRICS: Mapping[str, str] = {
    "query_duration_seconds": "table",
    "query_errors_total": "sqlstate_class",
    "slow_queries_total": "table",
    "db_n_plus_one_total": "table",
    "db_request_statements": "route",
    "db_request_duration_seconds": "route",
}

# Read by pydantic when these dataclasses are validated from a config: unknown keys are errors.
_STRICT: dict[str, Any] = {"extra": "forbid"}


def _check_bounds(settings: Any, bounds: Mapping[str, tuple[str, float]]) -> None:
    """`bounds`: field name -> (">=" or ">", limit), beside the shared ones every numeric
    setting has (exporter/config_bounds.py). Raises ValueError naming the field."""
    for each in fields(settings):
        problem = out_of_range(each.name, getattr(settings, each.name))
        if problem is not None:
            raise ValueError(f"{each.name} {problem}")
    for name, (op, limit) in bounds.items():
        value = getattr(settings, name)
        if value < limit if op == ">=" else value <= limit:
            relation = "at least" if op == ">=" else "greater than"
            raise ValueError(f"{name} must be {relation} {limit:g}, not {value!r}")


@dataclass(frozen=True)
class InstrumentationSettings:
    __pydantic_config__: ClassVar[dict[str, Any]] = _STRICT

    # The most label sets a capped metric (CAPPED_METRICS) may have; further ones fold into
    # `other` (table, route, ...) and are counted in exporter_label_overflow_total{metric}.
    max_label_sets: int = 2000
    # Per-metric overrides of max_label_sets, by metric name.
    max_label_sets_per_metric: Mapping[str, int] = field(default_factory=dict)
    # A longer statement is identified from its first this many characters (its fingerprint
    # and normalised text marked as truncated) and never kept whole.
    max_statement_length: int = 64 * 1024
    # Each statement cache (the identities, and each engine's statements) holds at most this
    # many statements and this many bytes of their text; when full it starts again empty.
    statement_cache_size: int = 10_000
    statement_cache_max_bytes: int = 8 * 1024 * 1024

    def __post_init__(self) -> None:
        _check_bounds(
            self,
            {
                "max_label_sets": (">=", 1),
                "max_statement_length": (">=", 1024),
                "statement_cache_size": (">=", 1),
                "statement_cache_max_bytes": (">=", 64 * 1024),
            },
        )
        for name, cap in self.max_label_sets_per_metric.items():
            if name not in CAPPED_METRICS:
                raise ValueError(
                    f"max_label_sets_per_metric: {name!r} has no cap "
                    f"(capped: {', '.join(CAPPED_METRICS)})"
                )
            if cap < 1:
                raise ValueError(f"max_label_sets_per_metric: {name}: the cap must be at least 1")


@dataclass(frozen=True)
class PlanSettings:
    __pydantic_config__: ClassVar[dict[str, Any]] = _STRICT

    # Capture EXPLAIN (FORMAT JSON) for slow SELECTs, on a connection of the exporter's own.
    enabled: bool = True
    # EXPLAIN ANALYZE runs the statement again: off unless asked for.
    analyze: bool = False
    # Plans for INSERT/UPDATE/DELETE too (inside a transaction that is rolled back).
    non_select: bool = False
    # At most one plan per fingerprint per this many seconds.
    min_interval_seconds: float = 600.0
    # statement_timeout of the EXPLAIN itself.
    timeout_seconds: float = 2.0

    def __post_init__(self) -> None:
        _check_bounds(self, {"min_interval_seconds": (">=", 0), "timeout_seconds": (">", 0)})


# What a call site's link may be made of.
URL_PLACEHOLDERS = ("path", "line", "commit")
_ALLOWED = ", ".join("{" + name + "}" for name in URL_PLACEHOLDERS)


def _placeholders(template: str) -> set[str]:
    """The names in `template`'s {fields}; ValueError, in one line, for any other template.
    Plain names only: a format spec such as {line:>9999999} could fail or grow each link."""
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ValueError(f"source_url_template: {exc}") from None
    names = set()
    for _, name, spec, conversion in parsed:
        if name is None:
            continue
        if name not in URL_PLACEHOLDERS or spec or conversion:
            shown = name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "")
            raise ValueError(
                f"source_url_template: unknown placeholder {{{shown}}} (allowed: {_ALLOWED})"
            )
        names.add(name)
    return names


@dataclass(frozen=True)
class CallSiteSettings:
    __pydantic_config__: ClassVar[dict[str, Any]] = _STRICT

    # Module prefixes that are the application even when installed into site-packages.
    app_packages: tuple[str, ...] = ()
    # Further module prefixes (`mylib`) or path prefixes (`/opt/vendor/`) that are not.
    skip_packages: tuple[str, ...] = ()
    # Paths are shown relative to this directory (None: the working directory at start-up).
    source_root: str | None = None
    # Makes each call site a link, from {path} (relative to source_root), {line} and {commit}.
    source_url_template: str | None = None
    source_commit: str | None = None

    def __post_init__(self) -> None:
        if self.source_url_template is None:
            return
        if "commit" in _placeholders(self.source_url_template) and not self.source_commit:
            raise ValueError("source_url_template uses {commit} but source_commit is not set")


@dataclass(frozen=True)
class SlowQuerySettings:
    __pydantic_config__: ClassVar[dict[str, Any]] = _STRICT

    # A statement at or above this wall time is slow. Per-database overrides below.
    threshold_ms: float = 100.0
    threshold_ms_per_database: Mapping[str, float] = field(default_factory=dict)
    # Logged SQL is the normalised statement (literals masked), cut past this many characters.
    max_sql_length: int = 2000
    # Bind parameters are logged as type and length only, unless this is turned on.
    include_parameter_values: bool = False
    # Sinks: JSON lines on stdout, optionally a rotating file; the last `ring_buffer_size`
    # records are always kept in memory for /slow-queries and /.
    stdout: bool = True
    file: str | None = None
    file_max_bytes: int = 10 * 1024 * 1024
    file_backups: int = 5
    ring_buffer_size: int = 1000
    ring_buffer_max_bytes: int = 4 * 1024 * 1024
    # Records wait here for the writer; when it is full (records, or bytes of their
    # statements' text) they are dropped and counted.
    queue_size: int = 10_000
    queue_max_bytes: int = 16 * 1024 * 1024
    # Per-fingerprint aggregates kept, with their worst record and plan (the least recently
    # seen are forgotten first).
    max_fingerprints: int = 1000
    fingerprints_max_bytes: int = 8 * 1024 * 1024
    # Records per fingerprint per second (0: no limit); beyond, slow statements are counted
    # (slow_queries_total, the aggregates) but get no record (slow_query_log_rate_limited_total).
    records_per_second: int = 10
    # The same fingerprint this many times within one context (request, task): an N+1 warning.
    n_plus_one_threshold: int = 10
    # Hand-over to the sidecar (exporter/slowlog/handover.py): with several worker processes,
    # each worker's writer thread appends its records to files of its own in this directory
    # (default: `slow-queries` inside PROMETHEUS_MULTIPROC_DIR; without either, no hand-over),
    # and `db-exporter serve` merges them into its /slow-queries and /.
    handover: bool = True
    handover_dir: str | None = None
    # Each worker's files hold at most this many bytes (two segments of half each); all the
    # files together at most handover_max_total_bytes (ended workers' files go first; beyond,
    # records are dropped and counted in slow_query_handover_dropped_total).
    handover_max_bytes: int = 1024 * 1024
    handover_max_total_bytes: int = 64 * 1024 * 1024
    # Ended workers' files are kept this long, and for at most this many ended workers.
    handover_keep_seconds: float = 3600.0
    handover_max_ended_workers: int = 200
    plans: PlanSettings = field(default_factory=PlanSettings)
    # Which frames are the application's, and how their places are shown.
    call_sites: CallSiteSettings = field(default_factory=CallSiteSettings)

    def __post_init__(self) -> None:
        _check_bounds(
            self,
            {
                "threshold_ms": (">=", 0),
                "max_sql_length": (">=", 80),
                "file_max_bytes": (">=", 1024),
                "file_backups": (">=", 0),
                "ring_buffer_size": (">=", 1),
                "ring_buffer_max_bytes": (">=", 64 * 1024),
                "queue_size": (">=", 1),
                "queue_max_bytes": (">=", 64 * 1024),
                "max_fingerprints": (">=", 1),
                "fingerprints_max_bytes": (">=", 64 * 1024),
                "records_per_second": (">=", 0),
                "n_plus_one_threshold": (">=", 2),
                "handover_max_bytes": (">=", 64 * 1024),
                "handover_max_total_bytes": (">=", 64 * 1024),
                "handover_keep_seconds": (">=", 0),
                "handover_max_ended_workers": (">=", 0),
            },
        )
        for database, ms in self.threshold_ms_per_database.items():
            if ms < 0:
                raise ValueError(f"threshold_ms_per_database: {database}: must be at least 0")

        if self.handover_max_total_bytes < self.handover_max_bytes:
            raise ValueError(
                f"handover_max_total_bytes ({self.handover_max_total_bytes}) must be at least "
                f"handover_max_bytes ({self.handover_max_bytes})"
            )

    def threshold_seconds(self, database: str) -> float:
        return self.threshold_ms_per_database.get(database, self.threshold_ms) / 1000
