"""TLS and basic auth from an exporter-toolkit web-config file, against a real HTTPS server.

Certificates are made at test time with the `openssl` command line: a CA, a server
certificate for 127.0.0.1 and a client certificate, all signed by that CA."""

from __future__ import annotations

import logging
import shutil
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from basic_auth import basic_auth, bcrypt_hash
from certs import Certs, needs_openssl
from prometheus_client import CollectorRegistry
from sockets import free_port

from exporter.metrics import Metrics
from exporter.server import Exporter
from exporter.settings import ConfigError, load_settings
from exporter.webconfig import WebConfig, load_web_config

pytestmark = needs_openssl

PASSWORD = "s3cret: with a colon"
PROTECTED = ["/metrics", "/readyz", "/slow-queries", "/"]
VALID_HASH = "$2b$04$HfWEkHavScDwM9rhayqz/eHUGdMmuU4UR0DhY5mdv/HNJJynVKA/a"  # of "pw"


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "web-config.yml"
    path.write_text(text)
    return path


def _tls_block(certs: Certs, extra: str = "") -> str:
    return (
        "tls_server_config:\n"
        f"  cert_file: {certs.server_cert}\n"
        f"  key_file: {certs.server_key}\n" + extra
    )


def _client_context(certs: Certs, with_cert: bool = False) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(certs.ca))
    if with_cert:
        context.load_cert_chain(certs.client_cert, certs.client_key)
    return context


@pytest.fixture
async def serve() -> AsyncIterator[object]:
    started: list[Exporter] = []

    async def start(config: WebConfig) -> str:
        exporter = Exporter(
            listen="127.0.0.1:0", metrics=Metrics(CollectorRegistry()), web_config=config
        )
        await exporter.start()
        started.append(exporter)
        return exporter.url

    yield start
    for exporter in started:
        await exporter.stop()


async def _get(
    url: str, context: ssl.SSLContext | bool = False, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], str]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(url, ssl=context, headers=headers or {}) as response,
    ):
        return response.status, dict(response.headers), await response.text()


async def test_https_with_basic_auth_protects_every_route_but_healthz(
    tmp_path: Path, certs: Certs, serve: object
) -> None:
    path = _write(
        tmp_path,
        _tls_block(certs)
        + f"basic_auth_users:\n  prometheus: '{bcrypt_hash(PASSWORD, '$2y$')}'\n"
        + "http_server_config:\n  headers:\n    X-Content-Type-Options: nosniff\n",
    )
    url = await serve(load_web_config(path))  # type: ignore[operator]
    assert url.startswith("https://127.0.0.1:")
    tls = _client_context(certs)

    for route in PROTECTED:
        status, headers, _ = await _get(url + route, tls)
        assert status == 401, route
        assert headers["WWW-Authenticate"] == 'Basic realm="db-exporter", charset="UTF-8"'
        assert headers["X-Content-Type-Options"] == "nosniff"
        for wrong in (
            basic_auth("prometheus", "wrong"),
            basic_auth("nobody", PASSWORD),
            {"Authorization": "Basic !!!not-base64"},
            {"Authorization": "Bearer " + PASSWORD},
        ):
            assert (await _get(url + route, tls, wrong))[0] == 401, (route, wrong)

    status, _, body = await _get(url + "/metrics", tls, basic_auth("prometheus", PASSWORD))
    assert status == 200
    assert "exporter_build_info" in body
    # The second request is served from the verified-credentials cache, and still checked.
    assert (await _get(url + "/metrics", tls, basic_auth("prometheus", PASSWORD)))[0] == 200
    assert (await _get(url + "/metrics", tls, basic_auth("prometheus", PASSWORD + "x")))[0] == 401
    assert (await _get(url + "/", tls, basic_auth("prometheus", PASSWORD)))[0] == 200
    assert (await _get(url + "/healthz", tls))[0] == 200

    # Plain HTTP on the TLS port gets nowhere.
    with pytest.raises(aiohttp.ClientError):
        await _get(url.replace("https://", "http://") + "/healthz")
    # Nor does a client that does not trust the certificate.
    with pytest.raises(aiohttp.ClientConnectorCertificateError):
        await _get(url + "/healthz", ssl.create_default_context())


