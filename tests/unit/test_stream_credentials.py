"""Stream credentials: signed, scoped to one environment, stable within a window, expiring, rotatable keys."""

from __future__ import annotations

import logging

import pytest

from controlplane.auth.stream_credentials import (
    STREAM_CREDENTIAL_PREFIX,
    CredentialRedaction,
    StreamCredentialRefused,
    StreamCredentials,
    StreamGrant,
    redact_credentials,
)

KEY = b"k" * 32
OTHER_KEY = b"o" * 32
LIFETIME = 600.0
NOW = 1_800_000_000.0


def mint(credentials: StreamCredentials, now: float = NOW, environment: str = "production") -> str:
    return credentials.mint(environment=environment, token_id=7, token_name="web", now=now)


def refusal(credentials: StreamCredentials, credential: str, now: float = NOW) -> str:
    with pytest.raises(StreamCredentialRefused) as refused:
        credentials.verify(credential, now=now)
    return refused.value.reason


def test_a_credential_grants_its_environment_on_behalf_of_its_token_until_its_expiry() -> None:
    credentials = StreamCredentials(keys=(KEY,), lifetime_seconds=LIFETIME)
    credential = mint(credentials)

    grant = credentials.verify(credential, now=NOW)

    assert credential.startswith(STREAM_CREDENTIAL_PREFIX)
    assert grant == StreamGrant(environment="production", token_id=7, token_name="web", expires_at=grant.expires_at)
    # Minted per half lifetime, expiring at the end of the next half: between half and all of the lifetime.
    assert NOW + LIFETIME / 2 <= grant.expires_at <= NOW + LIFETIME


def test_the_same_credential_is_minted_all_through_a_window_and_a_new_one_in_the_next() -> None:
    credentials = StreamCredentials(keys=(KEY,), lifetime_seconds=LIFETIME)
    start = credentials.window(NOW) * 300.0

    assert mint(credentials, start) == mint(credentials, start + 299.9)
    assert mint(credentials, start + 300) != mint(credentials, start)
    assert credentials.window(start + 300) == credentials.window(start) + 1


def test_a_credential_is_refused_as_expired_from_its_expiry_on() -> None:
    credentials = StreamCredentials(keys=(KEY,), lifetime_seconds=LIFETIME)
    credential = mint(credentials)
    expires_at = credentials.verify(credential, now=NOW).expires_at

    assert credentials.verify(credential, now=expires_at - 0.001).environment == "production"
    assert refusal(credentials, credential, now=expires_at) == "expired"
    # An expired credential belongs to a window that has passed: a client refetching cannot be told 304 with it.
    assert credentials.window(expires_at) > credentials.window(NOW)


def test_a_changed_payload_or_signature_is_refused_as_a_bad_signature() -> None:
    credentials = StreamCredentials(keys=(KEY,), lifetime_seconds=LIFETIME)
    staging = mint(credentials, environment="staging")
    production = mint(credentials)
    staging_payload = staging.split(".")[1]
    production_signature = production.split(".")[2]

    swapped = f"{STREAM_CREDENTIAL_PREFIX}{staging_payload}.{production_signature}"
    flipped = production[:-2] + ("A" if production[-2] != "A" else "B") + production[-1]

    assert refusal(credentials, swapped) == "bad-signature"
    assert refusal(credentials, flipped) == "bad-signature"


@pytest.mark.parametrize("credential", ["", "cps1.", "cps1.abc", "cpt_abcdef", "cps1..sig", "cps1.abc."])
def test_a_string_that_is_no_credential_is_refused_as_malformed(credential: str) -> None:
    credentials = StreamCredentials(keys=(KEY,), lifetime_seconds=LIFETIME)
    assert refusal(credentials, credential) == "malformed"


def test_another_replicas_key_is_refused_and_a_rotated_out_key_still_verifies_while_listed() -> None:
    ours = StreamCredentials(keys=(KEY,), lifetime_seconds=LIFETIME)
    theirs = StreamCredentials(keys=(OTHER_KEY,), lifetime_seconds=LIFETIME)
    rotated = StreamCredentials(keys=(OTHER_KEY, KEY), lifetime_seconds=LIFETIME)

    assert refusal(theirs, mint(ours)) == "bad-signature"
    assert rotated.verify(mint(ours), now=NOW).environment == "production"
    # The new key signs: a replica that has not got it yet refuses, so the new key goes everywhere first.
    assert refusal(ours, mint(rotated)) == "bad-signature"


def test_without_configured_keys_each_process_draws_its_own() -> None:
    first = StreamCredentials.from_settings((), LIFETIME)
    second = StreamCredentials.from_settings((), LIFETIME)
    shared = StreamCredentials.from_settings(("s" * 32,), LIFETIME)

    assert first.keys != second.keys
    assert refusal(second, mint(first)) == "bad-signature"
    assert shared.keys == (b"s" * 32,)


def test_the_epoch_changes_with_the_window_and_with_the_signing_key_but_not_with_a_verifying_one() -> None:
    credentials = StreamCredentials(keys=(KEY,), lifetime_seconds=LIFETIME)
    restarted = StreamCredentials(keys=(OTHER_KEY,), lifetime_seconds=LIFETIME)
    rotating = StreamCredentials(keys=(KEY, OTHER_KEY), lifetime_seconds=LIFETIME)

    assert credentials.epoch(NOW) == credentials.epoch(NOW + 1)
    assert credentials.epoch(NOW) != credentials.epoch(NOW + LIFETIME / 2)
    assert credentials.epoch(NOW) != restarted.epoch(NOW)
    assert credentials.epoch(NOW) == rotating.epoch(NOW)


def test_an_access_log_line_never_carries_the_credential() -> None:
    credential = mint(StreamCredentials(keys=(KEY,), lifetime_seconds=LIFETIME))
    # uvicorn's access log: client, method, path with query, HTTP version, status.
    record = logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        __file__,
        1,
        '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5000", "GET", f"/evaluation/v1/stream?credential={credential}", "1.1", 200),
        None,
    )

    assert CredentialRedaction().filter(record) is True
    line = record.getMessage()
    assert credential not in line
    assert line == '127.0.0.1:5000 - "GET /evaluation/v1/stream?credential=cps1.[redacted] HTTP/1.1" 200'
    assert redact_credentials(f"Bearer {credential}, other") == "Bearer cps1.[redacted], other"
