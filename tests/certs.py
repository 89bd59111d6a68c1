"""Throwaway certificates made with the `openssl` command line: a CA, a server certificate for
127.0.0.1 and localhost, and a client certificate, all signed by that CA."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

NO_OPENSSL = "the openssl command is needed to make certificates"
needs_openssl = pytest.mark.skipif(shutil.which("openssl") is None, reason=NO_OPENSSL)


@dataclass(frozen=True)
class Certs:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_certs(directory: Path, client: str = "client") -> Certs:
    """A new CA in `directory` and the certificates it signs; `client` is the client
    certificate's common name (PostgreSQL's `clientcert=verify-full` matches it to the user)."""
    if shutil.which("openssl") is None:
        pytest.skip(NO_OPENSSL)
    d = directory
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
             "-subj", "/CN=db-exporter test CA", cwd=d)  # fmt: skip
    for name, common_name, extension in (
        ("server", "server", "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
                             "extendedKeyUsage=serverAuth"),
        ("client", client, "extendedKeyUsage=clientAuth"),
    ):  # fmt: skip
        (d / f"{name}.ext").write_text(extension + "\n")
        _openssl("req", "-new", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr",
                 "-subj", f"/CN={common_name}", cwd=d)  # fmt: skip
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                 "-CAcreateserial", "-out", f"{name}.crt", "-days", "2",
                 "-extfile", f"{name}.ext", cwd=d)  # fmt: skip
    return Certs(
        d / "ca.crt", d / "server.crt", d / "server.key", d / "client.crt", d / "client.key"
    )
