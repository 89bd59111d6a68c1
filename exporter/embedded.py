"""A throwaway PostgreSQL for the demo and the tests, from the `pgserver` wheel (no install)."""

from __future__ import annotations

import shutil
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NamedTuple


class EmbeddedUnavailable(RuntimeError):
    """pgserver is not installed or its server did not start."""


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
            import pgserver
        except ImportError:
            raise EmbeddedUnavailable(
                "no DATABASE_URL is set and the embedded server is missing: "
                "pip install 'db-exporter[demo]' or set DATABASE_URL"
            ) from None
    workdir = directory or tempfile.mkdtemp(prefix="db-exporter-")
    try:
        try:
            server = pgserver.get_server(f"{workdir}/pgdata", cleanup_mode="delete")
        except Exception as exc:
            raise EmbeddedUnavailable(f"the embedded PostgreSQL did not start: {exc}") from exc
        try:
            yield EmbeddedServer(str(server.get_uri()), workdir)
        finally:
            server.cleanup()
    finally:
        if directory is None:
            shutil.rmtree(workdir, ignore_errors=True)
