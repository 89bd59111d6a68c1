"""Database URLs: accept what platforms hand out, give each driver what it takes.

`postgresql://user:pass@host:5432/db` (and `postgres://`) are accepted beside SQLAlchemy's
`postgresql+asyncpg://` and `postgresql+psycopg://` forms, with the libpq parameters managed
PostgreSQL services hand out (`LIBPQ_PARAMETERS`), credentials in the query string as libpq
takes them (`?user=app&password=...`, moved into the address) and several hosts, written as
libpq does (`h1:5432,h2:5433`) or as SQLAlchemy does (`?host=h1:5432&host=h2:5433`).

psycopg hands the parameters to libpq, which takes them natively. asyncpg takes none of them
as keywords, so `asyncpg_engine_args` and `asyncpg_connect_args` translate them: an
`ssl.SSLContext` built from the certificate files with the verification the `sslmode` asks
for, `timeout`, `server_settings`, `target_session_attrs` and host lists. `parse_dsn` checks
everything (parameters, values, the files) so that what it accepts, both drivers can use.
Passwords are masked whenever a URL is shown to a person (`masked`), never appear in a
`DsnError`, and are taken out of driver errors before those are shown (`without_secrets`).
"""

from __future__ import annotations

import os
import re
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from exporter.errors import UserError

SUPPORTED_SCHEMES = ("postgresql", "postgres", "postgresql+asyncpg", "postgresql+psycopg")
SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
SESSION_ATTRS = ("any", "read-write", "read-only", "primary", "standby", "prefer-standby")
CERTIFICATE_FILES = ("sslrootcert", "sslcert", "sslkey")
LIBPQ_PARAMETERS = (
    "sslmode",
    *CERTIFICATE_FILES,
    "sslpassword",
    "connect_timeout",
    "application_name",
    "options",
    "target_session_attrs",
)
# libpq's credentials in the query string: moved into the address.
CREDENTIAL_PARAMETERS = ("user", "password")
# `host` holds extra hosts; `ssl` is how SQLAlchemy's asyncpg documentation spells `sslmode`.
QUERY_PARAMETERS = frozenset({*LIBPQ_PARAMETERS, *CREDENTIAL_PARAMETERS, "host", "ssl"})
# Masked wherever they are, even in a URL that is refused for another reason.
SECRET_PARAMETERS = ("password", "sslpassword")
MASK = "***"
DEFAULT_PORT = 5432
# libpq's root certificate when `sslrootcert` is not given; `system`: the system's CA store.
DEFAULT_ROOT_CERT = Path("~/.postgresql/root.crt")
SYSTEM_ROOT = "system"

# libpq's several hosts in the address: `scheme://[userinfo@]h1[:p1],h2[:p2][/db][?query]`.
_HOST_LIST = re.compile(
    r"^(?P<scheme>[\w+]+)://(?P<userinfo>[^@]*@)?(?P<hosts>[^/?#@]*,[^/?#@]*)(?P<rest>[/?].*)?$"
)
_HOST_PORT = re.compile(r"^(?:\[(?P<ipv6>[^\]]+)\]|(?P<host>[^:\[\]]*))(?::(?P<port>[^:]*))?$")


class DsnError(UserError, ValueError):
    """A database URL that db-exporter cannot use; the message is safe to show."""


@dataclass(frozen=True)
class ConnectionOptions:
    """The libpq parameters of one DSN, checked."""

    hosts: tuple[tuple[str, int], ...]  # empty: the driver's default (local socket)
    sslmode: str | None = None  # None: the driver's default (prefer)
    sslrootcert: str | None = None
    sslcert: str | None = None
    sslkey: str | None = None
    sslpassword: str | None = field(default=None, repr=False)
    connect_timeout: int | None = None
    server_settings: dict[str, str] = field(default_factory=dict)  # application_name, options
    target_session_attrs: str | None = None


def _normalize(dsn: str | URL) -> URL:
    """The URL, with libpq's host list in the address moved to `?host=` pairs."""
    if isinstance(dsn, URL):
        return dsn
    match = _HOST_LIST.match(dsn)
    try:
        if match is None:
            return make_url(dsn)
        userinfo, rest = match["userinfo"] or "", match["rest"] or ""
        url = make_url(f"{match['scheme']}://{userinfo}{rest}")
        return url.update_query_pairs([("host", h) for h in match["hosts"].split(",")], True)
    except (ArgumentError, ValueError):  # their text may quote the password: never shown
        expected = "expected postgresql://user:pass@host:port/db"
        raise DsnError(f"not a database URL ({expected})") from None


