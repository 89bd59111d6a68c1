"""Where in the application a statement came from: the first frame outside SQLAlchemy, the
database drivers, greenlet, Python's own library (asyncio, threading, ...) and db-exporter.
Captured for slow statements only.

Under an AsyncEngine the statement runs in a greenlet that SQLAlchemy started; the awaiting
application code is on the parent greenlet's stack, which is searched next.
"""

from __future__ import annotations

import os
import sys
from types import FrameType, ModuleType
from typing import NamedTuple

# db-exporter's own hooks are skipped, not the whole package: the demo's workload, which
# lives in it, is application code.
_LIBRARIES = (
    "exporter.instrumentation", "exporter.slowlog",
    "sqlalchemy", "asyncpg", "psycopg", "psycopg2", "greenlet", "pymysql",
)  # fmt: skip
_STDLIB = os.path.dirname(os.__file__) + os.sep


class CallSite(NamedTuple):
    file: str
    line: int
    function: str


def _package_dir(module: ModuleType | None) -> str | None:
    path = getattr(module, "__file__", None)
    return os.path.dirname(path) + os.sep if path else None


def _skipped_prefixes() -> tuple[str, ...]:
    dirs = (_package_dir(sys.modules.get(name)) for name in _LIBRARIES)
    return tuple(d for d in dirs if d)


def _skipped(filename: str, libraries: tuple[str, ...]) -> bool:
    if filename.startswith("<") or filename.startswith(libraries):
        return True
    # Python's own library, but not packages installed beside it (the application may be one).
    return filename.startswith(_STDLIB) and "-packages" + os.sep not in filename


def _search(frame: FrameType | None, libraries: tuple[str, ...]) -> CallSite | None:
    while frame is not None:
        code = frame.f_code
        if not _skipped(code.co_filename, libraries):
            return CallSite(code.co_filename, frame.f_lineno, code.co_name)
        frame = frame.f_back
    return None


def call_site() -> CallSite | None:
    libraries = _skipped_prefixes()
    found = _search(sys._getframe(1), libraries)
    greenlet = sys.modules.get("greenlet")
    parent = greenlet.getcurrent().parent if greenlet is not None else None
    while found is None and parent is not None:
        found = _search(parent.gr_frame, libraries)
        parent = parent.parent
    return found
