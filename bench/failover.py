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
import os
import random
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
import psycopg

from tests.conftest import new_postgres_database

JOB = re.compile(r'^controlplane_scheduler_job_runs_total\{job="evaluate_alert_rules",result="ok"\} (\S+)$', re.M)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextmanager
def replica(url: str, name: str, lease: float, folder: Path) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """`controlplane serve` as replica ``name``; its process and base URL once it answers /readyz."""
    port = free_port()
    environment = {
        **os.environ,
        "CONTROLPLANE_DATABASE_URL": url,
        "CONTROLPLANE_PORT": str(port),
        "CONTROLPLANE_REPLICA_ID": name,
        "CONTROLPLANE_LEADER_LEASE_SECONDS": str(lease),
        "CONTROLPLANE_DEFINITIONS_DIR": str(folder / "none"),
        "CONTROLPLANE_NOTIFICATIONS_FILE": str(folder / "none.yaml"),
    }
    command = [sys.executable, "-m", "controlplane.cli", "serve"]
    log = (folder / f"{name}.log").open("wb")
    process = subprocess.Popen(  # noqa: S603 - our own interpreter and arguments
        command, env=environment, stdout=log, stderr=subprocess.STDOUT
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if process.poll() is not None:
                raise RuntimeError(f"replica {name} exited: {(folder / f'{name}.log').read_text()[-2000:]}")
            time.sleep(0.1)  # waiting for a process to come up, against the deadline above
        else:
            raise RuntimeError(f"replica {name} never became ready")
        yield process, base
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()
        log.close()


def job_runs(base: str) -> float:
    """The replica's count of successful alert evaluations (0 before the first)."""
    found = JOB.search(httpx.get(f"{base}/metrics", timeout=2).text)
    return float(found.group(1)) if found else 0.0


def trial(lease: float, rng: random.Random) -> float:
    """One fail-over; the seconds from the SIGKILL to the survivor's first leader-only job."""
    with (
        tempfile.TemporaryDirectory() as scratch,
        new_postgres_database("cp_failover", migrated=False) as (url, _),
        ExitStack() as stack,
    ):
        folder = Path(scratch)
        replicas = {name: stack.enter_context(replica(url, name, lease, folder)) for name in ("a", "b")}
        with psycopg.connect(url.replace("+psycopg", "")) as connection:
            (holder,) = connection.execute("SELECT holder FROM leader_leases WHERE name = 'scheduler'").fetchone() or (
                None,
            )
        if holder not in replicas:
            raise RuntimeError(f"no replica holds the lease ({holder!r})")
        survivor = replicas["b" if holder == "a" else "a"][1]
        before = job_runs(survivor)
        time.sleep(rng.uniform(0, lease / 6))  # a random point between two renewals
        replicas[holder][0].send_signal(signal.SIGKILL)
        killed = time.monotonic()
        while time.monotonic() - killed < 3 * lease:
            if job_runs(survivor) > before:
                return time.monotonic() - killed
            time.sleep(0.05)  # polling the survivor's own counter
        raise RuntimeError(f"the survivor ran no leader job within {3 * lease:g} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lease", type=float, default=30.0, help="CONTROLPLANE_LEADER_LEASE_SECONDS")
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    seconds = []
    for number in range(1, args.trials + 1):
        seconds.append(trial(args.lease, rng))
        print(f"trial {number}: survivor's first leader job {seconds[-1]:.2f} s after the kill", flush=True)
    print(
        f"lease {args.lease:g} s, {args.trials} trials: median {statistics.median(seconds):.2f} s, "
        f"max {max(seconds):.2f} s ({max(seconds) / args.lease:.0%} of the lease)"
    )


if __name__ == "__main__":
    main()
