"""Why part of a collector was skipped, said once: a replica has no WAL insert position, a
primary no WAL receiver. The run still succeeds (a skip is not a failure, so no alert and no
error loop); the reason is logged when it first applies and again only when it changes.
"""

from __future__ import annotations

import logging

log = logging.getLogger("exporter.collectors")


class SkipNotice:
    def __init__(self, collector: str, datname: str) -> None:
        self._where = f"collector {collector} on database {datname}"
        self._said: str | None = None

    def skipped(self, reason: str | None) -> None:
        """This run skipped something for `reason` (None: it skipped nothing)."""
        if reason is not None and reason != self._said:
            log.info("%s: %s", self._where, reason)
        self._said = reason
