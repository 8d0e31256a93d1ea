"""Benchmark: how often one client's failing uploads make a guard breach, by per-subject cap.

The guard is the shipped `upload-failure-rate` of definitions/reference-images.yaml (ratio of upload requests
answered 5xx > 3% over 5m at 99% confidence, at least 50 samples) with its `per_subject_cap` replaced by each cap
given (`none`: uncapped). Per trial: healthy uploads from many users (Poisson per 10-second window at `--rate` per
5 minutes, 1% failing) for `--warm-up` windows, then for 30 windows (5 minutes) one client sends 200 uploads the
service fails, spread evenly, then `--after` more healthy windows. The rule is stepped through the evaluator's own
path (``alerting.subjects.capped`` then ``assess``, the summed series and the windows one by one) just after each
window closes; a trial counts as rolled back when the guard is firing with a breaching measurement after the
warm-up. The same trials without the client give the healthy share. Seeds are fixed per rate and cap.

    .venv/bin/python -m bench.subject_caps [--trials 1000] [--rate 100,300,1000,3000] [--caps none,3,4,5,6,8,10]
"""

from __future__ import annotations

import argparse
import math
import random
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from controlplane.alerting.rules import AlertStatus, Series, assess, window_cutoff
from controlplane.alerting.subjects import SubjectCount, capped
from controlplane.catalog.rules import Rule
from controlplane.definitions.loader import load_definition
from controlplane.settings import Settings

DEFINITION = Path(__file__).resolve().parent.parent / "definitions" / "reference-images.yaml"
SIZE = timedelta(seconds=10)
ROUTE = "upload_reference_image"
CLIENT = "c" * 32
CLIENT_UPLOADS, CLIENT_WINDOWS = 200, 30


def _poisson(draw: random.Random, mean: float) -> int:
    if mean > 50:
        return max(0, round(draw.gauss(mean, math.sqrt(mean))))
    limit, count, product = math.exp(-mean), 0, draw.random()
    while product > limit:
        count += 1
        product *= draw.random()
    return count


def trial(draw: random.Random, rule: Rule, rate: float, *, client: bool, warm_up: int, after: int) -> bool:
    """One stage: True when the guard rolled it back after the warm-up."""
    start = datetime(2026, 12, 4, tzinfo=UTC)
    windows: list[Series] = []
    subjects: list[SubjectCount] = []
    status: AlertStatus | None = None
    sent = 0
    for number in range(warm_up + CLIENT_WINDOWS + after):
        at = start + number * SIZE
        uploads = _poisson(draw, rate / 30)
        failed = sum(draw.random() < 0.01 for _ in range(uploads))
        for status_class, count in (("2xx", uploads - failed), ("5xx", failed)):
            if count:
                windows.append(Series(at, "", "on", {"route": ROUTE, "status_class": status_class}, count))
        if client and warm_up <= number < warm_up + CLIENT_WINDOWS:
            due = (number - warm_up + 1) * CLIENT_UPLOADS // CLIENT_WINDOWS
            if due > sent:
                labels = {"route": ROUTE, "status_class": "5xx"}
                windows.append(Series(at, "", "on", labels, due - sent))
                subjects.append(SubjectCount(at, CLIENT, "", "on", labels, due - sent))
                sent = due
        now = at + SIZE + timedelta(seconds=1)
        cutoff = window_cutoff(now, rule.window, SIZE)
        current = [item for item in windows if cutoff <= item.start <= now]
        totals: dict[str, int] = {}
        for item in current:
            totals[item.labels["status_class"]] = totals.get(item.labels["status_class"], 0) + item.count
        summed = [Series(cutoff, "", "on", {"route": ROUTE, "status_class": key}, n) for key, n in totals.items()]
        counted = [item for item in subjects if cutoff <= item.start <= now]
        read_summed, read_windows = capped(rule, summed, current, counted, now, window_size=SIZE)
        measurement, status = assess(rule, status, read_summed, (), now, window_size=SIZE, windows=read_windows)
        if number >= warm_up and status.state.value == "firing" and measurement.breached:
            return True
        windows = [item for item in windows if item.start >= cutoff]
        subjects = [item for item in subjects if item.start >= cutoff]
    return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=1000)
    parser.add_argument("--rate", default="100,300,1000,3000", help="healthy uploads per 5 minutes")
    parser.add_argument("--caps", default="none,3,4,5,6,8,10")
    parser.add_argument("--warm-up", type=int, default=30, help="healthy windows before the client starts")
    parser.add_argument("--after", type=int, default=30, help="healthy windows after it stops")
    args = parser.parse_args()
    definition = load_definition(DEFINITION, environments=Settings().environments)
    shipped = next(rule for rule in definition.rules if rule.name == "upload-failure-rate")
    caps = [None if cap == "none" else int(cap) for cap in args.caps.split(",")]
    print(
        f"{args.trials} trials per cell: {shipped.name} ({shipped.condition(capped=False)}), one client's "
        f"{CLIENT_UPLOADS} failing uploads over 5 minutes; share of stages rolled back"
    )
    print(f"{'uploads/5m':>10} {'healthy':>8} " + " ".join(f"{'cap ' + str(cap or 'none'):>9}" for cap in caps))
    for rate in (float(value) for value in args.rate.split(",")):
        draw = random.Random(f"healthy-{rate}")
        healthy = sum(
            trial(draw, shipped, rate, client=False, warm_up=args.warm_up, after=args.after) for _ in range(args.trials)
        )
        shares = []
        for cap in caps:
            rule = replace(shipped, per_subject_cap=cap)
            draw = random.Random(f"client-{rate}-{cap}")
            rolled = sum(
                trial(draw, rule, rate, client=True, warm_up=args.warm_up, after=args.after) for _ in range(args.trials)
            )
            shares.append(f"{100 * rolled / args.trials:8.1f}%")
        print(f"{rate:>10g} {100 * healthy / args.trials:7.1f}% " + " ".join(shares), flush=True)


if __name__ == "__main__":
    main()
