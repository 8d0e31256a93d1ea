"""Benchmark: one alert evaluation tick with 1,000 rules over a day of 10-second windows.

For each backend: migrate a fresh database, apply a generated definition (5 event types, 1,000 rules of every
kind: ratio, rate, mean with `for`, streak, cohort), fill a day of windows (8,640 windows per series; 80 series),
then time `evaluate_alerts` (the whole tick: SQL aggregation, tails, states, transitions, commit) several times.
The first tick writes a state row for every alert; later ticks write only what changed.

    .venv/bin/python -m bench.alert_tick [--rules 1000] [--hours 24] [--backends sqlite,postgresql]
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, insert, select
from sqlalchemy.orm import sessionmaker

from bench.rollout_race import database, print_results
from controlplane.alerting.evaluation import EvaluationCache
from controlplane.db import create_db_engine, session_scope
from controlplane.definitions.loader import parse_definition
from controlplane.definitions.service import apply_definition
from controlplane.guarding.evaluation import evaluate_alerts
from controlplane.migrate import upgrade_to_head
from controlplane.notifications.config import NotificationConfig
from controlplane.settings import Settings
from controlplane.telemetry.aggregation import labels_key
from controlplane.telemetry.models import EventTail, TelemetryWindow

EVENTS = [f"bench_op_{index}" for index in range(5)]
ENVIRONMENTS = ("production", "staging")
NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def definition(rules: int, scope: str = "") -> str:
    """A pipeline with 5 event types and ``rules`` rules cycling through every kind (in ``scope`` if given)."""
    lines = [
        "pipeline: bench-alerts",
        "flags:",
        '  - {key: bench-flag, type: boolean, variants: {"on": true, "off": false}, off_variant: "off",',
        '     rollout_variant: "on"}',
        "events:",
    ]
    for event in EVENTS:
        lines.append(
            f"  - {{name: {event}, outcomes: [ok, error], labels: {{route: {{values: [a, b]}}}}, "
            "value: {name: duration, unit: seconds}}"
        )
    lines.append("rules:")
    kinds = itertools.cycle(["ratio", "rate", "mean", "streak", "cohort"])
    windows = itertools.cycle(["1m", "5m", "15m", "1h"])
    for index in range(rules):
        kind, event, window = next(kinds), EVENTS[index % len(EVENTS)], next(windows)
        where = f"environments: [{scope}], " if scope else ""
        base = f"  - {{name: rule-{index}, event: {event}, kind: {kind}, {where}"
        if kind == "ratio":
            body = (
                f"numerator: {{outcome: [error]}}, op: '>', threshold: 0.{index % 9 + 1}, window: {window}, "
                "min_samples: 10"
            )
        elif kind == "rate":
            body = f"where: {{outcome: [error]}}, per: 1m, op: '>', threshold: {index % 50 + 5}, window: {window}"
        elif kind == "mean":
            body = f"op: '>', threshold: {index % 5 + 1}, window: 1m, for: 5m, min_samples: 5"
        elif kind == "streak":
            body = f"outcome: error, op: '>=', threshold: {index % 5 + 3}, window: 0"
        else:
            body = (
                f"numerator: {{outcome: [error]}}, flag: bench-flag, op: '>', threshold: 0.05, window: {window}, "
                "min_samples: 20"
            )
        lines.append(base + body + "}")
    return "\n".join(lines) + "\n"


def fill(factory: sessionmaker, hours: int) -> int:  # type: ignore[type-arg]
    """A day (``hours``) of windows for every series, plus event tails; return the rows written."""
    starts = [NOW - timedelta(seconds=10 * step) for step in range(hours * 360)]
    series = list(itertools.product(EVENTS, ENVIRONMENTS, ("on", "off"), ("ok", "error"), ("a", "b")))
    written = 0
    batch: list[dict[str, object]] = []
    with session_scope(factory) as session:
        for start in starts:
            for event, environment, variant, outcome, route in series:
                count = 20 if outcome == "ok" else 1
                batch.append(
                    {
                        "window_start": start,
                        "pipeline": "bench-alerts",
                        "event": event,
                        "environment": environment,
                        "variant": variant,
                        "outcome": outcome,
                        "labels_key": labels_key({"route": route}),
                        "count": count,
                        "value_count": count,
                        "value_sum": 0.3 * count,
                        "value_min": 0.1,
                        "value_max": 0.9,
                        "buckets": [0] * 15,
                        "totals": None,
                    }
                )
            if len(batch) >= 20_000:
                session.execute(insert(TelemetryWindow), batch)
                written += len(batch)
                batch = []
        if batch:
            session.execute(insert(TelemetryWindow), batch)
            written += len(batch)
        for event, environment in itertools.product(EVENTS, ENVIRONMENTS):
            tail = [
                [(NOW - timedelta(seconds=i)).isoformat(), "ok" if i % 7 else "error", "on", {"route": "a"}]
                for i in range(64, 0, -1)
            ]
            session.add(
                EventTail(pipeline="bench-alerts", event=event, environment=environment, events=tail, updated_at=NOW)
            )
    return written


def run(backend: str, rules: int, hours: int, ticks: int, scope: str) -> dict[str, object]:
    """Fill one backend and time the ticks."""
    with database(backend) as url:
        engine = create_db_engine(url)
        upgrade_to_head(engine)
        factory = sessionmaker(engine, expire_on_commit=False)
        settings = Settings(database_url=url)
        parsed = parse_definition(definition(rules, scope), source="bench.yaml", environments=settings.environments)
        with session_scope(factory) as session:
            apply_definition(session, definition=parsed, actor="bench", environments=settings.environments, now=NOW)
        started = time.perf_counter()
        rows = fill(factory, hours)
        fill_seconds = time.perf_counter() - started
        with session_scope(factory) as session:
            assert session.scalar(select(func.count()).select_from(TelemetryWindow)) == rows
        durations = []
        evaluations = []
        cache = EvaluationCache()  # as the scheduler's job keeps one between ticks
        for tick in range(ticks):
            started = time.perf_counter()
            with session_scope(factory) as session:
                evaluation = evaluate_alerts(
                    session,
                    environments=settings.environments,
                    now=NOW + timedelta(seconds=tick),
                    notifications=NotificationConfig(),
                    cache=cache,
                )
            durations.append(time.perf_counter() - started)
            evaluations.append(evaluation)
        engine.dispose()
    first = evaluations[0]
    return {
        "backend": backend,
        "rules": first.rules,
        "alerts": first.alerts,
        "rows": rows,
        "fill_s": round(fill_seconds, 1),
        "first_tick_ms": round(durations[0] * 1000, 1),
        "later_ticks_ms_median": round(statistics.median(durations[1:]) * 1000, 1) if ticks > 1 else None,
        "later_ticks_ms_max": round(max(durations[1:]) * 1000, 1) if ticks > 1 else None,
        "firing": first.firing,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rules", type=int, default=1000)
    parser.add_argument("--hours", type=int, default=24)
    parser.add_argument("--ticks", type=int, default=6)
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument(
        "--scope", default="", help="evaluate every rule only in this environment (default: all four environments)"
    )
    args = parser.parse_args()
    results = [run(backend, args.rules, args.hours, args.ticks, args.scope) for backend in args.backends.split(",")]
    print_results(results)


if __name__ == "__main__":
    main()
