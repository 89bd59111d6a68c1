"""The wallet schema's Alembic configuration, built from the files shipped in this package (no
alembic.ini needed: the demo runs from an installed wheel in any directory)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic.config import Config
from sqlalchemy.engine import URL

from exporter.dsn import async_url

# The wallet's Alembic scripts: a link to the repository's alembic/ in a checkout, a copy in
# the wheel.
SCRIPT_LOCATION = Path(__file__).resolve().parent / "migrations"
# What the demo's migrations collector compares the database with.
METADATA = "exporter.demo.models:Base.metadata"


def alembic_config(url: URL | None = None, **options: Any) -> Config:
    """The wallet's Alembic configuration, pointed at `url` (None: no URL set).

    Alembic's option values go through configparser interpolation, so every `%` in the URL (a
    percent-encoded password or socket path) is doubled.
    """
    config = Config(**options)
    config.set_main_option("script_location", str(SCRIPT_LOCATION))
    if url is not None:
        rendered = async_url(url).render_as_string(hide_password=False)
        config.set_main_option("sqlalchemy.url", rendered.replace("%", "%%"))
    return config


def apply_migrations(url: URL) -> None:
    """Upgrade the wallet schema to head."""
    from alembic import command

    command.upgrade(alembic_config(url), "head")
