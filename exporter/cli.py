"""`db-exporter` / `python -m exporter`: demo, serve, check-config, slowlog, explain, assets,
backup, restore, test-report.

A mistake the user can fix (bad config, bad flag, port in use) prints one line naming the
culprit and exits 2; `--debug` adds the traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import traceback
from datetime import datetime
from typing import TYPE_CHECKING, Any, BinaryIO, NoReturn

from exporter._version import __version__
from exporter.assets import DEFAULT_RUNBOOK_BASE_URL, write_assets
from exporter.errors import UserError
from exporter.logs import LOG_FORMATS, LOG_LEVELS, log_format, setup_logging
from exporter.slowlog import report
from exporter.slowlog.progress import Progress

if TYPE_CHECKING:
    from exporter.settings import Settings

# Each command imports what it runs when it runs (the server and its drivers, the demo, YAML):
# `slowlog` on a laptop at 3 a.m. should not wait for aiohttp and SQLAlchemy to load.

DEMO_LISTEN = "127.0.0.1:9188"
# Each demo worker's pool may open 15 connections: four stay well below PostgreSQL's default
# max_connections (100) with the sidecar's and a psql session's to spare.
DEMO_MAX_WORKERS = 4
EXPLAIN_TIMEOUT_SECONDS = 60.0
MAX_SQL_BYTES = 1 << 20
log = logging.getLogger(__name__)


class UsageError(UserError):
    """A mistake on the command line or in the environment; the message is one line."""


class NoRecords(Exception):
    """The input holds lines, none of them a record (exit 1, like grep finding nothing)."""


class Grown(Exception):
    """`test-report compare` found tests that run more statements (exit 1, for CI)."""


def _listen(value: str | None, flag: str = "--listen") -> str | None:
    from exporter.settings import parse_listen

    if value is not None:
        try:
            parse_listen(value)
        except ValueError as exc:
            raise UsageError(f"{flag}: {exc}") from None
    return value


class _Parser(argparse.ArgumentParser):
    """A bad flag is one line naming it, like every other user error (no usage block)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"db-exporter: error: {_one_line(message)} (see --help)\n")


