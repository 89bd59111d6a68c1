"""DSNs: the libpq parameters managed PostgreSQL hands out, translated for asyncpg and kept for
psycopg; whatever cannot be used is refused by `check-config` and `serve`, naming it.

The connections themselves are in test_managed_postgres.py (a private cluster with TLS)."""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
import urllib.parse
from pathlib import Path

import pytest
from certs import Certs
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy.engine import make_url
from test_settings import SECRET, assert_one_line_error, run_cli, write

from exporter.dsn import (
    LIBPQ_PARAMETERS,
    SSL_MODES,
    DsnError,
    async_url,
    asyncpg_connect_args,
    asyncpg_engine_args,
    connection_options,
    masked,
    parse_dsn,
    sync_url,
    without_secrets,
)

BASE = f"postgresql://app:{SECRET}@db.internal:5432/wallet"


def test_libpq_host_lists_and_sqlalchemy_host_pairs_mean_the_same() -> None:
    libpq = f"postgresql://app:{SECRET}@h1:5432,[::1]:5433,h3/wallet"
    pairs = f"postgresql://app:{SECRET}@/wallet?host=h1:5432&host=[::1]:5433&host=h3"
    for dsn in (libpq, pairs):
        assert connection_options(dsn).hosts == (("h1", 5432), ("::1", 5433), ("h3", 5432))
        url, args = asyncpg_engine_args(dsn)
        assert (url.drivername, url.host, url.port, dict(url.query)) == (
            "postgresql+asyncpg", None, None, {}
        )  # fmt: skip
        assert (args["host"], args["port"]) == (["h1", "::1", "h3"], [5432, 5433, 5432])
        psycopg = sync_url(dsn)
        assert psycopg.host is None
        assert dict(psycopg.query) == {"host": "h1,::1,h3", "port": "5432,5433,5432"}
    assert asyncpg_connect_args(libpq) == {
        "user": "app",
        "password": SECRET,
        "database": "wallet",
        "host": ["h1", "::1", "h3"],
        "port": [5432, 5433, 5432],
    }


def test_a_socket_directory_stays_where_sqlalchemy_reads_it() -> None:
    dsn = "postgresql://app:pw@/wallet?host=/run/postgresql"
    assert async_url(dsn).render_as_string(hide_password=False) == (
        "postgresql+asyncpg://app:pw@/wallet?host=%2Frun%2Fpostgresql"
    )
    assert sync_url(dsn).render_as_string(hide_password=False) == (
        "postgresql+psycopg://app:pw@/wallet?host=%2Frun%2Fpostgresql"
    )
    assert asyncpg_connect_args(dsn)["host"] == ["/run/postgresql"]


def test_server_settings_timeout_and_session_attrs_for_asyncpg() -> None:
    query = urllib.parse.urlencode(
        {
            "application_name": "wallet api",
            "options": r"-c search_path=app,public -cwork_mem=8MB --lock-timeout=2s -c x=a\ b",
            "connect_timeout": "10",
            "target_session_attrs": "read-write",
        }
    )
    url, args = asyncpg_engine_args(f"{BASE}?{query}")
    assert args == {
        "timeout": 10.0,
        "server_settings": {
            "search_path": "app,public",
            "work_mem": "8MB",
            "lock_timeout": "2s",
            "x": "a b",
            "application_name": "wallet api",
        },
        "target_session_attrs": "read-write",
    }
    assert url.render_as_string(hide_password=False) == (
        f"postgresql+asyncpg://app:{SECRET}@db.internal:5432/wallet"
    )
    # The caller's own settings and timeout win (the exporter's name and bounds).
    _, args = asyncpg_engine_args(
        f"{BASE}?{query}", server_settings={"application_name": "db-exporter"}, timeout=3
    )
    assert args["server_settings"]["application_name"] == "db-exporter"
    assert args["timeout"] == 3
    # psycopg: libpq reads them itself.
    assert dict(sync_url(f"{BASE}?{query}").query) == dict(urllib.parse.parse_qsl(query))


@pytest.mark.parametrize(("given_", "expected"), [("0", None), ("1", 2.0), ("30", 30.0)])
def test_connect_timeout_as_libpq_reads_it(given_: str, expected: float | None) -> None:
    # 0 waits for ever in libpq (asyncpg keeps its own default); libpq's minimum is 2 s.
    _, args = asyncpg_engine_args(f"{BASE}?connect_timeout={given_}")
    assert args.get("timeout") == expected


