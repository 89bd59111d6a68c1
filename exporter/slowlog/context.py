"""Caller-provided context for slow-query records and N+1 detection.

    with exporter.context(route="/transfer", request_id=rid):
        ...   # statements in here carry route and request_id, and are counted for N+1

A context lives in a ContextVar, so it follows asyncio tasks (and SQLAlchemy's greenlets)
and threads independently. Nested contexts add to the outer one's fields and share its N+1
counts, so one request is one scope.
"""

from __future__ import annotations

from collections import ChainMap
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any


@dataclass
class QueryContext:
    fields: Mapping[str, str]
    counts: dict[str, int] = field(default_factory=dict)  # fingerprint -> executions


current: ContextVar[QueryContext | None] = ContextVar("db_exporter_query_context", default=None)
# Bound once for the query path: `current.get()` looks the method up and binds it anew on
# every call, which costs several times the read itself.
current_scope: Callable[[], QueryContext | None] = current.get


@contextmanager
def context(**fields: Any) -> Iterator[QueryContext]:
    """Attach `fields` (stringified) to the slow-query records of statements run inside."""
    with context_of({name: str(value) for name, value in fields.items()}) as scope:
        yield scope


@contextmanager
def context_of(fields: Mapping[str, str]) -> Iterator[QueryContext]:
    """`context()` for fields given as a mapping, which may compute a value when it is read
    (a middleware's route is known only once the framework has routed the request)."""
    with entered(scope_of(fields)) as scope:
        yield scope


def scope_of(fields: Mapping[str, str]) -> QueryContext:
    """A context for `fields` inside the current one, if any: it adds to the outer fields and
    shares the outer N+1 counts."""
    outer = current.get()
    if outer is None:
        return QueryContext(fields)
    # Read through, not copied, so a computed value stays computed; nothing writes to it.
    layered: Mapping[str, str] = ChainMap(fields, outer.fields)  # type: ignore[arg-type]
    return QueryContext(layered, outer.counts)


@contextmanager
def entered(scope: QueryContext) -> Iterator[QueryContext]:
    """Statements run inside belong to `scope`; entered again later, they add to its counts
    (a WSGI response is produced in steps, each of which enters its request's scope)."""
    token = current.set(scope)
    try:
        yield scope
    finally:
        current.reset(token)
