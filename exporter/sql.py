"""What a statement is: fingerprint, normalised text, operation and primary table.

PostgreSQL statements go through pglast (libpg_query, the parser PostgreSQL itself uses): the
fingerprint is libpg_query's, so statements that differ only in literal values or parameter
placeholders share it, and the normalised text has every literal replaced by `$n`. SQL that
pglast cannot parse, and other dialects, fall back to a small scanner and a hash of the text
with its literals masked.

`identify()` is cached per statement string (without a trailing comment such as sqlcommenter's
per-request `/*traceparent=...*/`), so a statement seen before costs one lookup; the slow-query
log reuses the same identity, so its fingerprints match the metrics'. The cache is bounded in
entries and in bytes, and a statement longer than `max_statement_length` is identified from its
prefix and cached under a digest of it: a 5 MB statement is never kept.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Hashable
from typing import Any, NamedTuple

from exporter.bounded import BoundedCache, size_of
from exporter.inprocess_settings import InstrumentationSettings

OPERATIONS = frozenset(
    {
        "SELECT", "INSERT", "UPDATE", "DELETE", "MERGE", "VALUES", "TABLE",
        "BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE", "START",
        "SET", "SHOW", "RESET", "DISCARD", "LISTEN", "NOTIFY", "UNLISTEN",
        "CREATE", "ALTER", "DROP", "TRUNCATE", "COMMENT", "GRANT", "REVOKE",
        "COPY", "EXPLAIN", "ANALYZE", "VACUUM", "LOCK", "CALL", "DO",
        "PREPARE", "EXECUTE", "DEALLOCATE", "FETCH", "CLOSE", "DECLARE", "MOVE",
        "REFRESH", "REINDEX", "CLUSTER",
    }
)  # fmt: skip
DML = ("SELECT", "INSERT", "UPDATE", "DELETE", "MERGE")
_AST_OPERATIONS = {
    "SelectStmt": "SELECT",
    "InsertStmt": "INSERT",
    "UpdateStmt": "UPDATE",
    "DeleteStmt": "DELETE",
    "MergeStmt": "MERGE",
}


class QueryIdentity(NamedTuple):
    fingerprint: str  # 16 hex digits
    normalized: str  # the statement with every literal masked
    operation: str  # SELECT, INSERT, ... (the main statement after a WITH), or OTHER
    table: str | None  # primary table, unqualified, or None
    # The statement's length when it was longer than max_statement_length and identified from
    # its prefix (the normalised text then ends with truncation_marker()); else None.
    full_length: int | None = None

    @property
    def truncated(self) -> bool:
        return self.full_length is not None


# -- PostgreSQL, through pglast -----------------------------------------------------------

# psycopg's placeholders (`%(name)s`, `%s`) are not SQL; pglast needs `$n`. `%%` is a literal %.
_PYFORMAT = re.compile(r"%%|%\([^)]*\)s|%s")


def _dollar_placeholders(sql: str) -> str:
    counter = 0

    def replace(match: re.Match[str]) -> str:
        nonlocal counter
        if match.group() == "%%":
            return "%"
        counter += 1
        return f"${counter}"

    return _PYFORMAT.sub(replace, sql)


def _from_item_table(item: dict[str, Any]) -> str | None:
    if "RangeVar" in item:
        return str(item["RangeVar"]["relname"])
    if "JoinExpr" in item:
        return _from_item_table(item["JoinExpr"]["larg"])
    if "RangeSubselect" in item:
        return _select_table(item["RangeSubselect"]["subquery"]["SelectStmt"])
    return None


def _select_table(select: dict[str, Any]) -> str | None:
    if select.get("op", "SETOP_NONE") != "SETOP_NONE":  # UNION/INTERSECT/EXCEPT: left side
        return _select_table(select["larg"])
    from_clause = select.get("fromClause")
    return _from_item_table(from_clause[0]) if from_clause else None


def _identify_postgresql(sql: str) -> QueryIdentity | None:
    """None for SQL PostgreSQL would not accept."""
    # Imported on the first new statement, not with the package: pglast's node classes cost
    # ~25 ms once (bench/import_cost.py), which an application importing db-exporter need not pay
    # before it runs a statement. Afterwards this is a sys.modules lookup, on cache misses only.
    from pglast import parser as pg

    text = _dollar_placeholders(sql) if "%" in sql else sql
    try:
        tree = pg.parse_sql_json(text)  # libpg_query bounds its own depth: a ParseError
        fingerprint, normalized = pg.fingerprint(text), pg.normalize(text)
    except pg.ParseError:
        return None
    try:
        statements = json.loads(tree).get("stmts", [])
    except RecursionError:
        # Deeper than Python's JSON decoder goes (~500 chained `+` or `||`): the parser
        # accepted it, so its fingerprint stands; the scanner names operation and table.
        return QueryIdentity(fingerprint, normalized, *_scan(sql))
    if not statements:
        return None
    node_type, node = next(iter(statements[0]["stmt"].items()))
    operation = _AST_OPERATIONS.get(node_type)
    if operation == "SELECT":
        table = _select_table(node)
    elif operation is not None:
        table = str(node["relation"]["relname"])
    else:
        operation, table = _scan(sql).operation, None
    return QueryIdentity(fingerprint, normalized, operation, table)


# -- any dialect: a scanner over the statement's top level ---------------------------------

_TOKEN = re.compile(
    r"""
      (?P<skip>'(?:[^']|'')*' | \$\$.*?\$\$ | --[^\n]* | /\*.*?\*/ | \s+ )
    | (?P<open>\()
    | (?P<close>\))
    | (?P<name>(?:"(?:[^"]|"")+"|`[^`]+`|[A-Za-z_][\w$]*)
               (?:\s*\.\s*(?:"(?:[^"]|"")+"|`[^`]+`|[A-Za-z_][\w$]*))*)
    | (?P<other>.)
    """,
    re.VERBOSE | re.DOTALL,
)
# Possessive (`++`, `*+`): a literal left open would otherwise make the regex engine keep a
# backtracking mark per character, 8 MiB for a 64 KiB one; closed literals match the same.
_LITERAL = re.compile(r"'(?:[^']++|'')*+'|\b\d+(?:\.\d+)?\b")
_SPACE = re.compile(r"\s+")


class _Scanned(NamedTuple):
    operation: str
    table: str | None


def _top_level_names(sql: str) -> list[str]:
    """Names (keywords and identifiers) outside parentheses, in order; other tokens as ''."""
    names: list[str] = []
    depth = 0
    for match in _TOKEN.finditer(sql):
        kind = match.lastgroup
        if kind == "open":
            depth += 1
        elif kind == "close":
            depth = max(depth - 1, 0)
        elif depth == 0 and kind == "name":
            names.append(match.group())
        elif depth == 0 and kind == "other":
            names.append("")
    return names


def _table_name(name: str) -> str | None:
    """`public."Users"` -> `Users`; `public.users` -> `users`; punctuation -> None."""
    if not name:
        return None
    last = re.split(r"\s*\.\s*", name)[-1]
    if last[0] in '"`':
        return last[1:-1].replace('""', '"')
    return last.lower()


def _after(names: list[str], start: int, keyword: str, skip: tuple[str, ...] = ()) -> str | None:
    for i in range(start, len(names)):
        if names[i].upper() == keyword:
            j = i + 1
            while j < len(names) and names[j].upper() in skip:
                j += 1
            return _table_name(names[j]) if j < len(names) else None
    return None


def _scan(sql: str) -> _Scanned:
    names = _top_level_names(sql)
    if not names or names[0].upper() not in OPERATIONS | {"WITH"}:
        return _Scanned("OTHER", None)
    first = names[0].upper()
    start = 0
    if first == "WITH":
        main = next((i for i, n in enumerate(names) if n.upper() in DML), None)
        if main is None:
            return _Scanned("OTHER", None)
        start, first = main, names[main].upper()
    if first in ("SELECT", "DELETE"):
        table = _after(names, start, "FROM", skip=("ONLY",))
    elif first in ("INSERT", "MERGE"):
        table = _after(names, start, "INTO")
    elif first == "UPDATE":
        table = _after(names, start, "UPDATE", skip=("ONLY",))
    else:
        table = None
    return _Scanned(first, table)


def _scanner_fingerprint(normalized: str) -> str:
    key = _SPACE.sub(" ", normalized).strip().lower()
    return hashlib.blake2b(key.encode("utf-8", "replace"), digest_size=8).hexdigest()


def _identify_any(sql: str) -> QueryIdentity:
    normalized = _LITERAL.sub("?", sql)
    return QueryIdentity(_scanner_fingerprint(normalized), normalized, *_scan(sql))


def truncation_marker(length: int) -> str:
    return f"...[truncated: {length} characters in all]"


# A statement identified from its prefix is fingerprinted by this many characters of it, with
# literals masked: where the prefix ends depends on the literals' lengths, so batches of one ETL
# statement with different values would otherwise each get a fingerprint.
PREFIX_FINGERPRINT_LENGTH = 4096


def _identify_prefix(prefix: str, length: int) -> QueryIdentity:
    """A statement of `length` characters from its first ones, by the scanner (the prefix
    seldom parses). A literal the cut left open is masked too, so none of its value shows."""
    normalized = _LITERAL.sub("?", prefix)
    open_literal = normalized.find("'")
    if open_literal >= 0:
        normalized = normalized[:open_literal] + "?"
    operation, table = _scan(normalized)
    fingerprint = _scanner_fingerprint(normalized[:PREFIX_FINGERPRINT_LENGTH])
    marked = normalized + truncation_marker(length)
    return QueryIdentity(fingerprint, marked, operation, table, length)


def without_trailing_comment(sql: str) -> str:
    """`SELECT 1 /*traceparent='00-...'*/` -> `SELECT 1`.

    sqlcommenter (OpenTelemetry's, Django's, ...) appends a comment that changes with every
    request; without it such statements share one cache entry and one fingerprint. A statement
    without one costs a single `endswith`.
    """
    if not sql.endswith("*/"):
        return sql
    start = sql.rfind("/*")
    # Not when the comment is the whole statement, or ends a nested comment that began earlier.
    if start <= 0 or "*/" in sql[start + 2 : -2]:
        return sql
    return sql[:start].rstrip()


# The bounds of the statement caches, set by `apply_settings()` (exporter.configure()).
_settings = InstrumentationSettings()


def apply_settings(settings: InstrumentationSettings) -> None:
    """Use `settings`' statement length and cache bounds from the next new statement on."""
    global _settings
    _settings = settings