async def test_basic_auth_without_tls(tmp_path: Path, serve: object) -> None:
    path = _write(tmp_path, f"basic_auth_users:\n  alice: '{bcrypt_hash('pw')}'\n")
    url = await serve(load_web_config(path))  # type: ignore[operator]
    assert url.startswith("http://")
    assert (await _get(url + "/metrics"))[0] == 401
    assert (await _get(url + "/metrics", headers=basic_auth("alice", "pw")))[0] == 200
    assert (await _get(url + "/healthz"))[0] == 200


async def test_passwords_over_72_bytes_are_refused_for_every_user(
    tmp_path: Path, serve: object, caplog: pytest.LogCaptureFixture
) -> None:
    longest = "é" * 36  # 72 bytes in UTF-8: the most bcrypt reads
    path = _write(tmp_path, f"basic_auth_users:\n  alice: '{bcrypt_hash(longest)}'\n")
    url = await serve(load_web_config(path))  # type: ignore[operator]
    assert (await _get(url + "/metrics", headers=basic_auth("alice", longest)))[0] == 200
    for user, password in [
        ("alice", longest + "x"),  # bcrypt would match it on its first 72 bytes
        ("alice", "x" * 73),
        ("nobody", "x" * 73),
        ("nobody", "x" * 6000),
    ]:
        status, _, body = await _get(url + "/metrics", headers=basic_auth(user, password))
        assert (status, body) == (401, "Unauthorized\n"), (user, len(password))
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


async def test_client_certificates_when_required(
    tmp_path: Path, certs: Certs, serve: object
) -> None:
    path = _write(
        tmp_path,
        _tls_block(
            certs,
            "  client_auth_type: RequireAndVerifyClientCert\n"
            f"  client_ca_file: {certs.ca}\n"
            "  min_version: TLS13\n",
        ),
    )
    url = await serve(load_web_config(path))  # type: ignore[operator]
    assert (await _get(url + "/metrics", _client_context(certs, with_cert=True)))[0] == 200
    with pytest.raises(aiohttp.ClientError):
        await _get(url + "/metrics", _client_context(certs))
    old = _client_context(certs, with_cert=True)
    old.maximum_version = ssl.TLSVersion.TLSv1_2
    with pytest.raises(aiohttp.ClientError):
        await _get(url + "/metrics", old)


def test_relative_file_names_are_relative_to_the_web_config_file(
    tmp_path: Path, certs: Certs
) -> None:
    for source in (certs.server_cert, certs.server_key):
        shutil.copy(source, tmp_path / source.name)
    path = _write(tmp_path, "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n")
    assert load_web_config(path).scheme == "https"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("tls_server_config:\n  cert_file: absent.crt\n  key_file: absent.key\n",
         "tls_server_config.cert_file: {dir}/absent.crt: no such file"),
        ("basic_auth_users:\n  alice: plain-text-password\n",
         "basic_auth_users.alice: not a bcrypt hash ($2a$, $2b$ or $2y$, 60 characters)"),
        ("basic_auth_user:\n  alice: x\n", "basic_auth_user: unknown key"),
        ("rate_limit:\n  interval: 1s\n", "rate_limit: is not supported by db-exporter"),
        ("tls_server_config:\n  cert: inline\n  cert_file: a\n  key_file: b\n",
         "tls_server_config.cert: is not supported by db-exporter (use cert_file, key_file, "
         "client_ca_file)"),
        ("tls_server_config:\n  cert_file: a\n  key_file: b\n  min_version: TLS14\n",
         "tls_server_config.min_version: 'TLS14' is not one of TLS10, TLS11, TLS12, TLS13"),
        ("tls_server_config:\n  cert_file: a\n  key_file: b\n"
         "  client_auth_type: RequireAnyClientCert\n",
         "tls_server_config.client_auth_type: RequireAnyClientCert is not supported by "
         "db-exporter: client certificates are always verified; use VerifyClientCertIfGiven "
         "or RequireAndVerifyClientCert"),
        *((f"basic_auth_users:\n  alice: '$2b${cost}{VALID_HASH[6:]}'\n",
           f"basic_auth_users.alice: bcrypt cost {cost} is outside 04 to 31")
          for cost in ("03", "32", "99")),
        # The 22nd salt character carries 2 bits: bcrypt refuses one with the others set.
        (f"basic_auth_users:\n  alice: '{VALID_HASH[:28]}A{VALID_HASH[29:]}'\n",
         "basic_auth_users.alice: the bcrypt salt is not valid (make the hash again)"),
        ("- a list\n", "the top level must be a mapping of keys to values"),
        ("basic_auth_users: [\n", "YAML syntax error"),
    ],
)  # fmt: skip
def test_bad_web_config_is_one_line_naming_file_and_field(
    tmp_path: Path, text: str, message: str
) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as error:
        load_web_config(path)
    line = str(error.value)
    assert "\n" not in line
    assert line.startswith(str(path))
    assert message.format(dir=tmp_path) in line
    assert "plain-text-password" not in line


