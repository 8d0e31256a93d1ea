"""Benchmark: a leader killed with SIGKILL, and how long until the survivor runs its first leader-only job.

Two `controlplane serve` processes share one fresh PostgreSQL database. Once both answer `/readyz`, the benchmark
waits a random part of a renewal period (so the kill falls anywhere between two renewals), kills the lease holder
with SIGKILL, and polls the survivor's `/metrics` every 50 ms until its
`controlplane_scheduler_job_runs_total{job="evaluate_alert_rules",result="ok"}` grows: the seconds from the kill
to that first run are the fail-over. The README promises at most `CONTROLPLANE_LEADER_LEASE_SECONDS`.

    .venv/bin/python -m bench.failover [--lease 6] [--trials 10]

Needs PostgreSQL at 127.0.0.1:5432 (`CONTROLPLANE_TEST_POSTGRES_URL` as for the tests).
"""

from __future__ import annotations

import argparse
import random
import statistics

from tests.faults.failover import fail_over


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lease", type=float, default=30.0, help="CONTROLPLANE_LEADER_LEASE_SECONDS")
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    seconds = []
    for number in range(1, args.trials + 1):
        seconds.append(fail_over(args.lease, rng))
        print(f"trial {number}: survivor's first leader job {seconds[-1]:.2f} s after the kill", flush=True)
    print(
        f"lease {args.lease:g} s, {args.trials} trials: median {statistics.median(seconds):.2f} s, "
        f"max {max(seconds):.2f} s ({max(seconds) / args.lease:.0%} of the lease)"
    )


if __name__ == "__main__":
    main()
