"""What a statement is: fingerprint, normalised text, operation and primary table.

PostgreSQL statements go through pglast (libpg_query, the parser PostgreSQL itself uses): the
normalised text has every literal replaced by `$n`, and statements that differ only in literal
values or parameter placeholders share a fingerprint: libpg_query's for SELECT, INSERT, UPDATE,
DELETE and MERGE, a hash of the normalised text for the others (libpg_query's own would differ
with, and so betray, a `PASSWORD '...'`). SQL that pglast cannot parse, and other dialects,
fall back to a small scanner and a hash of the text with its literals masked.

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
        # accepted it, so its fingerprint and text stand; the scanner names operation and table.
        scanned = _scan(sql)
        utility = scanned.operation not in DML
        return QueryIdentity(*_fully_masked(fingerprint, normalized, utility), *scanned)
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
    utility = any(next(iter(s["stmt"])) not in _AST_OPERATIONS for s in statements)
    return QueryIdentity(*_fully_masked(fingerprint, normalized, utility), operation, table)


def _fully_masked(fingerprint: str, normalized: str, utility: bool) -> tuple[str, str]:
    """Fingerprint and text once the literals libpg_query's normalize() leaves are masked too.

    normalize() masks the values of SELECT, INSERT, UPDATE, DELETE and MERGE, but most utility
    statements keep theirs: `COMMENT ON ... IS '...'`, `COPY ... FROM '/path'`, the queries of
    `CREATE VIEW` and `PREPARE`, defaults, checks, function bodies, server options. PostgreSQL's
    own scanner finds them here: every string constant; in utility statements, numbers too (in
    the others the numbers left are type modifiers and `ORDER BY 1` positions, not values). Once
    per distinct statement: the result is cached with the identity."""
    if not (utility or "'" in normalized or _DOLLAR_QUOTE.search(normalized)):
        return fingerprint, normalized  # nothing left to mask: the common case
    masked = _mask_with_scanner(normalized, numbers=utility)
    if masked == normalized and not utility:
        return fingerprint, normalized
    return _text_fingerprint(masked), masked


_STRING_TOKENS = frozenset({"SCONST", "USCONST", "BCONST", "XCONST"})
_NUMBER_TOKENS = frozenset({"ICONST", "FCONST"})
_DOLLAR_QUOTE = re.compile(r"\$(?:[^\W\d]\w*)?\$")  # $$ or $tag$, not $1


def _mask_with_scanner(sql: str, numbers: bool) -> str:
    """`sql` with each literal token PostgreSQL's scanner finds replaced by the next `$n`."""
    from pglast import parser as pg

    try:
        tokens = pg.scan(sql)
    except pg.ParseError:  # an unterminated string, say: the scanner-free masking then
        return mask_literals(sql)
    literals = _STRING_TOKENS | _NUMBER_TOKENS if numbers else _STRING_TOKENS
    last = max((int(sql[t.start + 1 : t.end + 1]) for t in tokens if t.name == "PARAM"), default=0)
    parts, done = [], 0
    for token in tokens:
        if token.name in literals:
            last += 1
            parts += [sql[done : token.start], f"${last}"]
            done = token.end + 1
    return "".join(parts) + sql[done:]


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
_SPACE = re.compile(r"\s+")


def _literal_pattern(string: str) -> re.Pattern[str]:
    return re.compile(
        rf"""
          (?P<keep> --[^\n]* | /\*.*?(?:\*/|\Z)            # comments
                  | "(?:[^"]|"")*+(?:"|\Z) | `[^`]*(?:`|\Z)  # quoted names
                  | (?![EeBbXxNnUu]&?') [A-Za-z_][\w$]* )    # names, keywords
        | (?P<literal> [Ee]'(?:[^'\\]|''|\\.)*+(?:'|\Z) | (?:[BbXxNn]|[Uu]&)? {string}
                     | \$(?P<tag>[A-Za-z_]\w*)?\$.*?(?:\$(?P=tag)\$|\Z)  # dollar-quoted
                     | (?<!\$) (?:0[xX][0-9A-Fa-f_]+                 # numbers, not $1
                               | (?:\d[\d_]*(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?) )
        """,
        re.VERBOSE | re.DOTALL,
    )


# Whether a backslash escapes a quote in '...' is the dialect's and the server's choice (MySQL
# yes, PostgreSQL no; always in E'...'): text is masked as both readings would have it, so
# neither leaves a literal.
# A literal without its end is masked to the end of the text. Repeats are possessive (`*+`): a
# literal left open would otherwise make the regex engine keep a backtracking mark per
# character (8 MiB for one in a 64 KiB prefix); closed literals match the same.
_LITERAL_READINGS = (
    _literal_pattern(r"'(?:[^']|'')*+(?:'|\Z)"),
    _literal_pattern(r"'(?:[^'\\]|''|\\.)*+(?:'|\Z)"),
)


def mask_literals(sql: str) -> str:
    """`sql` with every string, dollar-quoted body and number replaced by `?`, for SQL that
    PostgreSQL's scanner cannot read (other dialects, broken statements)."""
    spans = sorted(
        match.span("literal")
        for pattern in _LITERAL_READINGS
        for match in pattern.finditer(sql)
        if match.group("literal") is not None
    )
    parts, done = [], 0
    for start, end in spans:
        if end <= done:
            continue
        if start >= done:
            parts += [sql[done:start], "?"]
        done = end
    return "".join(parts) + sql[done:]


def _text_fingerprint(masked: str) -> str:
    key = _SPACE.sub(" ", masked).strip().lower()
    return hashlib.blake2b(key.encode("utf-8", "replace"), digest_size=8).hexdigest()


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


def _identify_any(sql: str) -> QueryIdentity:
    normalized = mask_literals(sql)
    operation, table = _scan(sql)
    return QueryIdentity(_text_fingerprint(normalized), normalized, operation, table)


def truncation_marker(length: int) -> str:
    return f"...[truncated: {length} characters in all]"


# A statement identified from its prefix is fingerprinted by this many characters of it, with
# literals masked: where the prefix ends depends on the literals' lengths, so batches of one ETL
# statement with different values would otherwise each get a fingerprint.
PREFIX_FINGERPRINT_LENGTH = 4096


def _identify_prefix(prefix: str, length: int) -> QueryIdentity:
    """A statement of `length` characters from its first ones, by the scanner (the prefix
    seldom parses). A literal the cut left open is masked to the end, so none of its value
    shows."""
    normalized = mask_literals(prefix)
    operation, table = _scan(normalized)
    fingerprint = _text_fingerprint(normalized[:PREFIX_FINGERPRINT_LENGTH])
    marked = normalized + truncation_marker(length)
    return QueryIdentity(fingerprint, marked, operation, table, length)


def without_trailing_comment(sql: str) -> str:
    """`SELECT 1 /*traceparent='00-...'*/` -> `SELECT 1`, and `SELECT 1 /*...*/;` -> `SELECT 1;`.

    sqlcommenter (OpenTelemetry's, Django's, ...) appends a comment that changes with every
    request, before a final semicolon if there is one; without it such statements share one
    cache entry and one fingerprint. A statement without one costs two `endswith`.
    """
    if sql.endswith("*/"):
        end, tail = len(sql) - 2, ""
    elif sql.endswith("*/;"):
        end, tail = len(sql) - 3, ";"
    else:
        return sql
    start = sql.rfind("/*", 0, end)
    # Not when the comment is the whole statement, or ends a nested comment that began earlier.
    if start <= 0 or "*/" in sql[start + 2 : end]:
        return sql
    return sql[:start].rstrip() + tail


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
