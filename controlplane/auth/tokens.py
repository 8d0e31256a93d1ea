"""Token material: random, shown once, stored as a digest, compared in constant time."""

from __future__ import annotations

import hashlib
import hmac
import secrets

__all__ = ["TOKEN_PREFIX", "digest_token", "display_prefix", "matches", "new_token"]

TOKEN_PREFIX = "cpt_"  # noqa: S105 - a public marker, not a secret


def new_token() -> str:
    """A fresh token: 256 random bits, URL-safe, with a recognisable prefix for secret scanners."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def digest_token(token: str) -> str:
    """The stored form of a token. SHA-256 suffices: tokens carry 256 bits of entropy, so no stretching is needed."""
    return hashlib.sha256(token.encode()).hexdigest()


def matches(token: str, stored_digest: str) -> bool:
    """Compare a presented token with a stored digest in constant time."""
    return hmac.compare_digest(digest_token(token), stored_digest)


def display_prefix(token: str) -> str:
    """The first characters of a token, safe to list so an operator can tell tokens apart."""
    return token[: len(TOKEN_PREFIX) + 6]
