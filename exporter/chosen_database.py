"""The configured database a one-shot command (`explain`, `backup`, `restore`) works on: the
one its `--database` names, or the only one configured."""

from __future__ import annotations

from exporter.errors import UserError
from exporter.settings import DatabaseSettings, Settings


class NoSuchDatabase(UserError):
    """The configuration has no database the command can take; the message is one line,
    starting with the command's name."""


def database_named(
    settings: Settings, name: str | None, source: str, command: str
) -> DatabaseSettings:
    """The configured database called `name`, or the only one when no name is given. `source`
    (a file or the environment) and `command` name the culprit in the error."""
    names = ", ".join(db.name for db in settings.databases)
    if not settings.databases:
        raise NoSuchDatabase(f"{command}: {source}: no database configured")
    if name is None:
        if len(settings.databases) > 1:
            raise NoSuchDatabase(
                f"{command}: {source} configures {names}: choose one with --database"
            )
        return settings.databases[0]
    for database in settings.databases:
        if database.name == name:
            return database
    raise NoSuchDatabase(f"{command}: {source}: no database named {name!r} (configured: {names})")
