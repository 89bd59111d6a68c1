"""Strict parsing of `/slow-queries` query parameters: a bad value is a `BadParameter` (a 400
with a one-line JSON body naming the parameter, in the aiohttp server and the mounted ASGI
app alike), never an exception from deeper down (a Unicode digit passes `str.isdigit` but not
`int`; a 5,000-digit number exceeds Python's conversion limit)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime

_WHOLE_NUMBER = re.compile(r"[0-9]{1,9}")  # ASCII only; 9 digits fit every range used here
MAX_TIMESTAMP_LENGTH = 64  # ISO 8601 with a zone and nanoseconds is 35 characters


class BadParameter(ValueError):
    """Names the parameter and what it must be (never echoes the value)."""

    def __init__(self, name: str, expected: str) -> None:
        super().__init__(f"{name} must be {expected}")


def whole_number(query: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    """`name` as an integer from `low` to `high` in ASCII digits, or `default` when absent."""
    raw = query.get(name)
    if raw is None:
        return default
    if _WHOLE_NUMBER.fullmatch(raw) is None or not low <= int(raw) <= high:
        raise BadParameter(name, f"a whole number from {low} to {high}")
    return int(raw)


def timestamp(query: Mapping[str, str], name: str) -> str | None:
    """`name` as an ISO 8601 time (UTC when it names no zone), rendered as records render
    theirs so that the two compare as strings; None when absent."""
    raw = query.get(name)
    if raw is None:
        return None
    try:
        if len(raw) > MAX_TIMESTAMP_LENGTH or not raw.isascii():
            raise ValueError(raw)
        moment = datetime.fromisoformat(raw)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return moment.astimezone(UTC).isoformat(timespec="milliseconds")
    except (ValueError, OverflowError):  # OverflowError: year 1 or 9999 moved across a zone
        raise BadParameter(name, "an ISO 8601 time such as 2024-05-01T12:00:00+00:00") from None
