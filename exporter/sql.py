"""What a statement does and to which table: the `operation` and `table` metric labels.

A small scanner over the statement's top level (outside parentheses, strings and comments),
cached per statement string, so a statement seen before costs one dictionary lookup.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import NamedTuple

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

_TOKEN = re.compile(
    r"""
      (?P<skip>'(?:[^']|'')*' | \$\$.*?\$\$ | --[^\n]* | /\*.*?\*/ | \s+ )
    | (?P<open>\()
    | (?P<close>\))
    | (?P<name>(?:"(?:[^"]|"")+"|[A-Za-z_][\w$]*)(?:\s*\.\s*(?:"(?:[^"]|"")+"|[A-Za-z_][\w$]*))*)
    | (?P<other>.)
    """,
    re.VERBOSE | re.DOTALL,
)


class Statement(NamedTuple):
    operation: str  # first SQL keyword (the main one after a WITH), or OTHER
    table: str | None  # primary table, unqualified, or None when there is none


def _top_level_names(sql: str) -> list[str]:
    """Names (keywords and identifiers) outside parentheses, in order; `other` tokens as ''."""
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
    """`public."Users"` -> `Users`; `public.users` -> `users`; keywords/punctuation -> None."""
    if not name:
        return None
    last = re.split(r"\s*\.\s*", name)[-1]
    if last.startswith('"'):
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


@lru_cache(maxsize=8192)
def classify(sql: str) -> Statement:
    """Operation and primary table of one SQL statement (never raises on odd input)."""
    names = _top_level_names(sql)
    if not names or names[0].upper() not in OPERATIONS | {"WITH"}:
        return Statement("OTHER", None)
    first = names[0].upper()
    start = 0
    if first == "WITH":
        main = next((i for i, n in enumerate(names) if n.upper() in DML), None)
        if main is None:
            return Statement("OTHER", None)
        start, first = main, names[main].upper()
    if first == "SELECT":
        table = _after(names, start, "FROM", skip=("ONLY",))
    elif first in ("INSERT", "MERGE"):
        table = _after(names, start, "INTO")
    elif first == "UPDATE":
        table = _after(names, start, "UPDATE", skip=("ONLY",))
    elif first == "DELETE":
        table = _after(names, start, "FROM", skip=("ONLY",))
    else:
        table = None
    return Statement(first, table)
