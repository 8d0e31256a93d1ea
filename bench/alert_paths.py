"""Benchmark: first bad event to rollback, through Prometheus + Alertmanager against the control plane's own path.

Both paths get the same scenario (tests/prometheus_loop.py): the reference-images definition applied, the
production rollout started, healthy upload traffic until Prometheus has scraped it, then batches of 100 upload
requests with 10% answered 5xx every 0.5 s until the rollout's status says `rolled_back`.

- **prometheus**: the control plane's own evaluation off. The real Debian Prometheus (scrape and evaluation every
  1 s, `--rules.alert.resend-delay=1s`) loads `alerts/*.rules.yml`; Alertmanager runs the shipped example
  (`group_wait` 1 s) with its webhook pointed at the control plane.
- **control plane**: the same served control plane with its scheduler on and alert evaluation every 1 s; Prometheus
  and Alertmanager still run (and scrape) but their webhook cannot win first.

Each trial gets a fresh SQLite database and fresh Prometheus and Alertmanager processes.

    .venv/bin/python -m bench.alert_paths [--trials 3]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from bench.rollout_race import percentile, print_results
from controlplane.db import create_db_engine
from controlplane.migrate import upgrade_to_head
from tests.conftest import serve_with_admin
from tests.prometheus_loop import loop_stack

PATHS: dict[str, dict[str, object]] = {
    "prometheus": {"scheduler_enabled": False},
    "control plane": {"scheduler_enabled": True, "alert_evaluation_seconds": 1.0},
}


def trial(changes: dict[str, object]) -> float:
    """One rollback on a fresh database and stack; seconds from the first bad event."""
    with tempfile.TemporaryDirectory() as folder:
        url = f"sqlite:///{Path(folder) / 'paths.db'}"
        engine = create_db_engine(url)
        upgrade_to_head(engine)
        engine.dispose()
        with serve_with_admin(url, **changes) as (base_url, admin), loop_stack(base_url, admin) as stack:
            stack.start_rollout()
            return stack.break_uploads_until_rolled_back(error_share=0.1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=3)
    args = parser.parse_args()
    results = []
    for path, changes in PATHS.items():
        seconds = sorted(trial(changes) for _ in range(args.trials))
        results.append(
            {
                "path": path,
                "trials": args.trials,
                "p50_s": round(percentile(seconds, 0.5), 2),
                "max_s": round(seconds[-1], 2),
                "min_s": round(seconds[0], 2),
            }
        )
    print_results(results)


if __name__ == "__main__":
    main()
