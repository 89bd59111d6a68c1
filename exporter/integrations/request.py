"""What every web-framework middleware needs besides the framework: the request's scope
(`request_scope`: its context, its N+1 detection and its statements per request), a request id
that is safe to put in records, and the fixed route of a request that no route template
matched."""

from __future__ import annotations

import re
import uuid
import weakref
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager

from prometheus_client import Histogram

from exporter.instrumentation.guard import FailureCounter
from exporter.metrics import Metrics, default_metrics
from exporter.slowlog.context import QueryContext, Usage, current, current_scope, scope_within

# The route of 404s, mounted sub-apps and custom routers: never the raw path, which can hold
# e-mail addresses, tokens and ids.
UNMATCHED = "unmatched"
REQUEST_ID_HEADER = "X-Request-ID"
MAX_REQUEST_ID_LENGTH = 128

_NOT_VISIBLE_ASCII = re.compile(r"[^\x21-\x7e]+")


def checked_max_length(max_request_id_length: int) -> int:
    """A middleware's `max_request_id_length`, refused below 1 with the setting's name."""
    if max_request_id_length < 1:
        raise ValueError(f"max_request_id_length must be at least 1, not {max_request_id_length}")
    return max_request_id_length


def clean_request_id(raw: str | None, max_length: int = MAX_REQUEST_ID_LENGTH) -> str:
    """The caller's request id, keeping visible ASCII only (no control characters, no spaces)
    and at most `max_length` characters; a new random id when nothing is left."""
    cleaned = _NOT_VISIBLE_ASCII.sub("", raw)[:max_length] if raw else ""
    return cleaned or uuid.uuid4().hex


class RequestFields(Mapping[str, str]):
    """One request's context fields: `route`, then the fixed ones (method, request id).

    The middleware sets the context before the framework routes the request, so the route is
    looked up whenever it is read, until `settle()` (at the end of the request) fixes it: the
    records kept afterwards hold no reference to the request.
    """

    def __init__(self, route: Callable[[], str], **fields: str) -> None:
        self._route = route
        self._fields = fields

    def settle(self) -> None:
        route = self._route()
        self._route = lambda: route

    def __getitem__(self, name: str) -> str:
        return self._route() if name == "route" else self._fields[name]

    def __iter__(self) -> Iterator[str]:
        yield "route"
        yield from self._fields

    def __len__(self) -> int:
        return 1 + len(self._fields)


# Routes whose histogram children a recorder keeps; more (routes made up from paths by a
# custom router) start the memory again, costing only a few lookups.
MAX_CACHED_ROUTES = 10_000


class _Recorder:
    """Records one Metrics' requests. Keeps each route's two histogram children: looking them
    up (label budget, `labels()`) costs more than observing."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics
        self._children: dict[str, tuple[Histogram, Histogram]] = {}
        self.failures = FailureCounter(metrics)

    def record(self, route: str, usage: Usage) -> None:
        children = self._children.get(route)
        if children is None:
            children = self._children_of(route)
        statements, duration = children
        statements.observe(usage.statements)
        duration.observe(usage.seconds)

    def _children_of(self, route: str) -> tuple[Histogram, Histogram]:
        metrics = self._metrics
        statements = metrics.budget("db_request_statements").admit((route,))
        duration = metrics.budget("db_request_duration_seconds").admit((route,))
        children = (
            metrics.request_statements.labels(*statements),
            metrics.request_duration.labels(*duration),
        )
        if len(self._children) >= MAX_CACHED_ROUTES:
            self._children.clear()
        self._children[route] = children
        return children


_recorders: weakref.WeakKeyDictionary[Metrics, _Recorder] = weakref.WeakKeyDictionary()


def _recorder(metrics: Metrics) -> _Recorder:
    recorder = _recorders.get(metrics)
    if recorder is None:
        recorder = _recorders.setdefault(metrics, _Recorder(metrics))
    return recorder


class OpenRequest:
    """One web request from its start to its end, for every middleware: its slow-query context
    (`fields`, also inside a context of the caller's) with N+1 detection and usage of its own;
    its end (`end()`, once, whatever ends it) records its statements and their wall time in
    `db_request_statements` and `db_request_duration_seconds{route}`, zero included. Opened
    inside another request's scope (a middleware added twice) it is that request: nothing is
    recorded twice."""

    def __init__(self, fields: RequestFields, metrics: Metrics | None = None) -> None:
        outer = current_scope()
        nested = outer is not None and outer.request
        self.scope = outer if outer is not None and nested else scope_within(outer, fields, True)
        self._fields = fields
        self._metrics = metrics
        self._ended = nested

    def end(self) -> None:
        """Never raises into the application; a second call (a server closing a response
        twice) records nothing."""
        if self._ended:
            return
        self._ended = True
        _end(_recorder(self._metrics or default_metrics()), self._fields, self.scope.usage)


@contextmanager
def request_scope(fields: RequestFields, metrics: Metrics | None = None) -> Iterator[QueryContext]:
    """An `OpenRequest` as a `with` block, the request's context set inside it."""
    request = OpenRequest(fields, metrics)
    token = current.set(request.scope)
    try:
        yield request.scope
    finally:
        current.reset(token)
        request.end()


def _end(recorder: _Recorder, fields: RequestFields, usage: Usage) -> None:
    """Never raises into the application: a failure is counted and logged once."""
    try:
        fields.settle()
        recorder.record(fields["route"], usage)
    except Exception:
        recorder.failures.record("request_metrics")
