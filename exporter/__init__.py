"""db-exporter: Prometheus metrics and slow-query insight for SQLAlchemy + PostgreSQL.

    from exporter import instrument
    instrument(engine, database="main")   # Engine or AsyncEngine

and, to apply a config file and serve `/metrics` from inside the application:

    exporter = configure("exporter.yaml")  # label caps, slow-query log, the Exporter
    await exporter.start()                # or exporter.start_in_thread() in a sync app

and, for a developer, a statement's plan with what to fix in it:

    print(explain(session, select(User).where(User.email == email)))

Importing this package and calling `instrument()` loads no server, driver or config code:
every name below is imported on first use, so that importing a submodule alone (the pytest
plugin's entry point, which pytest loads in every test run) loads nothing else.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from exporter._version import __version__
    from exporter.configuration import configure
    from exporter.explainer import explain
    from exporter.instrumentation import instrument, is_instrumented, uninstrument
    from exporter.metrics import Metrics, default_metrics
    from exporter.server import Exporter, create_app
    from exporter.settings import ConfigError, Settings, load_settings

__all__ = [
    "ConfigError",
    "Exporter",
    "Metrics",
    "Settings",
    "__version__",
    "configure",
    "create_app",
    "default_metrics",
    "explain",
    "instrument",
    "is_instrumented",
    "load_settings",
    "uninstrument",
]

# Public name -> the module that defines it, imported when the name is first used.
_LAZY = {
    "instrument": "exporter.instrumentation",
    "is_instrumented": "exporter.instrumentation",
    "uninstrument": "exporter.instrumentation",
    "Metrics": "exporter.metrics",
    "default_metrics": "exporter.metrics",
    "__version__": "exporter._version",
    "configure": "exporter.configuration",
    "Exporter": "exporter.server",
    "create_app": "exporter.server",
    "explain": "exporter.explainer",
    "ConfigError": "exporter.settings",
    "Settings": "exporter.settings",
    "load_settings": "exporter.settings",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # once: later lookups do not come here
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