@pytest.mark.parametrize("mode", [None, "disable", "allow", "prefer"])
def test_modes_that_fall_back_stay_asyncpg_mode_names(mode: str | None) -> None:
    dsn = BASE if mode is None else f"{BASE}?sslmode={mode}"
    assert asyncpg_engine_args(dsn)[1].get("ssl") == mode
    assert sync_url(dsn).query.get("sslmode") == mode
    # asyncpg's documented spelling, `ssl=`, is the same parameter.
    if mode is not None:
        assert asyncpg_engine_args(f"{BASE}?ssl={mode}")[1]["ssl"] == mode
        assert sync_url(f"{BASE}?ssl={mode}").query == {"sslmode": mode}


@pytest.mark.parametrize(
    ("mode", "verify", "hostname"),
    [
        ("require", ssl.CERT_NONE, False),
        ("verify-ca", ssl.CERT_REQUIRED, False),
        ("verify-full", ssl.CERT_REQUIRED, True),
    ],
)
def test_verifying_modes_become_a_context_checking_what_libpq_checks(
    certs: Certs, mode: str, verify: ssl.VerifyMode, hostname: bool
) -> None:
    root = "" if mode == "require" else f"&sslrootcert={certs.ca}"
    context = asyncpg_engine_args(f"{BASE}?sslmode={mode}{root}")[1]["ssl"]
    assert isinstance(context, ssl.SSLContext)
    assert (context.verify_mode, context.check_hostname) == (verify, hostname)
    loaded = context.get_ca_certs()
    assert [c["subject"] for c in loaded] == ([] if mode == "require" else [
        ((("commonName", "db-exporter test CA"),),)
    ])  # fmt: skip


def test_require_with_a_root_certificate_verifies_it_as_libpq_does(certs: Certs) -> None:
    context = asyncpg_engine_args(f"{BASE}?sslmode=require&sslrootcert={certs.ca}")[1]["ssl"]
    assert (context.verify_mode, context.check_hostname) == (ssl.CERT_REQUIRED, False)


def test_a_client_certificate_is_loaded_and_then_tls_is_required(certs: Certs) -> None:
    files = f"sslcert={certs.client_cert}&sslkey={certs.client_key}"
    for mode in ("prefer", "verify-full"):
        context = asyncpg_engine_args(f"{BASE}?sslmode={mode}&sslrootcert={certs.ca}&{files}")
        assert isinstance(context[1]["ssl"], ssl.SSLContext)


def test_system_root_certificates_mean_verify_full() -> None:
    context = asyncpg_engine_args(f"{BASE}?sslrootcert=system")[1]["ssl"]
    assert (context.verify_mode, context.check_hostname) == (ssl.CERT_REQUIRED, True)
    assert sync_url(f"{BASE}?sslrootcert=system").query["sslmode"] == "verify-full"


def test_masked_hides_the_password_and_the_key_password(certs: Certs) -> None:
    dsn = (
        f"{BASE}?sslmode=verify-full&sslrootcert={certs.ca}&sslcert={certs.client_cert}"
        f"&sslkey={certs.client_key}&sslpassword=key-{SECRET}"
    )
    parse_dsn(dsn)  # an unencrypted key ignores the password, as libpq does
    shown = masked(dsn)
    assert SECRET not in shown
    assert shown.startswith("postgresql://app:***@db.internal:5432/wallet?")
    assert "sslpassword=%2A%2A%2A" in shown
    assert masked("postgresql://app:pw@h1,h2/db") == "postgresql://app:***@/db?host=h1&host=h2"


def test_credentials_in_the_query_string_are_moved_into_the_address() -> None:
    dsn = f"postgresql://db.internal/wallet?user=app&password={SECRET}&sslmode=disable"
    url = parse_dsn(dsn)
    assert (url.username, url.password, dict(url.query)) == ("app", SECRET, {"sslmode": "disable"})
    assert asyncpg_connect_args(dsn)["password"] == SECRET
    assert asyncpg_engine_args(dsn)[0].password == SECRET
    assert sync_url(dsn).password == SECRET
    assert (
        masked(dsn) == "postgresql://db.internal/wallet?password=%2A%2A%2A&sslmode=disable&user=app"
    )
    assert masked(url) == "postgresql://app:***@db.internal/wallet?sslmode=disable"