def _with_credentials(dsn: str | URL) -> URL:
    """The URL with `?user=` and `?password=` moved into the address, where SQLAlchemy, both
    drivers and `hide_password` look for them."""
    url = _normalize(dsn)
    user, password = _single(url, "user"), _single(url, "password")
    if user is None and password is None:
        return url
    for name, given, in_address in (
        ("user", user, url.username),
        ("password", password, url.password),
    ):
        if given is not None and in_address is not None:
            raise DsnError(f"{name} is given both in the address and as ?{name}=: give one")
    if password is not None and user is None and url.username is None:
        # A URL written out without its user drops the password: SQLAlchemy's, Alembic's.
        raise DsnError("?password= is given without a user: give ?user= or user@ too")
    return url.set(
        username=url.username if user is None else user,
        password=url.password if password is None else password,
    ).difference_update_query(CREDENTIAL_PARAMETERS)


def parse_dsn(dsn: str | URL) -> URL:
    """Parse and check a DSN: scheme, parameters, values and certificate files. The message of
    the error raised names the culprit and never contains the password."""
    url = _with_credentials(dsn)
    if url.drivername not in SUPPORTED_SCHEMES:
        supported = ", ".join(f"{s}://" for s in SUPPORTED_SCHEMES)
        raise DsnError(f"unsupported scheme {url.drivername}:// (use one of {supported})")
    options = connection_options(url)
    if options.sslmode not in (None, "disable", "allow", "prefer") or options.sslcert:
        _ssl_context(options)  # reads and checks the certificate files now, not at run time
    return url


def _single(url: URL, name: str) -> str | None:
    value = url.query.get(name)
    if isinstance(value, tuple):
        raise DsnError(f"parameter {name} is given {len(value)} times")
    return value


def _hosts(url: URL) -> tuple[tuple[str, int], ...]:
    if url.port is not None and not 0 < url.port < 65536:
        raise DsnError(f"port {url.port} is not a number from 1 to 65535")
    extra = url.query.get("host", ())
    entries = [extra] if isinstance(extra, str) else list(extra)
    if not entries:
        return ((url.host, url.port or DEFAULT_PORT),) if url.host else ()
    if url.host:
        raise DsnError("host is given both in the address and as ?host=: give one")
    hosts = []
    for entry in (item for value in entries for item in value.split(",")):
        if entry.startswith("/"):  # a Unix socket directory
            hosts.append((entry, url.port or DEFAULT_PORT))
            continue
        match = _HOST_PORT.match(entry)
        host = match and (match["ipv6"] or match["host"])
        if not match or not host:
            raise DsnError(f"host {entry!r} is not host or host:port")
        port = match["port"]
        if port is not None and not (port.isdigit() and 0 < int(port) < 65536):
            raise DsnError(f"host {entry!r}: the port must be a number from 1 to 65535")
        hosts.append((host, int(port) if port else url.port or DEFAULT_PORT))
    return tuple(hosts)


def _server_options(options: str) -> dict[str, str]:
    """libpq's `options` (`-c name=value ...`, backslash escapes a space) as settings."""
    words, word, escaped = [], "", False
    for char in options + " ":
        if escaped:
            word, escaped = word + char, False
        elif char == "\\":
            escaped = True
        elif char.isspace():
            if word:
                words.append(word)
            word = ""
        else:
            word += char
    settings, pending = {}, False
    for word in words:
        if pending:
            setting, pending = word, False
        elif word == "-c":
            pending = True
            continue
        elif word.startswith(("-c", "--")):  # -cname=value, --name=value
            setting = word[2:]
        else:
            raise DsnError(f"options: {word!r} is not supported (only -c name=value)")
        name, equals, value = setting.partition("=")
        if not equals or not name:
            raise DsnError(f"options: {setting!r} is not name=value")
        settings[name.replace("-", "_")] = value
    if pending:
        raise DsnError("options: -c without name=value")
    return settings


def _shown(text: str | None) -> str:
    """`text` as it reads, quoted when it holds what would break a one-line message."""
    return str(text) if text is None or text.isprintable() else repr(text)


def _readable(parameter: str, path: str) -> str:
    try:
        with open(os.path.expanduser(path), "rb"):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise DsnError(f"{parameter} {_shown(path)} cannot be read: {reason}") from None
    return path


def _default_root() -> str | None:
    """libpq's root certificate when `sslrootcert` is not given, if there is one."""
    path = os.environ.get("PGSSLROOTCERT") or str(DEFAULT_ROOT_CERT.expanduser())
    return path if os.access(path, os.R_OK) else None


