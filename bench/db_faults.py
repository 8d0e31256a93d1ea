"""Benchmark: the control plane under light mixed traffic while its PostgreSQL is stopped, then frozen.

A private PostgreSQL cluster (``initdb`` and ``pg_ctl`` as the ``postgres`` user, on a free port) serves one
`controlplane serve` process with the shipped definitions. Five clients send, each every 0.1 s, one of: an OFREP
evaluation, a snapshot read, a management read (`GET /api/v1/flags`), an ingest batch of 10 events (each batch
with a new id) and a Prometheus scrape (`GET /metrics`). Timeline: 5 s healthy; the cluster stopped
(`pg_ctl stop -m fast`) for ``--stop`` seconds and started again; 5 s; every process of the cluster paused (SIGSTOP)
for ``--freeze`` seconds and resumed; 5 s.

Printed per phase and request kind: requests, status codes, p99 and max latency; how long after the database came
back the first management read succeeded; and whether every acknowledged ingest event is in the database.

    .venv/bin/python -m bench.db_faults [--stop 30] [--freeze 25]

Run as root: the cluster runs as the `postgres` user through runuser.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from collections import Counter, defaultdict
from pathlib import Path

from tests.faults.cluster import percentile, run_faults


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stop", type=float, default=30.0, help="seconds the cluster stays stopped")
    parser.add_argument("--freeze", type=float, default=25.0, help="seconds the cluster stays paused")
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="db-faults-"))
    try:
        run = run_faults(scratch, settle=5, stopped=args.stop, frozen=args.freeze)
        by: dict[tuple[str, str], list[tuple[str, float]]] = defaultdict(list)
        for phase, kind, outcome, elapsed, _ in run.seen:
            by[(phase, kind)].append((outcome, elapsed))
        print(f"{'phase':<13} {'kind':<9} {'requests':>8}  {'p99 s':>6} {'max s':>6}  statuses")
        for (phase, kind), rows in by.items():
            latencies = [elapsed for _, elapsed in rows]
            statuses = dict(Counter(outcome for outcome, _ in rows))
            p99, worst = percentile(latencies, 0.99), max(latencies)
            print(f"{phase:<13} {kind:<9} {len(rows):>8}  {p99:>6.2f} {worst:>6.2f}  {statuses}")
        recovered = [
            at - run.back
            for phase, kind, outcome, _, at in run.seen
            if kind == "admin" and outcome == "200" and at >= run.back
        ]
        print(
            f"first management 200 after the database came back: {min(recovered):.2f} s"
            if recovered
            else "never recovered"
        )
        # More stored than acknowledged is a batch answered 503 that committed later: a client's retry with the same
        # batch id counts it once. Fewer would be an acknowledged event lost.
        print(f"ingest events acknowledged {run.acknowledged}, in the database {run.stored}")
        print(f"500s anywhere: {sum(1 for row in run.seen if row[2] == '500')}")
    finally:
        for name in ("serve.log", "pg.log"):
            if (scratch / name).exists():
                shutil.copy(scratch / name, Path(tempfile.gettempdir()) / f"db-faults-{name}")
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