@pytest.mark.parametrize(
    ("dsn", "refusal"),
    [
        (f"{BASE}?password={SECRET}", "password is given both in the address and as ?password="),
        (f"{BASE}?password={SECRET}&password=x", "parameter password is given 2 times"),
        (f"{BASE}?user=u", "user is given both in the address and as ?user="),
        (f"postgresql://h/db?password={SECRET}", "?password= is given without a user"),
    ],
)
def test_credentials_that_cannot_be_used_are_refused_and_masked(dsn: str, refusal: str) -> None:
    with pytest.raises(DsnError) as error:
        parse_dsn(dsn)
    assert str(error.value).startswith(refusal)
    assert SECRET not in str(error.value)
    assert SECRET not in masked(dsn)


def test_check_config_masks_a_password_given_in_the_query_string(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dsn = f"postgresql://db.internal:5432/wallet?user=app&password={SECRET}&sslpassword={SECRET}"
    path = write(tmp_path, f"databases:\n  - name: main\n    dsn: {dsn}\n")
    code, out, err = run_cli(capsys, "check-config", str(path))
    assert code == 0, err
    assert SECRET not in out + err
    masked_query = "password=%2A%2A%2A&sslpassword=%2A%2A%2A&user=app"
    assert f"dsn: postgresql://db.internal:5432/wallet?{masked_query}\n" in out


def test_without_secrets_takes_every_password_out_of_a_message() -> None:
    password = f"{SECRET}/ä@&"
    dsn = f"postgresql://app:{urllib.parse.quote(password, safe='')}@h/db?sslpassword=k-{SECRET}"
    message = f"cannot connect to {dsn} with {password!r} (key k-{SECRET})"
    cleaned = without_secrets(message, dsn)
    assert SECRET not in cleaned
    assert (
        cleaned
        == "cannot connect to postgresql://app:***@h/db?sslpassword=*** with '***' (key ***)"
    )
    assert without_secrets(message, "not a url") == message
    assert without_secrets("nothing secret", "postgresql://app@h/db") == "nothing secret"


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("sslmod=require", "unknown parameter sslmod (supported: application_name, "),
        ("prepared_statement_cache_size=0", "unknown parameter prepared_statement_cache_size"),
        ("sslmode=verify", "sslmode 'verify' is not one of disable, allow, prefer, require, "),
        ("sslmode=require&sslmode=disable", "parameter sslmode is given 2 times"),
        ("sslmode=require&ssl=require", "sslmode and ssl are the same parameter: give one"),
        ("sslrootcert=/nonexistent/ca.pem", "sslrootcert /nonexistent/ca.pem cannot be read: "),
        ("sslcert=/nonexistent/c.crt", "sslcert /nonexistent/c.crt cannot be read"),
        ("sslkey=/nonexistent/c.key", "sslkey /nonexistent/c.key cannot be read"),
        ("sslmode=verify-ca&sslrootcert=/etc/hostname", "sslrootcert /etc/hostname: not a PEM"),
        ("sslrootcert=system&sslmode=require", "sslrootcert=system needs sslmode=verify-full"),
        ("connect_timeout=5s", "connect_timeout '5s' is not a whole number of seconds"),
        ("target_session_attrs=master", "target_session_attrs 'master' is not one of any, "),
        ("options=-B%2010", "options: '-B' is not supported (only -c name=value)"),
        ("options=-c%20work_mem", "options: 'work_mem' is not name=value"),
        ("options=-c", "options: -c without name=value"),
        ("host=h2", "host is given both in the address and as ?host=: give one"),
    ],
)
def test_what_cannot_be_used_is_refused_naming_it(query: str, message: str) -> None:
    with pytest.raises(DsnError) as error:
        parse_dsn(f"{BASE}?{query}")
    assert str(error.value).startswith(message)
    assert SECRET not in str(error.value)


def test_a_client_key_that_does_not_match_its_certificate_is_refused(certs: Certs) -> None:
    query = f"sslmode=require&sslcert={certs.client_cert}&sslkey={certs.server_key}"
    with pytest.raises(DsnError) as error:
        parse_dsn(f"{BASE}?{query}&sslpassword={SECRET}")
    assert str(error.value) == (
        f"sslcert {certs.client_cert} with sslkey {certs.server_key}: not a matching PEM "
        "certificate and key (or a wrong sslpassword)"
    )


def test_verify_modes_need_a_root_certificate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.postgresql/root.crt
    monkeypatch.delenv("PGSSLROOTCERT", raising=False)
    with pytest.raises(DsnError, match=r"^sslmode=verify-full needs sslrootcert=FILE \(no ~/"):
        parse_dsn(f"{BASE}?sslmode=verify-full")