def connection_options(dsn: str | URL) -> ConnectionOptions:
    """The checked libpq parameters of `dsn` (DsnError names the first that is wrong)."""
    url = _with_credentials(dsn)
    unknown = sorted(set(url.query) - QUERY_PARAMETERS)
    if unknown:
        supported = ", ".join(sorted({*LIBPQ_PARAMETERS, *CREDENTIAL_PARAMETERS}))
        raise DsnError(f"unknown parameter {_shown(unknown[0])} (supported: {supported}, host)")
    sslmode, alias = _single(url, "sslmode"), _single(url, "ssl")
    if sslmode is not None and alias is not None:
        raise DsnError("sslmode and ssl are the same parameter: give one")
    sslmode = sslmode if alias is None else alias
    if sslmode is not None and sslmode not in SSL_MODES:
        raise DsnError(f"sslmode {sslmode!r} is not one of {', '.join(SSL_MODES)}")
    files = {name: _single(url, name) for name in CERTIFICATE_FILES}
    for name, path in files.items():
        if path is not None and not (name == "sslrootcert" and path == SYSTEM_ROOT):
            _readable(name, path)
    if files["sslrootcert"] == SYSTEM_ROOT:
        if sslmode not in (None, "verify-full"):
            raise DsnError(f"sslrootcert=system needs sslmode=verify-full, not {sslmode}")
        sslmode = "verify-full"  # libpq's default for the system's certificates
    elif files["sslrootcert"] is None and sslmode in ("verify-ca", "verify-full"):
        files["sslrootcert"] = _default_root()
        if files["sslrootcert"] is None:
            raise DsnError(f"sslmode={sslmode} needs sslrootcert=FILE (no {DEFAULT_ROOT_CERT})")
    if files["sslkey"] and not files["sslcert"]:
        raise DsnError("sslkey is given without sslcert")
    timeout = _single(url, "connect_timeout")
    if timeout is not None and not timeout.isdigit():
        raise DsnError(f"connect_timeout {timeout!r} is not a whole number of seconds")
    attrs = _single(url, "target_session_attrs")
    if attrs is not None and attrs not in SESSION_ATTRS:
        raise DsnError(f"target_session_attrs {attrs!r} is not one of {', '.join(SESSION_ATTRS)}")
    settings = _server_options(_single(url, "options") or "")
    application_name = _single(url, "application_name")
    if application_name is not None:
        settings["application_name"] = application_name
    return ConnectionOptions(
        hosts=_hosts(url),
        sslmode=sslmode,
        sslrootcert=files["sslrootcert"],
        sslcert=files["sslcert"],
        sslkey=files["sslkey"],
        sslpassword=_single(url, "sslpassword"),
        connect_timeout=int(timeout) if timeout is not None else None,
        server_settings=settings,
        target_session_attrs=attrs,
    )


def _ssl_context(options: ConnectionOptions) -> ssl.SSLContext:
    """The TLS context libpq would make: the server's certificate checked against the root
    certificate from `require` up (when there is one), its name from `verify-full`."""
    root = options.sslrootcert
    if options.sslmode == "require" and root is None:
        root = _default_root()  # libpq: require with a root certificate is verify-ca
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = options.sslmode == "verify-full"
    try:
        if root == SYSTEM_ROOT:
            context.load_default_certs()
        elif root is not None and options.sslmode in ("require", "verify-ca", "verify-full"):
            context.load_verify_locations(cafile=os.path.expanduser(root))
        else:
            context.verify_mode = ssl.CERT_NONE
    except (ssl.SSLError, ValueError):
        raise DsnError(f"sslrootcert {_shown(root)}: not a PEM certificate") from None
    if options.sslcert is not None:
        try:
            context.load_cert_chain(
                os.path.expanduser(options.sslcert),
                os.path.expanduser(options.sslkey) if options.sslkey else None,
                password=options.sslpassword or "",
            )
        except (ssl.SSLError, ValueError):  # OpenSSL's reason could quote the key's password
            raise DsnError(
                f"sslcert {_shown(options.sslcert)} with sslkey {_shown(options.sslkey)}: "
                "not a matching PEM certificate and key (or a wrong sslpassword)"
            ) from None
    return context


def _asyncpg_ssl(options: ConnectionOptions) -> ssl.SSLContext | str | None:
    # allow and prefer fall back between TLS and plain text: asyncpg does that for a mode
    # name, not for a context. A client certificate needs a context, so with one they
    # require TLS.
    fallback = options.sslmode in (None, "allow", "prefer") and options.sslcert is None
    if options.sslmode == "disable" or fallback:
        return options.sslmode  # None: asyncpg's default, which is libpq's (prefer)
    return _ssl_context(options)


