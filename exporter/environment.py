"""The environment as a layer of configuration, laid over the file's data before validation.

- `DB_EXPORTER_` + the key path in upper case, `__` between levels, list items by index:
  `DB_EXPORTER_SLOW_QUERIES__THRESHOLD_MS=250`, `DB_EXPORTER_DATABASES__0__DSN=...`.
- `DATABASE_URL` (or postgres_exporter's `DATA_SOURCE_NAME`) is the one database to watch, named
  `main`, when the file lists none.
- Any of these as `NAME_FILE=/path`: the value is that file's content (Docker and Kubernetes
  secrets), without its trailing newline.

It works on plain data, not on the model classes: validation stays in one place, and every key
path a variable set is remembered so that a validation error can name the variable.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

from exporter.settings import ConfigError, key_path_text

PREFIX = "DB_EXPORTER_"
SECRET_SUFFIX = "_FILE"
DSN_VARIABLES = ("DATABASE_URL", "DATA_SOURCE_NAME")
DEFAULT_DATABASE_NAME = "main"
# A secret is a password or a URL: anything bigger is the wrong file.
MAX_SECRET_BYTES = 64 * 1024

# What Kubernetes sets in every pod for a Service named db-exporter (service links): not settings.
_SERVICE_LINK = re.compile(
    r"DB_EXPORTER_(SERVICE_HOST|SERVICE_PORT(_\w+)?|PORT(_\d+_(TCP|UDP|SCTP)(_(PROTO|PORT|ADDR))?)?)"
)

KeyPath = tuple[str | int, ...]


@dataclass(frozen=True)
class Layered:
    """The data with the environment applied, and which variable set which key path."""

    data: dict[str, Any]
    # The variable that set each key, and the one that made each mapping or list the file lacked.
    origins: dict[KeyPath, str]

    def variable_for(self, loc: KeyPath) -> str | None:
        """The variable that set or made `loc` or the nearest key above it, if one did."""
        for end in range(len(loc), 0, -1):
            if (variable := self.origins.get(loc[:end])) is not None:
                return variable
        return None


def layered(
    data: dict[str, Any], env: Mapping[str, str], keys_named_file: Callable[[], Collection[str]]
) -> Layered:
    """`data` (left untouched) with the environment's settings applied over it.

    `keys_named_file()` gives the keys whose own name ends in `file` (`web_config_file`), so that
    `DB_EXPORTER_SERVER__WEB_CONFIG_FILE` sets that key rather than reading a secret file."""
    values = _values(env, keys_named_file)
    result = copy.deepcopy(data)
    origins: dict[KeyPath, str] = {}
    dsn_given = [name for name in DSN_VARIABLES if name in values]
    if dsn_given and not result.get("databases"):
        if len(dsn_given) > 1:
            raise ConfigError(f"{' and '.join(dsn_given)} are both set; set one of them")
        value, shown = values[dsn_given[0]]
        result["databases"] = [{"name": DEFAULT_DATABASE_NAME, "dsn": value}]
        origins[("databases", 0, "dsn")] = shown
    settings = [(_key_path(name), name) for name in values if name.startswith(PREFIX)]
    for path, name in sorted(settings, key=lambda item: _order(item[0])):
        value, shown = values[name]
        _assign(result, path, value, shown, origins)
    return Layered(result, origins)


def _values(
    env: Mapping[str, str], keys_named_file: Callable[[], Collection[str]]
) -> dict[str, tuple[str, str]]:
    """Each setting's name -> (its value, the variable it came from), `_FILE` ones read."""
    values = {name: (value, name) for name, value in env.items() if _is_setting(name)}
    for name, path in env.items():
        base = name.removesuffix(SECRET_SUFFIX)
        if base == name or not _is_setting(base):
            continue
        last_key = name.removeprefix(PREFIX).rpartition("__")[2].lower()
        if base in DSN_VARIABLES or last_key not in keys_named_file():
            if base in env:
                raise ConfigError(f"{base} and {name} are both set; set one of them")
            values.pop(name, None)
            values[base] = (_read_secret(name, path), name)
    return values


def _is_setting(name: str) -> bool:
    return name in DSN_VARIABLES or (
        name.startswith(PREFIX) and _SERVICE_LINK.fullmatch(name) is None
    )


def _read_secret(name: str, path: str) -> str:
    if "://" in path:  # the value itself given by mistake: it may hold a password
        raise ConfigError(f"{name}: expects the path of a file, not a URL")
    try:
        with open(path, "rb") as file:
            content = file.read(MAX_SECRET_BYTES + 1)
    except (OSError, ValueError) as exc:  # ValueError: a NUL byte in the path
        reason = getattr(exc, "strerror", None) or str(exc)
        raise ConfigError(f"{name}: cannot read {path!r}: {reason}") from None
    if len(content) > MAX_SECRET_BYTES:
        raise ConfigError(f"{name}: {path!r} is larger than {MAX_SECRET_BYTES} bytes")
    try:
        return content.decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError:
        raise ConfigError(f"{name}: {path!r} is not UTF-8 text") from None


def _key_path(name: str) -> KeyPath:
    segments = name.removeprefix(PREFIX).split("__")
    if not all(segments):
        raise ConfigError(
            f"{name}: not a key path (keys joined by __, for example {PREFIX}SERVER__LISTEN)"
        )
    return tuple(int(s) if s.isascii() and s.isdigit() else s.lower() for s in segments)


def _order(path: KeyPath) -> tuple[tuple[int, int, str], ...]:
    # Parents before their keys, list items by number (so item 10 comes after item 9).
    return tuple((1, 0, k) if isinstance(k, str) else (0, k, "") for k in path)


def _assign(
    root: dict[str, Any], path: KeyPath, value: str, name: str, origins: dict[KeyPath, str]
) -> None:
    """Set `value` at `path`, making the mappings and list items on the way; record `name` as
    the origin of the key and of each container it made (an index under a mapping is a key)."""
    node: Any = root
    stored: KeyPath = ()
    for depth, key in enumerate(path):
        slot = _slot(node, key, name, stored)
        stored += (slot,)
        if depth == len(path) - 1:
            node[slot] = value
            origins[stored] = name
            return
        if (node.get(slot) if isinstance(node, dict) else node[slot]) is None:
            node[slot] = [] if isinstance(path[depth + 1], int) else {}
            origins.setdefault(stored, name)
        node = node[slot]


def _slot(node: Any, key: str | int, name: str, stored: KeyPath) -> str | int:
    """Where `key` goes in `node` (a list grows by one item when `key` is its length)."""
    where = key_path_text(stored)
    if isinstance(node, dict):
        return str(key)
    if not isinstance(node, list):
        raise ConfigError(f"{name}: {where} is a single value, it has no key {key}")
    if not isinstance(key, int):
        raise ConfigError(f"{name}: {where} is a list; give an item's index, not {key!r}")
    if key > len(node):
        raise ConfigError(f"{name}: {where}[{key}] leaves a gap; the next item is [{len(node)}]")
    if key == len(node):
        node.append(None)
    return key
