"""Benchmark: how many log lines an idle `controlplane serve` writes, on stdout and on stderr.

One server on the default settings (SQLite in a fresh folder, the shipped definitions, every job at its default
interval) probed every 10 s with GET /healthz, /readyz and /metrics, as an orchestrator and Prometheus would, for
``--minutes``; then SIGTERM. Prints the lines on stdout (the goal: the first admin token only) and on stderr, split
into start-up, idle and shutdown, with the lines themselves when there are few. The goal is under 20 in all.

    .venv/bin/python -m bench.idle_logs [--minutes 10] [--probe-every 10] [--format text|json]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from tests.idle_server import PROBES, observe_idle_server

SHOWN = 40


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--probe-every", type=float, default=10.0, help="seconds between rounds of probes")
    parser.add_argument("--format", choices=["text", "json"], default="text", help="CONTROLPLANE_LOG_FORMAT")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="idle-logs-") as folder:
        log = observe_idle_server(
            Path(folder),
            seconds=args.minutes * 60,
            probe_every=args.probe_every,
            settings={"CONTROLPLANE_LOG_FORMAT": args.format},
        )
    stdout = log.stdout.splitlines()
    stderr = log.startup + log.idle + log.shutdown
    probed = f"{', '.join(PROBES)} every {args.probe_every:g} s"
    print(f"{args.minutes:g} min idle; {log.probes} probes answered 200 ({probed})")
    jobs = {
        line.split('job="', 1)[1].split('"', 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in log.metrics.splitlines()
        if line.startswith("controlplane_scheduler_job_runs_total{") and 'result="ok"' in line
    }
    print(f"job runs that went well (last scrape): {sum(jobs.values()):.0f} over {len(jobs)} jobs")
    only_token = len(stdout) == 1 and stdout[0].startswith("cpt_")
    print(f"stdout: {len(stdout)} lines ({'the token only' if only_token else 'more than the token'})")
    print(
        f"stderr: {len(stderr)} lines: start-up {len(log.startup)}, idle {len(log.idle)}, shutdown {len(log.shutdown)}"
    )
    print(f"total: {len(stdout) + len(stderr)} lines (goal: under 20)")
    if len(stderr) <= SHOWN:
        for line in stderr:
            print(f"  {line}")


if __name__ == "__main__":
    main()
