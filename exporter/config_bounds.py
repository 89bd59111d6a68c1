"""The range of every numeric setting, in one place, so that what `check-config` accepts,
`serve` runs: finite, and within what PostgreSQL and asyncio take. Each setting's own lower
bound is declared beside it; these are the bounds every setting shares, chosen by its name."""

from __future__ import annotations

import math
from collections.abc import Mapping

# Timeouts become statement_timeout and lock_timeout, whose largest value is 2^31 - 1 ms
# (24.8 days); intervals are held to the same bound.
MAX_SECONDS = 2_147_483
MAX_MILLISECONDS = MAX_SECONDS * 1000
# Counts and sizes (caps, buffers, rows, bytes): a 32-bit signed integer.
MAX_COUNT = 2**31 - 1
# A custom query's SQL: PostgreSQL's parser, run in-process at start-up to check it, recurses
# once per operator, and a statement of 50,000 `+` (100 kB) overflows its C stack. At this
# size, with at most 8,000, the check takes under a second.
MAX_SQL_BYTES = 16 * 1024
# Settings with a range of their own (a bigint), beyond the shared one.
_OWN_RANGE = frozenset({"lock_key"})


def out_of_range(name: str, value: object) -> str | None:
    """Why `value`, the value of the setting `name`, is beyond the shared bounds ("must be
    ..."), or None; the values of a mapping (a per-database or per-metric override) are held
    to its name's bound."""
    if isinstance(value, Mapping):
        problems = (out_of_range(name, v) for v in value.values())
        return next((p for p in problems if p is not None), None)
    if isinstance(value, bool) or not isinstance(value, int | float) or name in _OWN_RANGE:
        return None
    if name.endswith("_seconds"):
        limit, unit = MAX_SECONDS, " (24.8 days, PostgreSQL's longest timeout)"
    elif name.endswith("_ms") or "_ms_" in name:
        limit, unit = MAX_MILLISECONDS, " (24.8 days, PostgreSQL's longest timeout)"
    else:
        limit, unit = MAX_COUNT, ""
    if not math.isfinite(value) or abs(value) > limit:
        return f"must be a finite number of at most {limit}{unit}, not {value!r}"
    return None
