"""TLS and basic auth for the exporter's endpoints, from a web-config file in the format of
Prometheus's exporter-toolkit (`--web.config.file`), so one file serves every exporter:

```yaml
tls_server_config:
  cert_file: server.crt
  key_file: server.key
  client_auth_type: RequireAndVerifyClientCert   # optional, with client_ca_file
  client_ca_file: ca.crt
  min_version: TLS12                              # TLS10 .. TLS13; max_version too
basic_auth_users:
  prometheus: $2y$10$...                          # bcrypt hash (htpasswd -nBC 10 "")
http_server_config:
  headers: {X-Content-Type-Options: nosniff}      # added to every response
```

With users configured, every route but `/healthz` answers 401 with `WWW-Authenticate: Basic`
unless the request carries a listed user and its password. A bcrypt check costs tens of
milliseconds by design, so it runs in a thread, and a successful (user, password) pair is
remembered as a keyed hash, as exporter-toolkit does, so that a scrape every few seconds does
not pay it again. Unknown users are checked against a dummy hash so that the answer takes as
long as for a known one, and the cached digests are compared in constant time. Hashes must
have a cost bcrypt defines (04 to 31), checked at start-up; bcrypt reads only the first 72
bytes of a password, so a longer password is refused (401) rather than checked in part.

Keys of the format that db-exporter does not implement (inline `cert`/`key`/`client_ca`,
cipher and curve lists, `client_allowed_sans`, `rate_limit`) are refused at start-up rather
than silently ignored.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import os
import re
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any

import bcrypt
import yaml
from aiohttp import web
from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationError, field_validator

from exporter.settings import ConfigError

# Routes that answer without credentials: liveness probes have none to give.
OPEN_PATHS = frozenset({"/healthz"})
REALM = "db-exporter"

_VERSIONS = {
    "TLS10": ssl.TLSVersion.TLSv1,
    "TLS11": ssl.TLSVersion.TLSv1_1,
    "TLS12": ssl.TLSVersion.TLSv1_2,
    "TLS13": ssl.TLSVersion.TLSv1_3,
}
# exporter-toolkit's client_auth_type -> Python's verify mode. Python verifies every client
# certificate it asks for, so the two "ask but do not verify" policies have no equivalent.
_CLIENT_AUTH = {
    "NoClientCert": ssl.CERT_NONE,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}
_UNVERIFIED_CLIENT_AUTH = ("RequestClientCert", "RequireAnyClientCert")
_BCRYPT = re.compile(r"\$2[aby]\$(\d\d)\$[./A-Za-z0-9]{53}")
# bcrypt's cost is log2 of its rounds; the algorithm defines 4 to 31 and refuses the rest.
MIN_COST, MAX_COST = 4, 31
# bcrypt reads at most this many bytes of a password (see BasicAuth.authenticated).
MAX_PASSWORD_BYTES = 72
_UNSUPPORTED = "is not supported by db-exporter"


def _bcrypt_hash(value: str) -> str:
    shape = _BCRYPT.fullmatch(value)
    if shape is None:
        # Never echo the value: it may be a password typed in by mistake.
        raise ValueError("not a bcrypt hash ($2a$, $2b$ or $2y$, 60 characters)")
    cost = int(shape[1])
    if not MIN_COST <= cost <= MAX_COST:
        raise ValueError(f"bcrypt cost {shape[1]} is outside {MIN_COST:02} to {MAX_COST}")
    try:  # the parsing every login does, at the cheapest cost: a salt bcrypt refuses fails here
        bcrypt.checkpw(b"", f"{value[:4]}{MIN_COST:02}{value[6:]}".encode())
    except ValueError:
        raise ValueError("the bcrypt salt is not valid (make the hash again)") from None
    return value


BcryptHash = Annotated[str, AfterValidator(_bcrypt_hash)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TLSServerConfig(_Strict):
    cert_file: str
    key_file: str
    client_auth_type: str = "NoClientCert"
    client_ca_file: str | None = None
    min_version: str = "TLS12"
    max_version: str = "TLS13"
    # Parts of the format db-exporter refuses (see the module's docstring).
    cert: Any = None
    key: Any = None
    client_ca: Any = None
    client_allowed_sans: Any = None
    cipher_suites: Any = None
    curve_preferences: Any = None
    prefer_server_cipher_suites: Any = None

    @field_validator(
        "cert",
        "key",
        "client_ca",
        "client_allowed_sans",
        "cipher_suites",
        "curve_preferences",
        "prefer_server_cipher_suites",
    )
    @classmethod
    def _refused(cls, value: Any) -> Any:
        if value is not None:
            raise ValueError(f"{_UNSUPPORTED} (use cert_file, key_file, client_ca_file)")
        return value

    @field_validator("client_auth_type")
    @classmethod
    def _client_auth(cls, value: str) -> str:
        if value in _UNVERIFIED_CLIENT_AUTH:
            raise ValueError(
                f"{value} {_UNSUPPORTED}: client certificates are always verified; use "
                "VerifyClientCertIfGiven or RequireAndVerifyClientCert"
            )
        if value not in _CLIENT_AUTH:
            raise ValueError(f"{value!r} is not one of {', '.join(_CLIENT_AUTH)}")
        return value

    @field_validator("min_version", "max_version")
    @classmethod
    def _version(cls, value: str) -> str:
        if value not in _VERSIONS:
            raise ValueError(f"{value!r} is not one of {', '.join(_VERSIONS)}")
        return value


class HTTPServerConfig(_Strict):
    # aiohttp serves HTTP/1.1 only; `http2` is accepted (exporter-toolkit files carry it).
    http2: bool = True
    headers: dict[str, str] = {}


class _WebConfigFile(_Strict):
    tls_server_config: TLSServerConfig | None = None
    http_server_config: HTTPServerConfig = HTTPServerConfig()
    basic_auth_users: dict[str, BcryptHash] = {}
    rate_limit: Any = None

    @field_validator("rate_limit")
    @classmethod
    def _refused(cls, value: Any) -> Any:
        if value is not None:
            raise ValueError(_UNSUPPORTED)
        return value


class WebConfig:
    """A validated web-config file: the TLS context (or None) and the basic-auth users."""

    def __init__(
        self,
        source: str,
        tls: ssl.SSLContext | None,
        users: dict[str, bytes],
        headers: dict[str, str],
    ) -> None:
        self.source = source
        self.tls = tls
        self.users = users
        self.headers = headers

    @property
    def scheme(self) -> str:
        return "https" if self.tls is not None else "http"

    def install(self, app: web.Application) -> None:
        """Adds basic auth (when users are configured) and the response headers to `app`."""
        if self.users:
            app.middlewares.append(BasicAuth(self.users).middleware)
        if self.headers:
            headers = dict(self.headers)

            async def add_headers(request: web.Request, response: web.StreamResponse) -> None:
                response.headers.update(headers)

            app.on_response_prepare.append(add_headers)


def _resolve(base: Path, name: str) -> Path:
    path = Path(name)
    return path if path.is_absolute() else base / path


def _ssl_context(tls: TLSServerConfig, base: Path, source: str) -> ssl.SSLContext:
    def fail(field: str, problem: str) -> ConfigError:
        return ConfigError(f"{source}: tls_server_config.{field}: {problem}")

    files = {"cert_file": tls.cert_file, "key_file": tls.key_file}
    if tls.client_ca_file is not None:
        files["client_ca_file"] = tls.client_ca_file
    paths = {field: _resolve(base, name) for field, name in files.items()}
    for field, path in paths.items():
        if not path.is_file():
            raise fail(field, f"{path}: no such file")
    verify = _CLIENT_AUTH[tls.client_auth_type]
    if verify != ssl.CERT_NONE and tls.client_ca_file is None:
        raise fail("client_ca_file", f"required with client_auth_type {tls.client_auth_type}")
    if verify == ssl.CERT_NONE and tls.client_ca_file is not None:
        raise fail(
            "client_auth_type",
            "client_ca_file is set but client certificates are not asked for "
            "(use RequireAndVerifyClientCert)",
        )
    if _VERSIONS[tls.min_version] > _VERSIONS[tls.max_version]:
        raise fail("min_version", f"{tls.min_version} is above max_version {tls.max_version}")

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = _VERSIONS[tls.min_version]
    context.maximum_version = _VERSIONS[tls.max_version]
    try:
        context.load_cert_chain(paths["cert_file"], paths["key_file"])
    except (ssl.SSLError, OSError) as exc:
        raise fail("cert_file", f"cannot load the certificate and key: {exc}") from None
    if "client_ca_file" in paths:
        try:
            context.load_verify_locations(cafile=paths["client_ca_file"])
        except (ssl.SSLError, OSError) as exc:
            raise fail("client_ca_file", f"cannot load: {exc}") from None
    context.verify_mode = verify
    return context


def _location(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in loc) or "(top level)"


def load_web_config(path: str | os.PathLike[str]) -> WebConfig:
    """Read and validate a web-config file; every problem is one `ConfigError` line naming the
    file and the field."""
    file = Path(path)
    source = str(file)
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{source}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{source}: cannot read: {exc}") from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = f":{mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{source}{line}: YAML syntax error: {exc.problem or exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: YAML error: {exc}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of keys to values")
    try:
        parsed = _WebConfigFile.model_validate(data)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            where = _location(tuple(error["loc"]))
            if error["type"] == "extra_forbidden":
                problems.append(f"{where}: unknown key")
            else:
                problems.append(f"{where}: {str(error['msg']).removeprefix('Value error, ')}")
        raise ConfigError(f"{source}: " + "; ".join(problems)) from None
    base = file.resolve().parent  # relative file names are relative to the web-config file
    tls = (
        _ssl_context(parsed.tls_server_config, base, source)
        if parsed.tls_server_config is not None
        else None
    )
    users = {user: hashed.encode() for user, hashed in parsed.basic_auth_users.items()}
    return WebConfig(source, tls, users, dict(parsed.http_server_config.headers))


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class BasicAuth:
    """aiohttp middleware: HTTP basic auth against bcrypt hashes, every path but OPEN_PATHS."""

    def __init__(self, users: dict[str, bytes], max_cached: int = 1024) -> None:
        self._users = dict(users)
        self._key = os.urandom(32)  # the cache holds keyed digests, never passwords
        self._verified: dict[str, bytes] = {}
        self._max_cached = max_cached
        # Checked for unknown users so that they take as long as known ones.
        self._dummy = bcrypt.hashpw(b"db-exporter", bcrypt.gensalt(rounds=10))

    def _digest(self, user: str, password: bytes, hashed: bytes) -> bytes:
        message = user.encode() + b"\0" + hashed + b"\0" + password
        return hmac.new(self._key, message, hashlib.sha256).digest()

    async def authenticated(self, header: str | None) -> bool:
        if not header or not header.lower().startswith("basic "):
            return False
        try:
            decoded = base64.b64decode(header[6:].strip(), validate=True)
        except (binascii.Error, ValueError):
            return False
        user_bytes, sep, password = decoded.partition(b":")
        if not sep or len(password) > MAX_PASSWORD_BYTES:
            # bcrypt cannot check a longer password whole: refused for every user alike,
            # rather than accepted on its first 72 bytes as truncating implementations do.
            return False
        user = user_bytes.decode("utf-8", "replace")
        hashed = self._users.get(user)
        digest = self._digest(user, password, hashed or self._dummy)
        cached = self._verified.get(user)
        if hashed is not None and cached is not None and hmac.compare_digest(cached, digest):
            return True
        valid = await asyncio.to_thread(bcrypt.checkpw, password, hashed or self._dummy)
        if not valid or hashed is None:
            return False
        if len(self._verified) >= self._max_cached:
            self._verified.clear()
        self._verified[user] = digest
        return True

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in OPEN_PATHS or await self.authenticated(
            request.headers.get("Authorization")
        ):
            return await handler(request)
        return web.Response(
            status=401,
            text="Unauthorized\n",
            headers={"WWW-Authenticate": f'Basic realm="{REALM}", charset="UTF-8"'},
        )