def test_certificate_problems_name_the_field(tmp_path: Path, certs: Certs) -> None:
    cases = [
        (_tls_block(certs, "  client_auth_type: RequireAndVerifyClientCert\n"),
         "tls_server_config.client_ca_file: required with client_auth_type "
         "RequireAndVerifyClientCert"),
        (_tls_block(certs, f"  client_ca_file: {certs.ca}\n"),
         "tls_server_config.client_auth_type: client_ca_file is set but client certificates "
         "are not asked for"),
        (_tls_block(certs, "  min_version: TLS13\n  max_version: TLS12\n"),
         "tls_server_config.min_version: TLS13 is above max_version TLS12"),
        ("tls_server_config:\n"
         f"  cert_file: {certs.server_cert}\n  key_file: {certs.client_key}\n",
         "tls_server_config.cert_file: cannot load the certificate and key"),
    ]  # fmt: skip
    for text, message in cases:
        with pytest.raises(ConfigError, match="^" + str(tmp_path)) as error:
            load_web_config(_write(tmp_path, text))
        assert message in str(error.value)


def test_settings_name_the_web_config_file(tmp_path: Path) -> None:
    config = tmp_path / "exporter.yaml"
    config.write_text("server:\n  web_config_file: /etc/db-exporter/web.yml\n")
    assert load_settings(config).server.web_config_file == "/etc/db-exporter/web.yml"


def test_serve_flag_serves_https_with_basicbasic_auth(tmp_path: Path, certs: Certs) -> None:
    config = tmp_path / "exporter.yaml"
    config.write_text("log_level: INFO\n")
    web = _write(
        tmp_path, _tls_block(certs) + f"basic_auth_users:\n  alice: '{bcrypt_hash('pw')}'\n"
    )
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "exporter", "serve", "--config", str(config),
         "--listen", f"127.0.0.1:{port}", "--web.config.file", str(web)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        assert process.stdout.readline().endswith(
            f" INFO exporter.cli: serving https://127.0.0.1:{port}/metrics\n"
        )
        context = _client_context(certs)
        url = f"https://127.0.0.1:{port}"
        with pytest.raises(urllib.error.HTTPError) as denied:
            urllib.request.urlopen(f"{url}/metrics", context=context, timeout=10)
        assert denied.value.code == 401
        denied.value.close()  # it holds the response's socket
        request = urllib.request.Request(f"{url}/metrics", headers=basic_auth("alice", "pw"))
        with urllib.request.urlopen(request, context=context, timeout=10) as response:
            assert response.status == 200
        with urllib.request.urlopen(f"{url}/healthz", context=context, timeout=10) as response:
            assert response.status == 200
    finally:
        process.terminate()
        process.wait(timeout=30)
        assert process.stdout is not None
        process.stdout.close()


def test_serve_with_a_bad_web_config_file_exits_2_with_one_line(tmp_path: Path) -> None:
    config = tmp_path / "exporter.yaml"
    config.write_text("log_level: INFO\n")
    web = _write(tmp_path, "basic_auth_users:\n  alice: hunter2\n")
    result = subprocess.run(
        [sys.executable, "-m", "exporter", "serve", "--config", str(config),
         "--listen", "127.0.0.1:0", "--web.config.file", str(web)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr == (
        f"db-exporter: error: {web}: basic_auth_users.alice: not a bcrypt hash "
        "($2a$, $2b$ or $2y$, 60 characters)\n"
    )
    assert "hunter2" not in result.stdout + result.stderr
