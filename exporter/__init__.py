"""db-exporter: Prometheus metrics and slow-query insight for SQLAlchemy + PostgreSQL.

    from exporter import instrument
    instrument(engine, database="main")   # Engine or AsyncEngine

and, to serve `/metrics` from inside the application:

    exporter = Exporter(listen="0.0.0.0:9188")
    await exporter.start()                # or exporter.start_in_thread() in a sync app
"""

from exporter.instrumentation import instrument, is_instrumented, uninstrument
from exporter.metrics import Metrics, default_metrics
from exporter.server import Exporter, create_app
from exporter.settings import ConfigError, Settings, load_settings

__all__ = [
    "ConfigError",
    "Exporter",
    "Metrics",
    "Settings",
    "create_app",
    "default_metrics",
    "instrument",
    "is_instrumented",
    "load_settings",
    "uninstrument",
]
