"""The page's query parameters. A bad value is a `BadParameter`, answered 400 with one line
naming the parameter and what it must be; the value itself is never echoed."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from exporter.slowlog.params import BadParameter, whole_number

DEFAULT_WINDOW = "1h"
# Offered in the page's form; any other `<number><unit>` in range works too.
WINDOWS = ("15m", "1h", "6h", "24h", "7d", "all")
_DURATION = re.compile(r"([0-9]{1,7})([smhd])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
MIN_WINDOW_SECONDS = 60
MAX_WINDOW_SECONDS = 30 * 86400
MIN_REFRESH_SECONDS = 5
MAX_REFRESH_SECONDS = 3600
_WINDOW_EXPECTED = (
    "all or a duration from 1m to 30d such as 15m, 1h, 6h, 24h, 7d (s, m, h or d after a "
    "whole number)"
)


@dataclass(frozen=True)
class PageQuery:
    window: str = DEFAULT_WINDOW  # as given (validated), for links and the form
    window_seconds: int | None = 3600  # None: every record kept
    refresh: int | None = None  # seconds between reloads; None: no reload


def window_seconds(raw: str) -> int | None:
    """`all` -> None; `15m` -> 900. BadParameter otherwise."""
    if raw == "all":
        return None
    found = _DURATION.fullmatch(raw)
    if found is None:
        raise BadParameter("window", _WINDOW_EXPECTED)
    seconds = int(found[1]) * _UNIT_SECONDS[found[2]]
    if not MIN_WINDOW_SECONDS <= seconds <= MAX_WINDOW_SECONDS:
        raise BadParameter("window", _WINDOW_EXPECTED)
    return seconds


def page_query(query: Mapping[str, str]) -> PageQuery:
    window = query.get("window", DEFAULT_WINDOW)
    seconds = window_seconds(window)
    refresh = None
    if query.get("refresh", "") != "":  # the form's "off" sends an empty value
        low, high = MIN_REFRESH_SECONDS, MAX_REFRESH_SECONDS
        refresh = whole_number(query, "refresh", low, low, high)
    return PageQuery(window, seconds, refresh)
