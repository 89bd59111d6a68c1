"""Strict parsing of `/slow-queries` query parameters: a bad value is a 400 with a one-line
JSON body naming the parameter, never an exception from deeper down (a Unicode digit passes
`str.isdigit` but not `int`; a 5,000-digit number exceeds Python's conversion limit)."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime

from aiohttp import web
from multidict import MultiMapping

_WHOLE_NUMBER = re.compile(r"[0-9]{1,9}")  # ASCII only; 9 digits fit every range used here
MAX_TIMESTAMP_LENGTH = 64  # ISO 8601 with a zone and nanoseconds is 35 characters


def bad_request(name: str, expected: str) -> web.HTTPBadRequest:
    """A 400 whose JSON body names the parameter and what it must be (never echoes the value)."""
    return web.HTTPBadRequest(
        text=json.dumps({"error": f"{name} must be {expected}"}),
        content_type="application/json",
    )


def whole_number(query: MultiMapping[str], name: str, default: int, low: int, high: int) -> int:
    """`name` as an integer from `low` to `high` in ASCII digits, or `default` when absent."""
    raw = query.get(name)
    if raw is None:
        return default
    if _WHOLE_NUMBER.fullmatch(raw) is None or not low <= int(raw) <= high:
        raise bad_request(name, f"a whole number from {low} to {high}")
    return int(raw)


def timestamp(query: MultiMapping[str], name: str) -> str | None:
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
        raise bad_request(name, "an ISO 8601 time such as 2024-05-01T12:00:00+00:00") from None
