"""Caller-provided context for slow-query records and N+1 detection.

    with exporter.context(route="/transfer", request_id=rid):
        ...   # statements in here carry route and request_id, and are counted for N+1

A context lives in a ContextVar, so it follows asyncio tasks (and SQLAlchemy's greenlets)
and threads independently. Nested contexts add to the outer one's fields and share its N+1
counts and its usage, so one request is one scope; a web request's context
(`exporter.integrations.request.request_scope`) has counts and usage of its own, also inside a
context of the caller's.
"""

from __future__ import annotations

from collections import ChainMap
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")


@dataclass(slots=True)
class Usage:
    """The statements run in one scope and their wall time, added up on the query path."""

    statements: int = 0
    seconds: float = 0.0


@dataclass
class QueryContext:
    fields: Mapping[str, str]
    counts: dict[str, int] = field(default_factory=dict)  # fingerprint -> executions
    usage: Usage = field(default_factory=Usage)
    request: bool = False  # a web request's scope


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
    scope = scope_within(current.get(), fields)
    token = current.set(scope)
    try:
        yield scope
    finally:
        current.reset(token)


def scope_within(
    outer: QueryContext | None, fields: Mapping[str, str], request: bool = False
) -> QueryContext:
    """The scope of `fields` opened inside `outer`: its fields added to the outer ones; its N+1
    counts and usage the outer ones', unless it is a `request`, which has its own."""
    if outer is None:
        return QueryContext(fields, request=request)
    # Read through, not copied, so a computed value stays computed; nothing writes to it.
    layered: Mapping[str, str] = ChainMap(fields, outer.fields)  # type: ignore[arg-type]
    if request:
        return QueryContext(layered, request=True)
    return QueryContext(layered, outer.counts, outer.usage, outer.request)


def run_in(scope: QueryContext, step: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """`step(*args, **kwargs)` with its statements in `scope`, which it leaves as it was: a
    WSGI response is produced in steps (the call, each chunk, the close), each run this way.
    Not a `with` block: a generator context manager costs ~1.5 us, on every chunk."""
    token = current.set(scope)
    try:
        return step(*args, **kwargs)
    finally:
        current.reset(token)
