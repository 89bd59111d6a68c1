"""A throwaway PostgreSQL for the demo and the tests, from the `pgserver` wheel (no install)."""

from __future__ import annotations

import shutil
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager


class EmbeddedUnavailable(RuntimeError):
    """pgserver is not installed or its server did not start."""


@contextmanager
def embedded_postgres() -> Iterator[str]:
    """Start PostgreSQL in a new temporary directory, yield its URL, then stop it and delete it.

    The server listens on a Unix socket only, so it never competes for a TCP port.
    """
    with warnings.catch_warnings():
        # platformdirs warns about an unset XDG_RUNTIME_DIR on import; harmless here.
        warnings.simplefilter("ignore")
        try:
            import pgserver
        except ImportError:
            raise EmbeddedUnavailable(
                "no DATABASE_URL is set and the embedded server is missing: "
                "pip install 'db-exporter[demo]' or set DATABASE_URL"
            ) from None
    workdir = tempfile.mkdtemp(prefix="db-exporter-")
    try:
        try:
            server = pgserver.get_server(f"{workdir}/pgdata", cleanup_mode="delete")
        except Exception as exc:
            raise EmbeddedUnavailable(f"the embedded PostgreSQL did not start: {exc}") from exc
        try:
            yield str(server.get_uri())
        finally:
            server.cleanup()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
