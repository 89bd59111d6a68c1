"""What the pytest plugin counts while a test runs: its statements, their database time, each
SELECT it repeats (N+1) and where in the application code they come from.

The `Recorder` is the statement observer (`observe_statements`) while the plugin runs: every
statement of every instrumented engine, from any thread, counts toward the test running then
(pytest runs one test at a time in a process) and toward each open `db_queries` block. A
repeated SELECT is counted within the test, or within one web request when a db-exporter
middleware opened one (`exporter.integrations.request`), as the slow-query log does.
Everything kept is bounded (`Limits`); what goes past a bound is counted, not kept.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from types import TracebackType

from exporter.inprocess_settings import CallSiteSettings
from exporter.slowlog.callsite import CallSite, CallSiteFinder
from exporter.slowlog.context import QueryContext
from exporter.slowlog.record import shown_sql
from exporter.sql import QueryIdentity

# N+1 findings kept per test; more are counted in `RecordedQueries.n_plus_one_omitted`.
MAX_FINDINGS = 20
# Statements listed in a budget's failure message, the most repeated first.
LISTED = 10


@dataclass(frozen=True, slots=True)
class Limits:
    n_plus_one_threshold: int = 10  # the slow-query log's default: the same finding as production
    max_fingerprints: int = 10_000  # per test and per session, and per-scope counts per test
    max_sql_length: int = 500  # characters of normalised SQL kept per fingerprint


@dataclass(slots=True)
class Seen:
    """One fingerprint's statements within a test or a block."""

    sql: str
    table: str | None
    call_site: str | None  # where it first ran
    statements: int = 0
    seconds: float = 0.0


@dataclass(slots=True)
class Repeated:
    """An N+1 finding: one SELECT run `repeats` times within one test, or one request."""

    fingerprint: str
    sql: str
    table: str | None
    repeats: int
    call_site: str | None  # where it ran when it reached the threshold
    route: str | None  # the request's route, when it ran within one

    def describe(self) -> str:
        within = f"one request ({self.route})" if self.route else "the test"
        where = f" at {self.call_site}" if self.call_site else ""
        return f"{self.sql} ran {self.repeats} times within {within}{where}"


@dataclass(slots=True)
class RecordedQueries:
    """One test's statements (its call phase: fixtures' set-up and tear-down are not counted,
    so the data a fixture seeds counts against no budget)."""

    statements: int = 0
    seconds: float = 0.0
    fingerprints: dict[str, Seen] = field(default_factory=dict)
    n_plus_one: list[Repeated] = field(default_factory=list)
    n_plus_one_omitted: int = 0


def listing(fingerprints: dict[str, Seen]) -> str:
    """The statements of a test or block, the most repeated first, one line each."""
    ranked = sorted(fingerprints.values(), key=lambda seen: -seen.statements)
    lines = [
        f"  {seen.statements:>4}x {seen.sql}" + (f"  ({seen.call_site})" if seen.call_site else "")
        for seen in ranked[:LISTED]
    ]
    if len(ranked) > LISTED:
        lines.append(f"  ... and {len(ranked) - LISTED} other statements")
    return "\n".join(lines)


class Block:
    """`with db_queries(max=3):` counts the statements run inside; more than `max` fails."""

    def __init__(self, recorder: Recorder, max: int | None) -> None:
        self._recorder = recorder
        self.max = max
        self.count = 0
        self.seconds = 0.0
        self.fingerprints: dict[str, Seen] = {}

    def __enter__(self) -> Block:
        self._recorder.open(self)
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._recorder.close(self)
        if kind is None and self.max is not None and self.count > self.max:
            raise AssertionError(
                f"db_queries(max={self.max}): {self.count} statements ran in the block "
                f"({self.seconds * 1000:.1f} ms in the database):\n{listing(self.fingerprints)}"
            )


