"""The one mark of a mistake the user can fix (a bad config value, a flag, a port in use): the
command line prints such an error as one line naming the culprit and exits 2, without loading
every module that can raise one."""

from __future__ import annotations


class UserError(Exception):
    """A mistake the user can fix; its message is one line."""
