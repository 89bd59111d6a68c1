"""`db-exporter slowlog [FILE|-]`: a ranked table from slow-query JSON lines, so a log taken
from production can be read without other tools. Lines that are not slow-query records (other
log output interleaved on stdout, or records whose fields have the wrong type) are skipped and
counted."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

TOP = 20


class _Checked(BaseModel):
    # Strict: a null duration or a string call site is a line to skip, not a value to coerce.
    model_config = ConfigDict(strict=True, allow_inf_nan=False)


class _CallSite(_Checked):
    file: str
    line: int


class _Record(_Checked):
    """The fields the report reads; the rest of a record is kept as it is."""

    kind: str
    fingerprint: str
    operation: str = "?"
    table: str | None = None
    sql: str = ""
    duration_ms: float = 0.0
    call_site: _CallSite | None = None


@dataclass
class Row:
    fingerprint: str
    operation: str
    table: str | None
    sql: str
    durations: list[float] = field(default_factory=list)
    worst: dict[str, Any] | None = None
    n_plus_one: int = 0

    @property
    def total(self) -> float:
        return sum(self.durations)

    def p95(self) -> float:
        ordered = sorted(self.durations)
        return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)] if ordered else 0.0


def read(lines: Iterable[str]) -> tuple[list[Row], int]:
    """Rows by fingerprint, and how many lines were not records."""
    rows: dict[str, Row] = {}
    skipped = 0
    for line in lines:
        try:
            raw = json.loads(line)
            record = _Record.model_validate(raw)
        # Not JSON (or nested past the parser's depth), not a record, or a field mistyped.
        except (ValueError, RecursionError, ValidationError):
            skipped += bool(line.strip())
            continue
        row = rows.get(record.fingerprint)
        if row is None:
            row = rows[record.fingerprint] = Row(
                record.fingerprint, record.operation, record.table, record.sql
            )
        if record.kind == "n_plus_one":
            row.n_plus_one += 1
            continue
        row.durations.append(record.duration_ms)
        if row.worst is None or record.duration_ms >= float(row.worst.get("duration_ms", 0.0)):
            row.worst = raw
    return sorted(rows.values(), key=lambda r: r.total, reverse=True), skipped


def _site(record: dict[str, Any] | None) -> str:
    site = (record or {}).get("call_site")
    return f"{site['file']}:{site['line']}" if site else "-"


def render(rows: list[Row], skipped: int, top: int = TOP) -> str:
    if not rows:
        return "no slow-query records found" + (
            f" ({skipped} other lines skipped)" if skipped else ""
        )
    header = (
        f"{'total ms':>10} {'count':>6} {'p95 ms':>9} {'max ms':>9} {'N+1':>4}  "
        f"{'statement':<28} {'call site (slowest)':<40} sql"
    )
    lines = [header, "-" * len(header)]
    for row in rows[:top]:
        statement = f"{row.operation} {row.table or ''}".strip()
        maximum = max(row.durations, default=0.0)
        lines.append(
            f"{row.total:>10.1f} {len(row.durations):>6} {row.p95():>9.1f} {maximum:>9.1f} "
            f"{row.n_plus_one:>4}  {statement[:28]:<28} {_site(row.worst)[-40:]:<40} "
            f"{' '.join(row.sql.split())[:80]}"
        )
    shown = min(top, len(rows))
    lines.append(f"{shown} of {len(rows)} fingerprints, costliest first")
    if skipped:
        lines.append(f"{skipped} lines were not slow-query records and were skipped")
    return "\n".join(lines)
