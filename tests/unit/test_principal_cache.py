"""The token cache: fresh lookups for a few seconds, and each token's last known role for a database outage."""

from __future__ import annotations

from controlplane.api.roles import Role
from controlplane.auth.guards import PrincipalCache
from controlplane.auth.schemas import Principal

ALICE = Principal(token_id=1, name="alice", role=Role.EVALUATE, environment="production")
BOB = Principal(token_id=2, name="bob", role=Role.OPERATOR, environment=None)


def test_a_token_seen_authenticating_keeps_its_role_for_an_outage_after_the_fresh_entry_expires() -> None:
    cache = PrincipalCache(ttl_seconds=0.0)
    cache.put("token-a", ALICE)

    assert cache.get("token-a") == (False, None)  # expired at once: the next request looks it up
    assert cache.last_known("token-a") == ALICE  # what an outage answers with


def test_a_refused_or_revoked_token_is_never_known_and_an_unseen_one_neither() -> None:
    cache = PrincipalCache(ttl_seconds=60.0)
    cache.put("token-a", ALICE)
    cache.put("token-b", BOB)

    cache.put("token-a", None)  # looked up again: revoked elsewhere
    cache.clear(revoked="bob")  # revoked through this replica

    assert (cache.last_known("token-a"), cache.last_known("token-b"), cache.last_known("never")) == (None, None, None)
    assert cache.get("token-b") == (False, None)  # fresh entries go too


def test_clearing_without_a_name_forgets_every_token() -> None:
    cache = PrincipalCache(ttl_seconds=60.0)
    cache.put("token-a", ALICE)
    cache.clear()
    assert cache.last_known("token-a") is None
