"""Stream credentials: short-lived, signed grants to open one environment's change stream, carried in its URL.

A browser's `EventSource` cannot send an `Authorization` header, so the stream URL that OFREP's bulk answer
advertises carries the grant itself, as ADR-0008 allows ("the URL may include auth tokens"; treat it as a secret).
The grant is an HMAC-SHA256 over (environment, token id, token name, expiry) with a server key, so no row is
stored per credential and any replica holding the same key verifies it:

    cps1.<base64url(JSON {"e": environment, "t": token id, "n": token name, "x": expiry})>.<base64url(HMAC)>

Credentials are minted per window of half their lifetime and expire at the end of the next window: within a window
every request of a token gets the same URL (the OFREP web provider keeps its open stream when the URL is
unchanged), and a credential that has expired belongs to a window that has passed, so the bulk ETag, which names
the window and the signing key (``epoch``), cannot answer 304 with it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import re
import secrets
from dataclasses import dataclass

import msgspec

__all__ = [
    "STREAM_CREDENTIAL_PREFIX",
    "CredentialRedaction",
    "StreamCredentialRefused",
    "StreamCredentials",
    "StreamGrant",
    "redact_credentials",
]

STREAM_CREDENTIAL_PREFIX = "cps1."
_IN_TEXT = re.compile(re.escape(STREAM_CREDENTIAL_PREFIX) + r"[A-Za-z0-9_.%-]*")


def redact_credentials(text: str) -> str:
    """``text`` with every stream credential in it replaced by a marker."""
    return _IN_TEXT.sub(STREAM_CREDENTIAL_PREFIX + "[redacted]", text)


class CredentialRedaction(logging.Filter):
    """Keeps stream credentials out of log lines: an access log writes each stream URL, query string and all."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Redact the credential in the record's message and string arguments; never drop the record."""
        if isinstance(record.msg, str):
            record.msg = redact_credentials(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(redact_credentials(arg) if isinstance(arg, str) else arg for arg in record.args)
        return True


@dataclass(frozen=True, slots=True)
class StreamGrant:
    """What a valid credential grants: the evaluate role in one environment, on behalf of one token, until then."""

    environment: str
    token_id: int
    token_name: str
    expires_at: int


class StreamCredentialRefused(ValueError):
    """A credential that grants nothing; ``reason`` is `malformed`, `bad-signature` or `expired`."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


class _Payload(msgspec.Struct, forbid_unknown_fields=True):
    e: str
    t: int
    n: str
    x: int


def _encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True, slots=True)
class StreamCredentials:
    """Mints and verifies stream credentials: ``keys[0]`` signs, every key verifies (so keys can be rotated)."""

    keys: tuple[bytes, ...]
    lifetime_seconds: float

    @classmethod
    def from_settings(cls, keys: tuple[str, ...], lifetime_seconds: float) -> StreamCredentials:
        """The configured keys, or one drawn for this process when none is configured (one replica only)."""
        material = tuple(key.encode() for key in keys) or (secrets.token_bytes(32),)
        return cls(keys=material, lifetime_seconds=lifetime_seconds)

    @property
    def _half(self) -> int:
        return max(1, int(self.lifetime_seconds // 2))

    def window(self, now: float) -> int:
        """The minting window ``now`` (Unix seconds) falls in."""
        return int(now // self._half)

    def epoch(self, now: float) -> str:
        """What the credential minted at ``now`` depends on besides the token: the signing key and the window. A
        bulk ETag carries it, so neither a new window nor a new key (a restart without configured keys) can be
        answered 304 with a URL whose credential no longer opens the stream."""
        key_id = hashlib.sha256(self.keys[0]).hexdigest()[:8]
        return f"{key_id}.{self.window(now)}"

    def mint(self, *, environment: str, token_id: int, token_name: str, now: float) -> str:
        """A credential for ``environment`` on behalf of the token; the same one all through the window."""
        expires_at = (self.window(now) + 2) * self._half
        payload = _encode(msgspec.json.encode(_Payload(e=environment, t=token_id, n=token_name, x=expires_at)))
        return f"{STREAM_CREDENTIAL_PREFIX}{payload}.{self._sign(self.keys[0], payload)}"

    def verify(self, credential: str, *, now: float) -> StreamGrant:
        """The grant of a credential; StreamCredentialRefused when it is malformed, altered or expired."""
        body = credential.removeprefix(STREAM_CREDENTIAL_PREFIX)
        payload, dot, signature = body.partition(".")
        if body == credential or not dot or not payload or not signature:
            raise StreamCredentialRefused("malformed", "the stream credential is not one this control plane issues")
        # Every key is tried whatever matches first, in constant time each: no timing tells which key signed.
        valid = [hmac.compare_digest(self._sign(key, payload), signature) for key in self.keys]
        if not any(valid):
            raise StreamCredentialRefused("bad-signature", "the stream credential's signature does not match")
        try:
            grant = msgspec.json.decode(_decode(payload), type=_Payload)
        except (binascii.Error, ValueError, msgspec.DecodeError) as error:
            raise StreamCredentialRefused("malformed", "the stream credential's content cannot be read") from error
        if now >= grant.x:
            raise StreamCredentialRefused(
                "expired", "the stream credential has expired: fetch the bulk evaluation again for a fresh stream URL"
            )
        return StreamGrant(environment=grant.e, token_id=grant.t, token_name=grant.n, expires_at=grant.x)

    @staticmethod
    def _sign(key: bytes, payload: str) -> str:
        return _encode(hmac.new(key, (STREAM_CREDENTIAL_PREFIX + payload).encode(), hashlib.sha256).digest())
