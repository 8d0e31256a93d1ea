"""A leader killed with SIGKILL: the surviving replica runs its first leader-only job within the lease
(``CONTROLPLANE_LEADER_LEASE_SECONDS``; by design within two thirds of it). ``bench.failover`` runs the same with
more trials and the default lease."""

from __future__ import annotations

import random

from tests.faults.failover import fail_over

LEASE = 3.0  # seconds: short, so the test is


def test_the_survivor_runs_its_first_leader_job_within_the_lease() -> None:
    rng = random.Random(7)
    seconds = [fail_over(LEASE, rng) for _ in range(3)]
    assert max(seconds) <= LEASE, seconds
