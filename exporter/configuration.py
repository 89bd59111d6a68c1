"""The one seam between a config and the application's process: `configure()`.

Imported on first use of `exporter.configure`, so an application that only instruments never
loads pydantic, YAML or the server.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING

from exporter import sql
from exporter.instrumentation.budget import LabelLimits
from exporter.metrics import default_metrics
from exporter.slowlog import default_slow_log

if TYPE_CHECKING:
    from exporter.server import Exporter
    from exporter.settings import Settings

log = logging.getLogger("exporter.config")


def configure(source: str | os.PathLike[str] | Settings | None = None) -> Exporter:
    """Apply a config to this process and return the `Exporter` it describes, not started.

    `source`: a YAML file, a `Settings`, or None to read the environment. `instrumentation:`
    (label caps, statement length and caches) goes to the default metrics and the statement
    caches, and `slow_queries:` to the process-wide slow-query log, and both apply to the
    engines instrumented before as well: a new threshold from the next statement on, a new cap
    to the label sets not admitted yet. Raises ConfigError, having changed nothing, when the
    config is not valid or its slow-query file cannot be opened.
    """
    from exporter.server import Exporter
    from exporter.settings import SIDECAR_KEYS, ConfigError, Settings, load_settings, non_default

    settings = source if isinstance(source, Settings) else load_settings(source)
    metrics = default_metrics()
    exporter = Exporter.from_settings(settings, metrics)  # checks the web config file
    try:
        default_slow_log(settings.slow_queries, metrics)
    except OSError as exc:
        where, reason = settings.slow_queries.file, exc.strerror or str(exc)
        raise ConfigError(f"slow_queries.file: cannot open {where}: {reason}") from None
    metrics.limits = LabelLimits.from_settings(settings.instrumentation)
    sql.apply_settings(settings.instrumentation)
    if ignored := non_default(settings, SIDECAR_KEYS):
        log.warning(
            "exporter.configure() ignores %s: the application's own logging configuration decides",
            ", ".join(ignored),
        )
    return exporter
