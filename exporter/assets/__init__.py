"""`db-exporter assets DIR`: the ops files shipped in this package, written out for an operator.

DIR receives the repository's own layout:

    dashboards/*.json            Grafana dashboards
    dashboards/alerts.yml        Prometheus recording and alerting rules
    dashboards/alerts_test.yml   their unit tests (`promtool test rules alerts_test.yml`)
    docs/runbooks.md             what each alert means and what to do about it
    config/exporter.yaml         the documented configuration
    config/prometheus.yml, config/grafana/provisioning/, config/postgres/
                                 example Prometheus and Grafana provisioning, pg_stat_statements

Every alert's `runbook_url` is `<base>#<alert name in lower case>`, an absolute URL that
Alertmanager and Grafana can follow; the base defaults to the project's docs/runbooks.md.
"""

from __future__ import annotations

import re
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path
from urllib.parse import urlsplit

from exporter.errors import UserError

DEFAULT_RUNBOOK_BASE_URL = "https://github.com/db-exporter/db-exporter/blob/main/docs/runbooks.md"
# The folders of this package that are links to the repository's top-level folders, and the
# kinds of file shipped from them (a checkout also holds dashboards/build.py, caches, ...).
FOLDERS = ("dashboards", "config", "docs")
SUFFIXES = frozenset({".json", ".yml", ".yaml", ".md", ".sql"})
# RFC 3986 characters without `#` (the anchor is appended), braces (Prometheus would read an
# annotation's `{{` as a template) and white space (the URL is a plain YAML scalar).
URL_CHARACTERS = re.compile(r"[A-Za-z0-9\-._~:/?\[\]@!$&'()*+,;=%]+")
RUNBOOK_URL = f"runbook_url: {DEFAULT_RUNBOOK_BASE_URL}#"


class AssetsError(UserError):
    """The target directory or the base URL cannot be used; the message names which."""


def checked_base_url(value: str) -> str:
    """`value` when it can prefix `#anchor` in every runbook_url; otherwise AssetsError."""
    try:
        parts = urlsplit(value)
    except ValueError:
        parts = None
    if (
        parts is None
        or parts.scheme not in ("http", "https")
        or not parts.hostname
        or URL_CHARACTERS.fullmatch(value) is None
    ):
        raise AssetsError(
            f"--runbook-base-url {value!r}: not an absolute http(s) URL without a #fragment"
        )
    return value


def _files_under(folder: Traversable, relative: str) -> dict[str, bytes]:
    found: dict[str, bytes] = {}
    for child in folder.iterdir():
        path = f"{relative}/{child.name}"
        if child.is_dir():
            found |= _files_under(child, path)
        elif Path(child.name).suffix in SUFFIXES:
            found[path] = child.read_bytes()
    return found


def shipped() -> dict[str, bytes]:
    """Relative path -> content of every shipped file, as committed."""
    root = files(__name__)
    found: dict[str, bytes] = {}
    for folder in FOLDERS:
        found |= _files_under(root / folder, folder)
    return dict(sorted(found.items()))


def rendered(runbook_base_url: str = DEFAULT_RUNBOOK_BASE_URL) -> dict[str, bytes]:
    """The shipped files with every runbook_url under `runbook_base_url`."""
    base = checked_base_url(runbook_base_url).encode()
    prefix = RUNBOOK_URL.encode()
    new_prefix = b"runbook_url: " + base + b"#"
    return {path: content.replace(prefix, new_prefix) for path, content in shipped().items()}


def write_assets(
    directory: str, *, force: bool = False, runbook_base_url: str = DEFAULT_RUNBOOK_BASE_URL
) -> list[Path]:
    """Write the rendered files below `directory`; returns their paths.

    Refuses, before writing anything, a directory that is a file or is not empty (unless
    `force`: then the shipped files are overwritten and any other file is left alone).
    """
    contents = rendered(runbook_base_url)
    target = Path(directory)
    if target.exists() and not target.is_dir():
        raise AssetsError(f"{directory}: exists and is not a directory")
    if not force and target.is_dir() and any(target.iterdir()):
        raise AssetsError(f"{directory}: exists and is not empty (--force overwrites)")
    written = []
    for relative, content in contents.items():
        path = target / relative
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content)
        except OSError as exc:
            raise AssetsError(f"{path}: {exc.strerror or exc}") from None
        written.append(path)
    return written
