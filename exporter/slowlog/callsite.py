"""Where in the application a statement came from: the first frame of the application's own
code. Skipped: anything installed (site-packages / dist-packages), Python's own library,
SQLAlchemy, the database drivers, greenlet, db-exporter's hooks, and `skip_packages`; kept:
`app_packages`, even when installed. Captured for slow statements only.

Under an AsyncEngine the statement runs in a greenlet that SQLAlchemy started; the awaiting
application code is on the parent greenlet's stack, which is searched next.

Whether a frame is the application's depends on its code object only, so it is decided once per
code object and remembered, with the path as it is shown.
"""

from __future__ import annotations

import os
import site
import sys
import sysconfig
from types import CodeType, FrameType
from typing import NamedTuple

from exporter.inprocess_settings import CallSiteSettings

# db-exporter's own hooks are skipped, not the whole package: the demo's workload, which
# lives in it, is application code. The others are skipped wherever they are installed.
_LIBRARIES = (
    "exporter.instrumentation", "exporter.slowlog", "exporter.integrations",
    "sqlalchemy", "asyncpg", "psycopg", "psycopg2", "greenlet", "pymysql",
)  # fmt: skip
# The demo's workload is application code even when db-exporter is installed (the image).
_APPLICATION = ("exporter.demo",)
# ...but the reference data layer's generic repository and transaction manager are plumbing
# every unit of work goes through: the call site is the code that called them.
_DATA_LAYER_PLUMBING = ("exporter.demo.models.repository", "exporter.demo.models.transactions")
# Path components of installed distributions, wherever the environment keeps them.
_INSTALLED_DIRS = ("site-packages", "dist-packages")
# Remembered decisions; cleared when full (a few more walks then, no growth).
MAX_CACHED_CODE = 4096
# The default source root: where the application was started.
_START_DIR = os.getcwd()


class CallSite(NamedTuple):
    file: str  # relative to the source root when under it
    line: int
    function: str
    url: str | None = None  # from source_url_template


def _dir(path: str) -> str:
    return os.path.join(os.path.realpath(path), "")


def _installed_and_stdlib_dirs() -> tuple[str, ...]:
    """The standard library and every site directory this interpreter knows of."""
    paths = sysconfig.get_paths()
    dirs = [paths[key] for key in ("stdlib", "platstdlib", "purelib", "platlib") if key in paths]
    dirs += site.getsitepackages() if hasattr(site, "getsitepackages") else []
    dirs.append(site.getusersitepackages())
    return tuple(sorted({_dir(d) for d in dirs if d}))


def _matches(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


class CallSiteFinder:
    """Finds the call site under one `CallSiteSettings`; made again when they change."""

    def __init__(self, settings: CallSiteSettings) -> None:
        self.settings = settings
        skip = settings.skip_packages
        self._app_modules = _APPLICATION + settings.app_packages
        self._skip_modules = _LIBRARIES + tuple(p for p in skip if os.sep not in p)
        self._skip_dirs = _installed_and_stdlib_dirs() + tuple(_dir(p) for p in skip if os.sep in p)
        self._root = _dir(settings.source_root or _START_DIR)
        self._template = settings.source_url_template
        # id(code object) -> (the code object, the path shown for it or None when it is not the
        # application's). By identity: code objects compare equal across files when their
        # bodies are the same, and the code is kept so that its id is not reused meanwhile.
        self._shown: dict[int, tuple[CodeType, str | None]] = {}

    def find(self) -> CallSite | None:
        found = self._search(sys._getframe(1))
        greenlet = sys.modules.get("greenlet")
        parent = greenlet.getcurrent().parent if greenlet is not None else None
        while found is None and parent is not None:
            found = self._search(parent.gr_frame)
            parent = parent.parent
        return found

    def _search(self, frame: FrameType | None) -> CallSite | None:
        shown = self._shown
        while frame is not None:
            code = frame.f_code
            known = shown.get(id(code))
            if known is not None and known[0] is code:
                path = known[1]
            else:
                path = self._decide(code, frame.f_globals.get("__name__"))
            if path is not None:
                return self._site(path, frame.f_lineno, code.co_name)
            frame = frame.f_back
        return None

    def _decide(self, code: CodeType, module: object) -> str | None:
        path = self._shown_path(code.co_filename, module if isinstance(module, str) else "")
        if len(self._shown) >= MAX_CACHED_CODE:
            self._shown.clear()
        self._shown[id(code)] = (code, path)
        return path

    def _shown_path(self, filename: str, module: str) -> str | None:
        """`filename` as shown, or None when the frame is not the application's."""
        if filename.startswith("<"):  # <frozen ...>, <string>: nothing to point at
            return None
        real = os.path.realpath(filename)
        if _matches(module, _DATA_LAYER_PLUMBING):
            return None
        if not _matches(module, self._app_modules):
            if _matches(module, self._skip_modules) or real.startswith(self._skip_dirs):
                return None
            if any(part in _INSTALLED_DIRS for part in real.split(os.sep)):
                return None
        return real[len(self._root) :] if real.startswith(self._root) else real

    def _site(self, path: str, line: int, function: str) -> CallSite:
        url = None
        if self._template is not None and not os.path.isabs(path):
            commit = self.settings.source_commit or ""
            url = self._template.format(path=path.replace(os.sep, "/"), line=line, commit=commit)
        return CallSite(path, line, function, url)
