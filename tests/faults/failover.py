"""A leader killed: two `controlplane serve` replicas on one new PostgreSQL database, SIGKILL to the lease holder at a
random point between two renewals, and the seconds until the survivor's first leader-only job (its
`controlplane_scheduler_job_runs_total{job="evaluate_alert_rules",result="ok"}` grows). Shared by the fault test and
``bench.failover``.
"""

from __future__ import annotations

import os
import random
import re
import signal
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
from tests.faults.cluster import free_port

__all__ = ["fail_over", "job_runs", "replica"]

JOB = re.compile(r'^controlplane_scheduler_job_runs_total\{job="evaluate_alert_rules",result="ok"\} (\S+)$', re.M)


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
    process = subprocess.Popen(command, env=environment, stdout=log, stderr=subprocess.STDOUT)
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


def fail_over(lease: float, rng: random.Random) -> float:
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