def _one_line(text: str) -> str:
    """Line breaks and other control characters a value brings, escaped (`\\n`)."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}")
    return value


def _demo_workers(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= DEMO_MAX_WORKERS:
        raise argparse.ArgumentTypeError(
            f"expected a whole number from 1 to {DEMO_MAX_WORKERS}, got {text!r}"
        )
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not 0 < value <= 2_147_483:  # the longest statement_timeout
        raise argparse.ArgumentTypeError(f"expected seconds from 0 to 2147483, got {text!r}")
    return value


def _moment(text: str) -> datetime:
    try:
        return report.since_or_until(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _global_flags() -> _Parser:
    """Flags accepted before and after the command. Their defaults are SUPPRESS so that the
    command's parser, when a flag is absent after it, leaves the value given before it;
    `main` starts from `GLOBAL_DEFAULTS` instead."""
    flags = _Parser(add_help=False, argument_default=argparse.SUPPRESS)
    flags.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    flags.add_argument(
        "--log-level",
        type=str.upper,
        choices=LOG_LEVELS,
        help="operational logs on stderr (default: the config's log_level, else INFO)",
    )
    flags.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        help="text or one JSON object per line (default: the config's log_format, else text)",
    )
    return flags


GLOBAL_DEFAULTS = {"debug": False, "log_level": None, "log_format": None}


def _parser() -> argparse.ArgumentParser:
    flags = _global_flags()
    parser = _Parser(
        prog="db-exporter",
        description="Prometheus metrics and slow-query insight for SQLAlchemy + PostgreSQL.",
        parents=[flags],
    )
    parser.add_argument("--version", action="version", version=f"db-exporter {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = commands.add_parser(
        "demo",
        help="run the wallet demo (embedded PostgreSQL unless DATABASE_URL is set)",
        parents=[flags],
    )
    demo.add_argument("--listen", default=DEMO_LISTEN, metavar="HOST:PORT")
    demo.add_argument(
        "--workers",
        type=_demo_workers,
        default=1,
        metavar="N",
        help="run the workload in N worker processes beside a sidecar, as under gunicorn "
        f"(1 to {DEMO_MAX_WORKERS}; default 1: in the demo's own process)",
    )

    serve = commands.add_parser(
        "serve",
        help="run the standalone sidecar (config: FILE and/or the environment)",
        parents=[flags],
    )
    serve.add_argument("--config", metavar="FILE", help="default: the environment alone")
    serve.add_argument("--listen", metavar="HOST:PORT", help="overrides server.listen")
    serve.add_argument(
        "--web.config.file",
        dest="web_config_file",
        metavar="FILE",
        help="TLS and basic auth (exporter-toolkit format); overrides server.web_config_file",
    )

    check = commands.add_parser(
        "check-config",
        help="validate the configuration (FILE and the environment) and print it",
        parents=[flags],
    )
    check.add_argument("file", metavar="FILE", nargs="?", help="default: the environment alone")

    slowlog = commands.add_parser(
        "slowlog", help="rank the statements in a slow-query log (JSON lines)", parents=[flags]
    )
    slowlog.add_argument("file", metavar="FILE", nargs="?", default="-", help="default: stdin")
    slowlog.add_argument(
        "--top", type=_positive, default=report.TOP, metavar="N", help="rows per table (20)"
    )
    for bound in ("since", "until"):
        slowlog.add_argument(
            f"--{bound}",
            type=_moment,
            metavar="TIME",
            help="an ISO time (UTC unless a zone is given) or an age: 90s, 15m, 2h, 7d",
        )
    slowlog.add_argument("--database", metavar="NAME", help="only this database's records")
    slowlog.add_argument("--json", action="store_true", help="the same report as one JSON object")

    explain = commands.add_parser(
        "explain",
        help="show a statement's plan and what to fix in it (EXPLAIN ANALYZE, rolled back)",
        parents=[flags],
    )
    explain.add_argument("--config", metavar="FILE", help="default: the environment alone")
    explain.add_argument("--database", metavar="NAME", help="needed when several are configured")
    explain.add_argument(
        "--no-analyze",
        dest="analyze",
        action="store_false",
        help="only plan it (plain EXPLAIN): nothing runs",
    )
    explain.add_argument(
        "--allow-ddl", action="store_true", help="run DDL with ANALYZE (rolled back, locks held)"
    )
    explain.add_argument(
        "--timeout",
        type=_seconds,
        default=EXPLAIN_TIMEOUT_SECONDS,
        metavar="SECONDS",
        help="statement_timeout and lock_timeout (default: %(default)g)",
    )
    explain.add_argument("--json", action="store_true", help="PostgreSQL's plan and the findings")
    source = explain.add_mutually_exclusive_group()
    source.add_argument("sql", metavar="SQL", nargs="?", help="the statement, or - for stdin")
    source.add_argument("--file", metavar="PATH", help="read the statement from PATH")

    _backup_commands(commands, flags)
    test_report = commands.add_parser(
        "test-report",
        help="the pytest plugin's JSON reports (--db-queries-report)",
        parents=[flags],
    )
    reports = test_report.add_subparsers(dest="report_command", required=True, metavar="ACTION")
    compare = reports.add_parser(
        "compare",
        help="list the tests that run more statements in HEAD than in BASE (exit 1 if any)",
        parents=[flags],
    )
    compare.add_argument("base", metavar="BASE", help="the report of the base branch")
    compare.add_argument("head", metavar="HEAD", help="the report of the change")

    assets = commands.add_parser(
        "assets",
        help="write the dashboards, alert rules, runbooks and example configs to DIR",
        parents=[flags],
    )
    assets.add_argument("dir", metavar="DIR")
    assets.add_argument("--force", action="store_true", help="write into a non-empty DIR")
    assets.add_argument(
        "--runbook-base-url",
        default=DEFAULT_RUNBOOK_BASE_URL,
        metavar="URL",
        help="where the alerts' runbook_urls point (default: %(default)s)",
    )
    return parser


def _backup_commands(commands: argparse._SubParsersAction[Any], flags: _Parser) -> None:
    backup = commands.add_parser(
        "backup",
        help="back up a configured database (pg_dump, custom format) with its checksum",
        parents=[flags],
    )
    restore = commands.add_parser(
        "restore",
        help="restore a backup into a database (pg_restore), its checksum verified first",
        parents=[flags],
    )
    restore.add_argument("file", metavar="FILE", help="a .dump written by db-exporter backup")
    for command in (backup, restore):
        command.add_argument("--config", metavar="FILE", help="default: the environment alone")
        command.add_argument("--database", metavar="NAME", help="needed when several are set")
        command.add_argument(
            "--pg-bin-dir", metavar="DIR", help="where the client tools are (collectors.backups)"
        )
    backup.add_argument("--dir", metavar="DIR", help="overrides collectors.backups.directory")
    backup.add_argument(
        "--keep", type=_positive, metavar="N", help="overrides collectors.backups.keep"
    )
    restore.add_argument(
        "--target-database",
        metavar="NAME",
        help="restore into this database of the same server (default: the configured one)",
    )
    restore.add_argument(
        "--force", action="store_true", help="restore into a database that holds tables"
    )


def _backup(args: argparse.Namespace) -> None:
    from exporter.backup_command import backup_database, restore_database
    from exporter.chosen_database import database_named

    settings = _settings(args.config)
    database = database_named(settings, args.database, args.config or "environment", args.command)
    if args.command == "backup":
        done = backup_database(
            database, directory=args.dir, keep=args.keep, pg_bin_dir=args.pg_bin_dir
        )
        removed = f"; removed {len(done.removed)} older" if done.removed else ""
        print(
            f"wrote {done.path} ({done.size_bytes:,} bytes, {done.duration_seconds:.1f} s){removed}"
        )
        return
    restored = restore_database(
        database,
        args.file,
        target_database=args.target_database,
        force=args.force,
        pg_bin_dir=args.pg_bin_dir,
    )
    print(f"restored {restored.path} into {restored.database} ({restored.duration_seconds:.1f} s)")


def _settings(path: str | None) -> Settings:
    """What `serve` runs and `check-config` shows: the file (if any) and the environment."""
    from exporter.settings import load_settings

    settings = load_settings(path)
    if path is None and not settings.databases:
        raise UsageError(
            "nothing to watch: give a config file, or set DATABASE_URL (or DATA_SOURCE_NAME)"
        )
    return settings


def _check_config(path: str | None) -> None:
    import yaml

    settings = _settings(path)
    print(f"# {path or 'environment'}: valid; effective configuration (passwords masked)")
    print(yaml.safe_dump(settings.masked(), sort_keys=False), end="")


async def _serve(settings: Settings) -> None:
    import asyncio
    import signal

    from exporter.metrics import default_metrics
    from exporter.server import Exporter
    from exporter.sidecar_gc import freeze_start_up

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    exporter = Exporter.sidecar(settings, default_metrics())
    await exporter.start()
    freeze_start_up()  # a process of its own: full garbage collections never scan start-up
    try:
        log.info("serving %s/metrics", exporter.url)
        await stop.wait()
    finally:
        await exporter.stop()


def _binary_input(path: str) -> BinaryIO:
    """The file, or stdin for `-` (left open when done); bytes, so that a line that is not
    UTF-8 is one line to skip rather than an error."""
    return open(sys.stdin.fileno(), "rb", closefd=False) if path == "-" else open(path, "rb")


def _slowlog(args: argparse.Namespace) -> None:
    window = report.Window(args.since, args.until, args.database)
    if window.since and window.until and window.since >= window.until:
        raise UsageError(
            f"--since {args.since.isoformat()} is not before --until {args.until.isoformat()}"
        )
    name = "stdin" if args.file == "-" else args.file
    try:
        with _binary_input(args.file) as stream, Progress(name, stream) as progress:
            found = report.read(report.lines_of(stream), window, progress.show)
    except OSError as exc:
        raise UsageError(f"{name}: {exc.strerror or exc}") from None
    if found.lines and not found.records:
        raise NoRecords(f"{name}: none of its {found.lines} lines is a slow-query record")
    if args.json:
        print(json.dumps(report.as_json(found, args.top), indent=2))
    else:
        print(report.render(found, args.top))


def _statement(sql: str | None, path: str | None) -> str:
    """The SQL of `explain`: the argument, or the file (`-`: stdin), at most 1 MiB."""
    if path is None and sql is None:
        raise UsageError("explain needs the statement: SQL, --file PATH, or - for stdin")
    if path is None and sql != "-":
        name, text = "the SQL argument", str(sql)
    else:
        path = path or "-"
        name = "stdin" if path == "-" else path
        try:
            with _binary_input(path) as stream:
                data = stream.read(MAX_SQL_BYTES + 1)
            text = data.decode()
        except OSError as exc:
            raise UsageError(f"{name}: {exc.strerror or exc}") from None
        except UnicodeDecodeError:
            raise UsageError(f"{name}: not UTF-8 text") from None
        if len(data) > MAX_SQL_BYTES:
            raise UsageError(f"{name}: longer than {MAX_SQL_BYTES:,} bytes")
    if not text.strip():
        raise UsageError(f"{name}: no SQL in it")
    return text


def _explain(args: argparse.Namespace) -> None:
    from exporter.chosen_database import database_named
    from exporter.explain_command import explain_sql

    sql = _statement(args.sql, args.file)
    source = args.config or "environment"
    database = database_named(_settings(args.config), args.database, source, "explain")
    plan = explain_sql(
        database, sql, analyze=args.analyze, allow_ddl=args.allow_ddl, timeout=args.timeout
    )
    if args.json:
        findings = [{"kind": f.kind, "message": f.message} for f in plan.findings]
        print(json.dumps({"plan": plan.raw, "findings": findings}, indent=2))
    else:
        print(plan.render())


def _compare_reports(base: str, head: str) -> None:
    from exporter.integrations import pytest_report

    lines, grew = pytest_report.comparison(base, pytest_report.read(base), pytest_report.read(head))
    print("\n".join(lines))
    if grew:
        raise Grown()


def _run(args: argparse.Namespace) -> None:
    if args.command == "check-config":
        _check_config(args.file)
    elif args.command == "slowlog":
        _slowlog(args)
    elif args.command == "explain":
        _explain(args)
    elif args.command in ("backup", "restore"):
        _backup(args)
    elif args.command == "test-report":
        _compare_reports(args.base, args.head)
    elif args.command == "assets":
        for path in write_assets(
            args.dir, force=args.force, runbook_base_url=args.runbook_base_url
        ):
            print(f"wrote {path}")
    elif args.command == "serve":
        import asyncio

        from exporter.settings import sidecar_ignored

        settings = _settings(args.config)
        server = settings.server
        if _listen(args.listen) is not None:
            server = server.model_copy(update={"listen": args.listen})
        if args.web_config_file is not None:
            server = server.model_copy(update={"web_config_file": args.web_config_file})
        settings = settings.model_copy(update={"server": server})
        _setup_logging(args, settings)
        if ignored := sidecar_ignored(settings):
            log.warning(
                "db-exporter serve ignores %s: these settings apply to engines instrumented in "
                "the application",
                ", ".join(ignored),
            )
        asyncio.run(_serve(settings))
    elif args.command == "demo":
        from exporter.demo.run import run_demo

        run_demo(_listen(args.listen) or DEMO_LISTEN, os.environ.get("DATABASE_URL"), args.workers)


def _setup_logging(args: argparse.Namespace, settings: Settings | None = None) -> None:
    """Flags win over the config file, which wins over the defaults."""
    setup_logging(
        args.log_level or (settings.log_level if settings else "INFO"),
        args.log_format or (settings.log_format if settings else "text"),
    )


def _report(error: Exception, debug: bool) -> None:
    """One line naming the culprit (a JSON log record when logs are JSON); with `--debug`,
    the traceback too."""
    if log_format() == "json":
        log.error("%s", error, exc_info=error if debug else None)
        return
    if debug:
        traceback.print_exc()
    print(f"db-exporter: error: {_one_line(str(error))}", file=sys.stderr)


def _quiet_stdout() -> None:
    """The reader of stdout went away (`db-exporter ... | head`): what is left unwritten goes
    nowhere, so that the interpreter's last flush at exit cannot complain either."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line, its global flags before or after the command, as one namespace."""
    return _parser().parse_args(argv, argparse.Namespace(**GLOBAL_DEFAULTS))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    _setup_logging(args)
    try:
        _run(args)
        sys.stdout.flush()  # a closed pipe shows here rather than at exit
    except BrokenPipeError:
        _quiet_stdout()
        return 1
    except UserError as exc:
        _report(exc, args.debug)
        return 2
    except NoRecords as exc:
        _report(exc, args.debug)
        return 1
    except Grown:
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


def console() -> None:
    sys.exit(main())
