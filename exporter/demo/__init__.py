"""The demo: an embedded PostgreSQL, the wallet schema and its live workload.

The only code that imports the reference data layer. `models` and `migrations` here are the
repository's top-level `models/` and `alembic/` (links in a checkout, real copies in the
wheel), so an installed db-exporter never adds a top-level `models` package to an application.
"""