class Recorder:
    """The statement observer. Thread-safe: a test's server thread may run statements too."""

    def __init__(self, limits: Limits, source_root: str) -> None:
        self.limits = limits
        self._call_sites = CallSiteFinder(CallSiteSettings(source_root=source_root))
        self._lock = threading.Lock()
        self._test: RecordedQueries | None = None
        self._blocks: list[Block] = []
        # Repeats per scope: the test's (key 0) and each request's, keyed by the id of the
        # request's counts dict (shared by contexts nested in it), which is kept alive here so
        # that the id is not reused during the test.
        self._counts: dict[int, tuple[object, dict[str, int]]] = {}
        self._counted = 0  # entries over all scopes, within max_fingerprints
        # The test's findings by (scope, fingerprint), at most MAX_FINDINGS.
        self._findings: dict[tuple[int, str], Repeated] = {}
        self.statements_seen = 0  # over the session, in and out of tests

    def start(self) -> None:
        with self._lock:
            self._test = RecordedQueries()
            self._forget()

    def stop(self) -> RecordedQueries:
        with self._lock:
            test, self._test = self._test or RecordedQueries(), None
            self._forget()
            return test

    def _forget(self) -> None:
        self._counts.clear()
        self._findings.clear()
        self._counted = 0

    @property
    def current(self) -> RecordedQueries | None:
        return self._test

    def open(self, block: Block) -> None:
        with self._lock:
            self._blocks.append(block)

    def close(self, block: Block) -> None:
        with self._lock:
            self._blocks.remove(block)

    def __call__(
        self, identity: QueryIdentity, seconds: float, scope: QueryContext | None, ok: bool
    ) -> None:
        with self._lock:
            self.statements_seen += 1
            fingerprint = identity.fingerprint
            for block in self._blocks:
                block.count += 1
                block.seconds += seconds
                self._note(block.fingerprints, identity, seconds)
            test = self._test
            if test is None:
                return
            test.statements += 1
            test.seconds += seconds
            self._note(test.fingerprints, identity, seconds)
            if not ok or identity.operation != "SELECT":
                return  # as in the slow-query log: only SELECTs that ran make an N+1
            counts = self._scope_counts(scope)
            if counts is None or (fingerprint not in counts and not self._count_one_more()):
                return
            repeats = counts[fingerprint] = counts.get(fingerprint, 0) + 1
            if repeats >= self.limits.n_plus_one_threshold:
                self._repeated(test, identity, repeats, scope, id(counts))

    def _note(self, fingerprints: dict[str, Seen], identity: QueryIdentity, seconds: float) -> None:
        seen = fingerprints.get(identity.fingerprint)
        if seen is None:
            if len(fingerprints) >= self.limits.max_fingerprints:
                return
            sql = self._shown(identity)
            seen = fingerprints[identity.fingerprint] = Seen(sql, identity.table, self._site())
        seen.statements += 1
        seen.seconds += seconds

    def _scope_counts(self, scope: QueryContext | None) -> dict[str, int] | None:
        if scope is None or not scope.request:
            key, owner = 0, None
        else:
            key, owner = id(scope.counts), scope.counts
        entry = self._counts.get(key)
        if entry is None:
            if not self._count_one_more():
                return None
            entry = self._counts[key] = (owner, {})
        return entry[1]

    def _count_one_more(self) -> bool:
        if self._counted >= self.limits.max_fingerprints:
            return False
        self._counted += 1
        return True

    def _repeated(
        self,
        test: RecordedQueries,
        identity: QueryIdentity,
        repeats: int,
        scope: QueryContext | None,
        scope_key: int,
    ) -> None:
        """At the threshold a finding is made; past it, its count follows."""
        key = (scope_key, identity.fingerprint)
        if repeats > self.limits.n_plus_one_threshold:
            found = self._findings.get(key)
            if found is not None:
                found.repeats = repeats
            return
        if len(test.n_plus_one) >= MAX_FINDINGS:
            test.n_plus_one_omitted += 1
            return
        route = _route(scope) if scope is not None and scope.request else None
        sql = self._shown(identity)
        finding = Repeated(identity.fingerprint, sql, identity.table, repeats, self._site(), route)
        test.n_plus_one.append(finding)
        self._findings[key] = finding

    def _shown(self, identity: QueryIdentity) -> str:
        """On one line, for the terminal; cut as the slow-query log cuts it."""
        return " ".join(shown_sql(identity, self.limits.max_sql_length).split())

    def _site(self) -> str | None:
        site = self._call_sites.find()
        return _shown(site) if site is not None else None


def _shown(site: CallSite) -> str:
    return f"{site.file}:{site.line} in {site.function}"


def _route(scope: QueryContext) -> str | None:
    """The request's route as its middleware names it (computed when read, so guarded)."""
    try:
        return scope.fields.get("route")
    except Exception:
        return None
