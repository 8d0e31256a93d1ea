"""Benchmark: wall and CPU time of `controlplane guards simulate` for one scenario of a stage's guards.

By default the guards of production stage 1 in definitions/reference-images.yaml, as shipped (what `guards simulate
definitions/reference-images.yaml --env production --stage 1` runs), one scenario per `--rate`: healthy at
`--healthy` (default 1%), a regression to 6% from `--onset` (default 600 s), `--trials` one-hour trials (default
2,000) of each, so twice that many stage-hours, evaluated every 2 s on `--workers` processes (default 2). For each
rate it prints the wall time, the CPU time of the worker processes and the stage's figures: a faster version of the
simulator must print the same figures for the same seed.

`--guard NAME` (repeatable) times those rules of the definition instead. `--unskipped` also times evaluating every
2 s (no skipping of evaluations whose inputs did not change), which takes several times longer.

    .venv/bin/python -m bench.guards_simulate [--rate 100,300,1000,3000] [--healthy 0.01] [--onset 600]
        [--trials 2000] [--workers 2] [--guard upload-failure-rate] [--unskipped]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from controlplane.alerting.simulation import Guard, Scenario, StageOutcome, Traffic, guard_for, simulate
from controlplane.definitions.loader import load_definition
from controlplane.settings import Settings

DEFINITION = Path(__file__).resolve().parent.parent / "definitions" / "reference-images.yaml"


def stage_guards(names: list[str] | None) -> tuple[str, tuple[Guard, ...]]:
    """What to time, in words, and the guards: ``names`` of the definition, or production stage 1's guards."""
    definition = load_definition(DEFINITION, environments=Settings().environments)
    (flag,) = [flag for flag in definition.flags if flag.plan is not None]
    assert flag.plan is not None
    if names is None:
        (production,) = [step for step in flag.plan.environments if step.environment == "production"]
        names = list(production.stages[0].guards)
        shown = f"production stage 1 ({', '.join(names)})"
    else:
        shown = ", ".join(names)
    rules = {rule.name: rule for rule in definition.rules}
    events = {event.name: event for event in definition.events}
    guards = tuple(
        guard_for(
            rules[name],
            events.get(rules[name].event),
            canary_variant=flag.rollout_variant or "on",
            baseline_variant=flag.off_variant,
        )
        for name in names
    )
    return shown, guards


def timed(scenario: Scenario, trials: int, workers: int, skip: bool) -> tuple[float, float, StageOutcome]:
    """Wall seconds, CPU seconds (this process and its finished worker processes) and the figures of one run."""
    started, before = time.perf_counter(), os.times()
    (outcome,) = simulate([scenario], trials=trials, seed=1, workers=workers, skip_unchanged=skip)
    wall, after = time.perf_counter() - started, os.times()
    cpu = sum(after[:4]) - sum(before[:4])  # user and system, of this process and of its reaped children
    return wall, cpu, outcome


def figures(outcome: StageOutcome) -> str:
    """The stage's figures, to compare between versions."""
    (detection,) = outcome.stage.detections
    delay = "-" if detection.median_delay is None else f"{detection.median_delay:g} s"
    return f"{outcome.stage.healthy_rolled_back:.2%} / {detection.caught:.1%} / {delay}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", default="100,300,1000,3000", help="canary events per 5 minutes, comma-separated")
    parser.add_argument("--healthy", type=float, default=0.01, help="healthy share of bad events")
    parser.add_argument("--onset", type=float, default=600.0, help="regression onset, seconds from the start")
    parser.add_argument("--trials", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--guard", action="append", help="a rule of reference-images.yaml (default: stage 1's)")
    parser.add_argument("--unskipped", action="store_true", help="also time evaluating every 2 s")
    args = parser.parse_args()
    shown, guards = stage_guards(args.guard)
    print(
        f"{shown}: {args.trials} healthy one-hour trials and {args.trials} regressed to 6% from {args.onset:g} s "
        f"per rate, evaluated every 2 s, {args.workers} workers, {os.cpu_count()} CPUs"
    )
    print(f"{'rate /5m':>8} {'skipping':>8} {'wall s':>7} {'CPU s':>7}  healthy rolled back / caught / median delay")
    for rate in (float(part) for part in args.rate.split(",") if part.strip()):
        traffic = Traffic(rate=rate, healthy=args.healthy, regressed=0.06)
        scenario = Scenario(guards, traffic, (args.onset,))
        for skip in (True, False) if args.unskipped else (True,):
            wall, cpu, outcome = timed(scenario, args.trials, args.workers, skip)
            shown_skip = "on" if skip else "off"
            print(f"{rate:>8g} {shown_skip:>8} {wall:>7.1f} {cpu:>7.1f}  {figures(outcome)}", flush=True)


if __name__ == "__main__":
    main()
