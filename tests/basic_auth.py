"""Basic-auth credentials for tests: bcrypt hashes at the cheapest cost and the header."""

from __future__ import annotations

import base64

import bcrypt


def bcrypt_hash(password: str | bytes, prefix: str = "$2b$") -> str:
    secret = password.encode() if isinstance(password, str) else password
    hashed = bcrypt.hashpw(secret, bcrypt.gensalt(rounds=4)).decode()
    return prefix + hashed[4:]


def basic_auth(user: str | bytes, password: str | bytes) -> dict[str, str]:
    """The Authorization header for `user` and `password` (bytes are sent as they are)."""
    raw = (user.encode() if isinstance(user, str) else user) + b":"
    raw += password.encode() if isinstance(password, str) else password
    return {"Authorization": "Basic " + base64.b64encode(raw).decode()}
