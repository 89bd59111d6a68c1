"""What a kept value costs in memory, and a cache bounded both in entries and in those bytes."""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Hashable
from typing import Any, TypeVar

V = TypeVar("V")


def size_of(value: Any) -> int:
    """Bytes held by a JSON-like value (dicts, lists, tuples, strings, numbers) and everything
    in it, as `sys.getsizeof` counts them; a string shared by several containers is counted
    each time, so this errs high. Iterative: a plan is a tree hundreds of levels deep."""
    total, pending = 0, [value]
    while pending:
        item = pending.pop()
        total += sys.getsizeof(item)
        if isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list | tuple):
            pending.extend(item)
    return total


class BoundedCache(dict[Hashable, V]):
    """A dict that starts again empty when an entry would take it past its bounds: entries and
    bytes (each entry's size as the caller measures it), read from `bounds()` on each `put`, so
    new settings apply from the next miss. Emptying it only costs looking a few entries up
    again; an LRU would cost a lock on every hit, and hits are the query path. Reads are plain
    dict lookups; `put` is for misses."""

    def __init__(self, bounds: Callable[[], tuple[int, int]]) -> None:
        super().__init__()
        self.bounds = bounds  # () -> (max_entries, max_bytes)
        self.bytes = 0
        self._lock = threading.Lock()  # keeps `bytes` exact when threads miss together

    def put(self, key: Hashable, value: V, size: int) -> None:
        """Keep `value` unless it alone is larger than the byte bound."""
        max_entries, max_bytes = self.bounds()
        with self._lock:
            if key in self:  # another thread missed it too
                return
            if len(self) >= max_entries or self.bytes + size > max_bytes:
                self.clear()
                self.bytes = 0
            if size <= max_bytes:
                self[key] = value
                self.bytes += size
