"""The evaluation limiter: per identity, per wall-clock second, constant work per request."""

from __future__ import annotations

from controlplane.api.rate_limits import RateLimiter


class Ticker:
    """A clock that moves only when told to."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_requests_beyond_the_limit_in_one_second_wait_for_the_next_second() -> None:
    clock = Ticker(100.25)
    limiter = RateLimiter(per_second=3, clock=clock)

    allowed = [limiter.retry_after("token-a") for _ in range(3)]
    refused = limiter.retry_after("token-a")

    assert allowed == [None, None, None]
    assert refused == 1
    clock.now = 101.0
    assert limiter.retry_after("token-a") is None


def test_each_identity_has_its_own_budget() -> None:
    limiter = RateLimiter(per_second=1, clock=Ticker(5.0))

    assert limiter.retry_after("token-a") is None
    assert limiter.retry_after("token-a") == 1
    assert limiter.retry_after("token-b") is None


def test_identities_from_past_windows_are_forgotten_when_memory_fills() -> None:
    clock = Ticker(0.0)
    limiter = RateLimiter(per_second=1, clock=clock)
    for index in range(10_000):
        limiter.retry_after(f"old-{index}")
    clock.now = 1.0

    assert limiter.retry_after("new") is None
    assert len(limiter._windows) == 1
