"""One slow-query record: what ran, how long, where from, in which context, and nothing that
leaks customer data (bind parameters are described by type and length unless values are
explicitly allowed; the SQL is the normalised statement, with every literal masked).

The record is built on the query path from what is at hand; turning it into JSON happens later,
on the writer's thread.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from exporter.slowlog.callsite import CallSite
from exporter.sql import QueryIdentity, truncation_marker

MAX_VALUE_LENGTH = 200  # characters of one parameter value, when values are allowed
MAX_DESCRIBED = 50  # parameters described per statement; a batch describes its first set


def _value(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, bytes | bytearray | memoryview):
        return f"<{len(value)} bytes>"
    text = str(value)
    return text if len(text) <= MAX_VALUE_LENGTH else text[:MAX_VALUE_LENGTH] + "...[cut]"


def _describe(value: Any, include_values: bool) -> Any:
    if include_values:
        return _value(value)
    described: dict[str, Any] = {"type": type(value).__name__}
    if isinstance(value, str | bytes | bytearray | list | tuple | dict):
        described["length"] = len(value)
    return described


def redact(parameters: Any, include_values: bool, batch: bool = False) -> Any:
    """Bind parameters as type and length (or values, when allowed), bounded in size."""
    if parameters is None:
        return None
    if batch and isinstance(parameters, list | tuple):
        first = redact(parameters[0], include_values) if parameters else None
        return {"batch_size": len(parameters), "first": first}
    if isinstance(parameters, Mapping):
        items = list(parameters.items())[:MAX_DESCRIBED]
        return {str(k): _describe(v, include_values) for k, v in items}
    if isinstance(parameters, list | tuple):
        return [_describe(v, include_values) for v in parameters[:MAX_DESCRIBED]]
    return _describe(parameters, include_values)


def shown_sql(identity: QueryIdentity, max_sql_length: int) -> str:
    """The normalised statement as records and aggregates show it: cut past the length, the
    cut saying how long the statement was (a statement identified from its prefix keeps its
    truncation marker)."""
    sql, length = identity.normalized, identity.full_length
    if len(sql) > max_sql_length:
        end = truncation_marker(length) if length else f"...[cut: {len(sql)} characters in all]"
        sql = sql[:max_sql_length] + end
    return sql


@dataclass(slots=True)
class SlowQuery:
    database: str
    seconds: float
    identity: QueryIdentity
    call_site: CallSite | None
    parameters: Any  # already redacted
    context: Mapping[str, str]
    trace: Mapping[str, str] | None
    rows: int | None = None
    pool_wait_seconds: float | None = None
    sqlstate: str | None = None  # set when the statement failed
    kind: str = "slow_query"  # or "n_plus_one"
    repeats: int | None = None  # for n_plus_one: executions within the context
    at: float = field(default_factory=time.time)

    def as_dict(self, max_sql_length: int) -> dict[str, Any]:
        sql = shown_sql(self.identity, max_sql_length)
        data: dict[str, Any] = {
            "time": datetime.fromtimestamp(self.at, UTC).isoformat(timespec="milliseconds"),
            "kind": self.kind,
            "database": self.database,
            "duration_ms": round(self.seconds * 1000, 3),
            "status": "error" if self.sqlstate is not None else "ok",
            "operation": self.identity.operation,
            "table": self.identity.table,
            "fingerprint": self.identity.fingerprint,
            "sql": sql,
            "call_site": self.call_site._asdict() if self.call_site else None,
            "parameters": self.parameters,
            "context": dict(self.context),
        }
        if self.rows is not None and self.rows >= 0:
            data["rows"] = self.rows
        if self.pool_wait_seconds is not None:
            data["pool_wait_ms"] = round(self.pool_wait_seconds * 1000, 3)
        if self.sqlstate is not None:
            data["sqlstate"] = self.sqlstate
        if self.trace:
            data.update(self.trace)
        if self.repeats is not None:
            data["repeats"] = self.repeats
        length = self.identity.full_length
        if length is not None:  # identified from its prefix: the SQL is that prefix's
            data["truncated"] = True
            data["statement_length"] = length
        return data
