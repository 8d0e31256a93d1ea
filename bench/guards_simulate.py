"""Benchmark: wall time of `controlplane guards simulate`'s core, 2,000 one-hour trials of one guard.

The guard is the shipped `upload-error-rate` of definitions/reference-images.yaml (ratio of upload requests
answered 4xx/5xx > 3% over 5m, at least 50 samples), its canary at 100 events per 5 minutes, evaluated every 2 s
(1,800 evaluations per trial when nothing rolls back). Two traffic cases:

- `healthy 1%`: what an SRE runs; most trials roll back early (that is the finding), so they are cheap.
- `full hours`: healthy 0%, nothing ever rolls back, every trial runs its 1,800 evaluations: the worst case.

Each case is timed with 1 worker and with `--workers` (default: one per CPU), with skipping of unchanged
evaluations on and off (`off` evaluates every 2 s); each figure is the best of `--rounds`.

`--guard` times another rule of the definition instead (a sequential one costs more per evaluation: the engine
weighs its windows every time).

    .venv/bin/python -m bench.guards_simulate [--guard upload-error-rate] [--trials 2000] [--rate 100] [--workers N]
        [--rounds 1]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from controlplane.alerting.simulation import Scenario, Traffic, guard_for, simulate
from controlplane.definitions.loader import load_definition
from controlplane.settings import Settings

DEFINITION = Path(__file__).resolve().parent.parent / "definitions" / "reference-images.yaml"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--guard", default="upload-error-rate", help="the rule of reference-images.yaml to simulate")
    parser.add_argument("--trials", type=int, default=2000)
    parser.add_argument("--rate", type=float, default=100.0, help="canary events per 5 minutes")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    definition = load_definition(DEFINITION, environments=Settings().environments)
    rule = next(rule for rule in definition.rules if rule.name == args.guard)
    event = next(event for event in definition.events if event.name == rule.event)
    guard = guard_for(rule, event)
    print(f"{args.trials} one-hour trials of {rule.name} at {args.rate:g} events/5 min, {os.cpu_count()} CPUs")
    print(f"{'case':<14} {'workers':>7} {'skipping':>8} {'seconds':>8} {'rolled back':>11}")
    for case, healthy in (("healthy 1%", 0.01), ("full hours", 0.0)):
        scenario = Scenario((guard,), Traffic(rate=args.rate, healthy=healthy, regressed=0.06), onsets=())
        for workers in sorted({1, args.workers}):
            for skipping in (True, False):
                best = float("inf")
                for _ in range(args.rounds):
                    started = time.perf_counter()
                    (outcome,) = simulate(
                        [scenario], trials=args.trials, seed=1, workers=workers, skip_unchanged=skipping
                    )
                    best = min(best, time.perf_counter() - started)
                shown = "on" if skipping else "off"
                rolled_back = f"{outcome.stage.healthy_rolled_back:.1%}"
                print(f"{case:<14} {workers:>7} {shown:>8} {best:>8.1f} {rolled_back:>11}")


if __name__ == "__main__":
    main()
