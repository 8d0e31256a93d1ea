"""Benchmark: detection to rollback, from the first event that breaks a guard to a stream-connected provider
serving the off variant: the breaking batch's commit triggers the evaluation of its rules (the alert tick, every
second here, stays as the safety net; `--tick-only` turns the trigger off to measure the tick alone).

Per backend: a fresh database with a generated definition of TRIALS flags, each with its own event type, one
production stage at 100% guarded by its own rule (`errors / requests > 3%` over 1m, at least 20 requests) and
automatic rollback. The control plane runs as its own process with its scheduler (alert evaluation every 1 s, the
configuration poll at its default 0.25 s, ingest-triggered evaluation at its defaults). A `ControlPlaneProvider` in
this process follows production over the stream. For each trial: start the flag's rollout, wait until the provider
serves `on`, then take the time and post one batch of 100 events with 10 errors (the first one that breaks the
guard), and poll the provider every millisecond until it serves `off`. Trials are spaced by a random 0-1 s so they
do not phase-lock to the tick. The delay runs from just before the POST (so it includes the ingest request itself);
`post_*` is the POST alone (until its acknowledgement), `ack_*` the delay from the acknowledgement.

    .venv/bin/python -m bench.detection [--trials 30] [--backends sqlite,postgresql] [--tick-only]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
import uuid
from collections.abc import Callable

import httpx
from litestar import Litestar
from openfeature import api
from openfeature.evaluation_context import EvaluationContext

from bench.ofrep_throughput import UNLIMITED, server_process
from bench.rollout_race import database, percentile, prepare_with_definition, print_results
from controlplane.api.roles import Role
from controlplane.app import create_app
from controlplane.db import utcnow
from controlplane.settings import Settings
from controlplane_client.provider import ControlPlaneProvider

CONTEXT = EvaluationContext(targeting_key="user-42")
TIMEOUT_SECONDS = 15.0


def create_scheduled_app() -> Litestar:
    """The uvicorn factory: the control plane as `CONTROLPLANE_*` configures it, with its scheduler."""
    return create_app(Settings.from_env())


def definition(trials: int) -> str:
    """TRIALS guarded flags, each with its own event type and rule."""
    lines = ["pipeline: bench-detection", "flags:"]
    for trial in range(trials):
        lines += [
            f"  - key: bench-flag-{trial}",
            "    type: boolean",
            '    variants: {"on": true, "off": false}',
            '    off_variant: "off"',
            '    rollout_variant: "on"',
            "    plan:",
            "      auto_rollback: true",
            "      environments:",
            f"        - {{environment: production, stages: [{{percentage: 100, guards: [bench-guard-{trial}]}}]}}",
        ]
    lines.append("events:")
    for trial in range(trials):
        lines.append(f"  - {{name: bench_request_{trial}, flag: bench-flag-{trial}, outcomes: [ok, error]}}")
    lines.append("rules:")
    for trial in range(trials):
        lines.append(
            f"  - {{name: bench-guard-{trial}, kind: ratio, event: bench_request_{trial}, "
            "numerator: {outcome: [error]}, op: '>', threshold: 0.03, window: 1m, min_samples: 20}"
        )
    return "\n".join(lines) + "\n"


def prepare(url: str, trials: int) -> dict[str, str]:
    """Migrate, apply the definition, create operator, ingest and evaluate tokens."""
    roles = [(Role.OPERATOR, None), (Role.INGEST, None), (Role.EVALUATE, "production")]
    return prepare_with_definition(url, definition(trials), roles)


def wait_until(provider: ControlPlaneProvider, flag: str, expected: bool, deadline: float) -> float | None:
    """Poll each millisecond until the provider serves ``expected``; the time it did, or None on timeout."""
    while time.perf_counter() < deadline:
        if provider.resolve_boolean_details(flag, not expected, CONTEXT).value is expected:
            return time.perf_counter()
        time.sleep(0.001)
    return None


def run(backend: str, trials: int, *, trigger: bool = True) -> dict[str, object]:
    """All trials on one backend."""
    delays: list[float] = []
    posts: list[float] = []
    after_ack: list[float] = []
    timeouts = 0
    jitter = random.Random(4)
    with database(backend) as url:
        tokens = prepare(url, trials)
        extra = {
            "CONTROLPLANE_SCHEDULER_ENABLED": "true",
            "CONTROLPLANE_ALERT_EVALUATION_SECONDS": "1",
            "CONTROLPLANE_INGEST_RATE_LIMIT_PER_SECOND": str(UNLIMITED),
            "CONTROLPLANE_ALERT_TRIGGER_ENABLED": "true" if trigger else "false",
        }
        with (
            server_process(url, extra, factory="bench.detection:create_scheduled_app") as base,
            httpx.Client(base_url=base, timeout=10) as http,
        ):
            provider = ControlPlaneProvider(base, tokens["evaluate"])
            api.set_provider_and_wait(provider, domain=f"detection-{backend}")
            try:
                for trial in range(trials):
                    flag = f"bench-flag-{trial}"
                    path = f"/api/v1/flags/{flag}/environments/production/rollout"
                    operator = {"Authorization": f"Bearer {tokens['operator']}"}
                    revision = http.get(path, headers=operator).json()["revision"]
                    started = http.post(
                        f"{path}/start",
                        headers=operator,
                        json={"expected_revision": revision},
                    )
                    started.raise_for_status()
                    if wait_until(provider, flag, True, time.perf_counter() + TIMEOUT_SECONDS) is None:
                        raise RuntimeError(f"{flag} never served on")
                    time.sleep(jitter.uniform(0, 1))
                    now = utcnow().isoformat()
                    events = [
                        {
                            "type": f"bench_request_{trial}",
                            "time": now,
                            "environment": "production",
                            "variant": "on",
                            "outcome": "error" if index < 10 else "ok",
                        }
                        for index in range(100)
                    ]
                    sent = time.perf_counter()
                    http.post(
                        "/api/v1/events",
                        headers={"Authorization": f"Bearer {tokens['ingest']}"},
                        json={"batch_id": f"det-{uuid.uuid4().hex}", "pipeline": "bench-detection", "events": events},
                    ).raise_for_status()
                    acked = time.perf_counter()
                    seen = wait_until(provider, flag, False, sent + TIMEOUT_SECONDS)
                    if seen is None:
                        timeouts += 1
                    else:
                        delays.append(seen - sent)
                        posts.append(acked - sent)
                        after_ack.append(seen - acked)
            finally:
                api.shutdown()
    return {
        "backend": backend,
        "trigger": trigger,
        "trials": trials,
        "timeouts": timeouts,
        "p50_s": _figure(statistics.median, delays),
        "p99_s": _figure(lambda values: percentile(values, 0.99), delays),
        "max_s": _figure(max, delays),
        "min_s": _figure(min, delays),
        "post_p50_s": _figure(statistics.median, posts),
        "post_max_s": _figure(max, posts),
        "ack_p50_s": _figure(statistics.median, after_ack),
        "ack_p99_s": _figure(lambda values: percentile(values, 0.99), after_ack),
    }


def _figure(statistic: Callable[[list[float]], float], values: list[float]) -> float | None:
    return round(statistic(values), 3) if values else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--tick-only", action="store_true", help="no ingest-triggered evaluation: the tick alone")
    args = parser.parse_args()
    results = [run(backend, args.trials, trigger=not args.tick_only) for backend in args.backends.split(",")]
    print_results(results)


if __name__ == "__main__":
    main()
