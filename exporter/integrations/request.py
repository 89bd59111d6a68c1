"""What every web-framework middleware needs besides the framework: a request id that is safe
to put in records, and the fixed route of a request that no route template matched."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator, Mapping

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