def _asyncpg_options(
    options: ConnectionOptions, server_settings: dict[str, str] | None, timeout: float | None
) -> dict[str, Any]:
    args: dict[str, Any] = {}
    if (mode := _asyncpg_ssl(options)) is not None:
        args["ssl"] = mode
    if timeout is not None:
        args["timeout"] = timeout
    elif options.connect_timeout:  # 0: libpq waits for ever; asyncpg keeps its default
        args["timeout"] = float(max(options.connect_timeout, 2))  # libpq's minimum
    settings = {**options.server_settings, **(server_settings or {})}
    if settings:
        args["server_settings"] = settings
    if options.target_session_attrs is not None:
        args["target_session_attrs"] = options.target_session_attrs
    return args


def asyncpg_engine_args(
    dsn: str | URL,
    server_settings: dict[str, str] | None = None,
    timeout: float | None = None,
) -> tuple[URL, dict[str, Any]]:
    """The URL and `connect_args` of an asyncpg engine for `dsn`:
    `create_async_engine(url, connect_args=args)`. `server_settings` are added to (and win
    over) the DSN's `options` and `application_name`; `timeout` wins over `connect_timeout`."""
    url = parse_dsn(dsn)
    options = connection_options(url)
    args = _asyncpg_options(options, server_settings, timeout)
    if len(options.hosts) > 1:  # SQLAlchemy wants every port written out for asyncpg
        args["host"] = [h for h, _ in options.hosts]
        args["port"] = [p for _, p in options.hosts]
    query = {"host": url.query["host"]} if "host" in url.query and "host" not in args else {}
    return url.set(drivername="postgresql+asyncpg", query=query), args


def asyncpg_connect_args(
    dsn: str | URL,
    server_settings: dict[str, str] | None = None,
    timeout: float | None = None,
) -> dict[str, Any]:
    """Keyword arguments of `asyncpg.connect(**args)` for `dsn` (see `asyncpg_engine_args`)."""
    url = parse_dsn(dsn)
    options = connection_options(url)
    args = _asyncpg_options(options, server_settings, timeout)
    args.update(user=url.username, password=url.password, database=url.database)
    if options.hosts:
        args["host"] = [h for h, _ in options.hosts]
        args["port"] = [p for _, p in options.hosts]
    return {name: value for name, value in args.items() if value is not None}


def async_url(dsn: str | URL) -> URL:
    """The URL for an asyncpg engine of a DSN without libpq parameters (tests, and URLs made
    here); a DSN that may carry them needs `asyncpg_engine_args`."""
    url, args = asyncpg_engine_args(dsn)
    if args:
        names = ", ".join(sorted(parse_dsn(dsn).query))
        raise DsnError(f"{names}: use asyncpg_engine_args for this URL")
    return url


def sync_url(dsn: str | URL) -> URL:
    """The URL for a psycopg 3 engine: libpq takes the parameters as they are."""
    url = parse_dsn(dsn)
    options = connection_options(url)
    query = {k: v for k, v in url.query.items() if k not in ("host", "ssl")}
    if options.sslmode is not None:
        query["sslmode"] = options.sslmode
    if len(options.hosts) > 1:  # libpq's own lists, which SQLAlchemy passes on
        query["host"] = ",".join(h for h, _ in options.hosts)
        query["port"] = ",".join(str(p) for _, p in options.hosts)
    elif "host" in url.query:  # one host given as ?host= (a socket directory, host:port)
        query["host"] = url.query["host"]
    return url.set(drivername="postgresql+psycopg", query=query)


def masked(dsn: str | URL) -> str:
    """The URL as text for a person: its password, `?password=` and `?sslpassword=` read `***`.
    The one way a DSN is shown (check-config, the demo)."""
    try:
        url = _normalize(dsn)
    except DsnError:
        return "<not a database URL>"
    secrets = {name: MASK for name in SECRET_PARAMETERS if name in url.query}
    return url.update_query_dict(secrets).render_as_string(hide_password=True)


def _secrets(dsn: str | URL) -> set[str]:
    try:
        url = _normalize(dsn)
    except DsnError:
        return set()
    values = [url.password, *(url.query.get(name) for name in SECRET_PARAMETERS)]
    found = {v for value in values for v in ((value,) if isinstance(value, str) else value or ())}
    # As they would read inside a URL too (a driver may quote the DSN it was given).
    found |= {quote(v, safe="") for v in found} | {quote_plus(v) for v in found}
    return {v for v in found if v}


def without_secrets(text: str, dsn: str | URL) -> str:
    """`text` (a driver's error, say) with every password of `dsn` replaced by `***`: drivers
    may quote the connection string they were given in their messages."""
    for secret in sorted(_secrets(dsn), key=len, reverse=True):
        text = text.replace(secret, MASK)
    return text