def statement_cache_bounds() -> tuple[int, int]:
    """(entries, bytes) each statement cache may hold, for `BoundedCache`."""
    return _settings.statement_cache_size, _settings.statement_cache_max_bytes


def entry_size(key: Hashable, identity: QueryIdentity) -> int:
    """Bytes a cache entry holds: its key and the identity (counted whole in every cache)."""
    return size_of(key) + size_of(identity)


_identities: BoundedCache[QueryIdentity] = BoundedCache(statement_cache_bounds)


def statement_key(sql: str) -> Hashable:
    """What a statement is cached under: the statement without a trailing comment or, when
    longer than max_statement_length, a digest of its prefix (bytes: never equal to a
    statement), so that a long statement is never kept."""
    sql = without_trailing_comment(sql)
    limit = _settings.max_statement_length
    if len(sql) <= limit:
        return sql
    return hashlib.blake2b(sql[:limit].encode("utf-8", "surrogatepass"), digest_size=16).digest()


def identify(sql: str, postgresql: bool = True) -> QueryIdentity:
    """The identity of one statement; never raises, whatever the input."""
    key = statement_key(sql)
    found = _identities.get((key, postgresql))
    if found is None:
        if isinstance(key, str):
            found = _identify(key, postgresql)
        else:
            sql = without_trailing_comment(sql)
            found = _identify_prefix(sql[: _settings.max_statement_length], len(sql))
        _identities.put((key, postgresql), found, entry_size((key, postgresql), found))
    return found


def _identify(sql: str, postgresql: bool) -> QueryIdentity:
    if postgresql:
        try:
            found = _identify_postgresql(sql)
        except (KeyError, IndexError, StopIteration, ValueError):
            found = None  # a tree shape we do not know
        if found is not None:
            return found
    return _identify_any(sql)  # other dialects, SQL PostgreSQL would reject
