"""Errors of the wallet's balance rules; all are `ValueError`s with a message fit to show."""

from __future__ import annotations


class BalanceError(ValueError):
    """A balance operation that the wallet's rules refuse."""


class InvalidAmount(BalanceError):
    """The amount is not a positive, finite Decimal with at most six decimal places."""


class InsufficientFunds(BalanceError):
    """Locking more than the available (unlocked) amount."""


class InsufficientLockedFunds(BalanceError):
    """Unlocking more than the locked amount."""