@pytest.mark.parametrize(
    "dsn",
    [
        "postgresql://app:pw@h1:5432,h2:x/db",
        "postgresql://app:pw@/db?host=h1:99999",
        "postgresql://app:pw@/db?host=:5432",
        "postgresql://app:pw@h:70000/db",
    ],
)
def test_bad_hosts_are_refused(dsn: str) -> None:
    with pytest.raises(DsnError, match=r"^(host '.*'|port 70000 is not a number from 1 to)"):
        parse_dsn(dsn)


_KEYS = st.sampled_from([*LIBPQ_PARAMETERS, "host", "ssl", "port", "user", "password"]) | st.text(
    max_size=8
)
_VALUES = st.sampled_from(
    [*SSL_MODES, "system", "/etc/hostname", "-c a=b", "read-only", "5", ""]
) | st.text(max_size=12)


def _refusal(dsn: str) -> str | None:
    """parse_dsn's message for `dsn`, None when it accepts it (any other exception fails)."""
    try:
        parse_dsn(dsn)
    except DsnError as error:
        return str(error)
    return None


@given(
    st.sampled_from([BASE, "postgresql://db.internal:5432/wallet"]),
    st.lists(st.tuples(_KEYS, _VALUES), max_size=6),
)
def test_any_query_string_gives_a_usable_dsn_or_a_dsn_error(
    base: str, pairs: list[tuple[str, str]]
) -> None:
    dsn = f"{base}?{urllib.parse.urlencode(pairs)}"
    refusal = _refusal(dsn)
    if refusal is not None:
        assert SECRET not in refusal
        assert "\n" not in refusal
        return
    # Whatever parse_dsn accepts, both drivers get without another error, as URLs that
    # read back the same when written out.
    asyncpg_connect_args(dsn)
    for url in (asyncpg_engine_args(dsn)[0], sync_url(dsn)):
        assert make_url(url.render_as_string(hide_password=False)) == url
    assert SECRET not in masked(dsn)


@given(st.text(max_size=40))
def test_any_text_after_the_scheme_gives_a_dsn_error_at_worst(rest: str) -> None:
    assert SECRET not in (_refusal(f"postgresql://app:{SECRET}@{rest}") or "")


# --- check-config and serve refuse them, one line, exit 2 ------------------------------------


@pytest.mark.parametrize(
    ("query", "fragment"),
    [
        ("sslmode=verify-full&sslrootcrt=/etc/ca.pem", "unknown parameter sslrootcrt"),
        ("sslmode=verify-fully", "sslmode 'verify-fully' is not one of"),
        ("sslmode=verify-full&sslrootcert=/nonexistent/rds-ca.pem",
         "sslrootcert /nonexistent/rds-ca.pem cannot be read: No such file or directory"),
    ],
)  # fmt: skip
def test_check_config_refuses_a_dsn_naming_the_parameter(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], query: str, fragment: str
) -> None:
    path = write(tmp_path, f"databases:\n  - name: main\n    dsn: '{BASE}?{query}'\n")
    code, out, err = run_cli(capsys, "check-config", str(path))
    assert_one_line_error(code, err, str(path), "databases[0].dsn: ", fragment)
    assert out == ""
    assert SECRET not in err


def test_serve_from_the_environment_refuses_an_unknown_parameter(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DB_EXPORTER_", "DATA"))}
    env["DATABASE_URL"] = f"{BASE}?sslmode=verify-full&sslrootcrt=/etc/ssl/ca.pem"
    result = subprocess.run(
        [sys.executable, "-m", "exporter", "serve", "--listen", "127.0.0.1:0"],
        capture_output=True, text=True, timeout=60, env=env, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert "DATABASE_URL" in line
    assert "unknown parameter sslrootcrt (supported: " in line
    assert SECRET not in line


def test_serve_refuses_an_unreadable_root_certificate_before_it_starts(tmp_path: Path) -> None:
    dsn = f"{BASE}?sslmode=verify-full&sslrootcert={tmp_path}/missing-ca.pem"
    path = write(tmp_path, f"databases:\n  - name: main\n    dsn: '{dsn}'\n")
    result = subprocess.run(
        [sys.executable, "-m", "exporter", "serve", "--config", str(path), "--listen",
         "127.0.0.1:0"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stdout == ""  # never served
    assert result.stderr.splitlines() == [
        f"db-exporter: error: {path}: databases[0].dsn: sslrootcert {tmp_path}/missing-ca.pem "
        "cannot be read: No such file or directory"
    ]
