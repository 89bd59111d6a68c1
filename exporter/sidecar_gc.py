"""The sidecar's garbage collector: what start-up loaded is frozen, once.

A full (generation-2) collection scans every object Python's collector tracks, in one go, on
the event loop. In `db-exporter serve` nearly all of them (~110,000) are modules, functions
and classes that start-up loaded and that live as long as the process: one collection took
90-160 ms during a collector run, and /metrics, /healthz and /readyz waited behind it.
`gc.freeze()` takes them out of the collector's sight; collections then scan only what was
made since (bench/collectors_scrape.py: the longest collection over 1,200 indexes with every
collector on drops below ~10 ms).

Only the sidecar's own processes (`db-exporter serve`, the demo's sidecar) call it: the
library never changes a host application's garbage collector.
"""

from __future__ import annotations

import gc
import logging

log = logging.getLogger(__name__)


def freeze_start_up() -> int:
    """Collect what start-up left behind (so no garbage is kept for good), then freeze every
    object left; return how many are frozen."""
    gc.collect()
    gc.freeze()
    frozen = gc.get_freeze_count()
    log.debug("froze %d objects that start-up loaded out of the garbage collector's sight", frozen)
    return frozen
