"""The API token: generated on first start, stored with mode 600, required for every change."""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def load_or_create_token(path: Path) -> str:
    """Read the token at `path`, creating it (mode 600) on first use."""
    if path.exists():
        token = path.read_text(encoding="utf-8").strip()
        if token:
            return token
    path.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as file:
        file.write(token + "\n")
    os.chmod(path, 0o600)
    return token


def token_matches(header: str | None, token: str) -> bool:
    """True when an Authorization header carries the bearer token (constant-time compare)."""
    scheme, _, credentials = (header or "").partition(" ")
    if scheme.lower() != "bearer":  # auth schemes are case-insensitive (RFC 9110)
        return False
    return token_equals(credentials, token)


def token_equals(presented: str, token: str) -> bool:
    """True when `presented` (surrounding blanks ignored) is `token`, compared in constant time."""
    # Bytes, so that a non-ASCII value is a wrong token rather than an error.
    return secrets.compare_digest(presented.strip().encode(), token.encode())
