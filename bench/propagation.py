"""Benchmark: how fast a configuration change reaches stream-connected in-process providers, SQLite and PostgreSQL.

Per backend: a fresh database (a temp SQLite file; a throwaway PostgreSQL database on 127.0.0.1:5432, dropped
afterwards) served by two uvicorn replicas, each its own process (production-like: `uvicorn` binds its own
socket; scheduler off, rate limits lifted). Two `ControlPlaneProvider`s follow production: one connected to
replica A, which takes the writes, and one to replica B, which learns of them from the database (PostgreSQL
LISTEN/NOTIFY; on SQLite only its revision poll, `configuration_poll_seconds` = 0.25 s by default).

Then CHANGES times, 20 ms plus a random 0-250 ms apart (so that changes do not phase-lock to a poll): flip the
flag's `enabled` in production through replica A's API (PATCH with If-Match) and, from the moment that call
returns, poll both providers' `resolve_boolean_details` every millisecond (bounded by a timeout) until each
returns the new value. Prints p50 / p99 / max per backend and replica, the timeouts,
and the PATCH round trip itself.

    .venv/bin/python -m bench.propagation [--changes 120] [--backends sqlite,postgresql] [--embedded]

`--embedded` serves both replicas with `controlplane.embedded.serve_in_thread` in this process instead.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field

import httpx
from openfeature import api
from openfeature.evaluation_context import EvaluationContext

from bench.evaluation import (
    FLAG,
    bench_settings,
    create_boolean_flag,
    environment_path,
    patch_environment,
    prepare_database,
)
from bench.ofrep_throughput import server_process
from bench.rollout_race import database, percentile
from controlplane.app import create_app
from controlplane.db import create_db_engine
from controlplane.embedded import serve_in_thread
from controlplane_client.provider import ControlPlaneProvider

POLL_SECONDS = 0.001
TIMEOUT_SECONDS = 5.0
PAUSE_SECONDS = 0.02
# A random extra pause, up to one SQLite poll period: without it the changes phase-lock to replica B's poll.
JITTER_SECONDS = 0.25
CONTEXT = EvaluationContext(targeting_key="user-00001", attributes={"tenant": "initech"})
REPLICAS = ("A (took the write)", "B (other replica)")


@dataclass(slots=True)
class Figures:
    """What one backend measured."""

    backend: str
    delays: dict[str, list[float]] = field(default_factory=lambda: {replica: [] for replica in REPLICAS})
    timeouts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(REPLICAS, 0))
    patch_seconds: list[float] = field(default_factory=list)


@contextmanager
def replicas(url: str, embedded: bool) -> Iterator[list[str]]:
    """Two replicas of the control plane on one database: yield their base URLs."""
    with ExitStack() as stack:
        if embedded:
            engine = create_db_engine(url)
            stack.callback(engine.dispose)
            apps = [create_app(bench_settings(url), engine=engine, run_scheduler=False) for _ in REPLICAS]
            bases = [stack.enter_context(serve_in_thread(app)) for app in apps]
        else:
            bases = [stack.enter_context(server_process(url)) for _ in REPLICAS]
        yield bases


def wait_for(providers: list[ControlPlaneProvider], expected: bool, started: float, figures: Figures) -> None:
    """Poll every provider each millisecond until it serves ``expected``; record each one's delay."""
    pending = dict(zip(REPLICAS, providers, strict=True))
    deadline = started + TIMEOUT_SECONDS
    while pending:
        now = time.perf_counter()
        for replica, provider in list(pending.items()):
            if provider.resolve_boolean_details(FLAG, not expected, CONTEXT).value is expected:
                figures.delays[replica].append(time.perf_counter() - started)
                del pending[replica]
        if now > deadline:
            for replica in pending:
                figures.timeouts[replica] += 1
            return
        if pending:
            time.sleep(POLL_SECONDS)


def run_backend(backend: str, changes: int, embedded: bool) -> Figures:
    """Measure one backend."""
    figures = Figures(backend)
    with database(backend) as url:
        tokens = prepare_database(url)
        with (
            replicas(url, embedded) as (writer, other),
            httpx.Client(base_url=writer, headers={"Authorization": f"Bearer {tokens.admin}"}) as admin,
        ):
            create_boolean_flag(admin)
            revision = int(admin.get(environment_path()).json()["revision"])
            # Disabled serves `off`; enabled serves the default variant, `on`: flipping `enabled` flips the value.
            revision = patch_environment(admin, revision, {"default_variant": "on"})
            providers = [ControlPlaneProvider(base, tokens.evaluate) for base in (writer, other)]
            for index, provider in enumerate(providers):
                api.set_provider_and_wait(provider, domain=f"{backend}-{index}")
            jitter = random.Random(20_000)
            try:
                enabled = False
                wait_for(providers, enabled, time.perf_counter(), Figures(backend))
                for _ in range(changes):
                    enabled = not enabled
                    sent = time.perf_counter()
                    revision = patch_environment(admin, revision, {"enabled": enabled})
                    returned = time.perf_counter()
                    figures.patch_seconds.append(returned - sent)
                    wait_for(providers, enabled, returned, figures)
                    time.sleep(PAUSE_SECONDS + jitter.uniform(0, JITTER_SECONDS))
            finally:
                api.shutdown()
    return figures


def milliseconds(values: list[float], share: float) -> str:
    """A percentile in ms, or a dash."""
    return f"{percentile(values, share) * 1000:8.1f}" if values else "       -"


def main() -> None:
    """Run every backend, print the table."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--changes", type=int, default=120)
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--embedded", action="store_true", help="serve the replicas in threads of this process")
    args = parser.parse_args()
    results = [run_backend(backend.strip(), args.changes, args.embedded) for backend in args.backends.split(",")]
    servers = "serve_in_thread, in this process" if args.embedded else "uvicorn processes"
    print(
        f"{args.changes} changes per backend; 2 replicas ({servers}); poll every {POLL_SECONDS * 1000:g} ms, "
        f"timeout {TIMEOUT_SECONDS:g} s; delay = PATCH returned -> provider serves the new value"
    )
    header = f"{'backend':11} {'provider on replica':20} {'n':>4} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}"
    print(header + f" {'timeouts':>8}")
    for figures in results:
        for replica in REPLICAS:
            delays = figures.delays[replica]
            print(
                f"{figures.backend:11} {replica:20} {len(delays):>4} {milliseconds(delays, 0.5)} "
                f"{milliseconds(delays, 0.99)} {max(delays, default=0) * 1000:8.1f} {figures.timeouts[replica]:>8}"
            )
        print(
            f"{figures.backend:11} {'(PATCH round trip)':20} {len(figures.patch_seconds):>4} "
            f"{statistics.median(figures.patch_seconds) * 1000:8.1f} {milliseconds(figures.patch_seconds, 0.99)} "
            f"{max(figures.patch_seconds) * 1000:8.1f}"
        )
    worst = max((percentile(f.delays[r], 0.99) for f in results for r in REPLICAS if f.delays[r]), default=0.0)
    missed = sum(sum(f.timeouts.values()) for f in results)
    verdict = "met" if worst < 1 and not missed else "MISSED"
    print(f"worst p99 {worst * 1000:.1f} ms, {missed} timeouts (target p99 < 1000 ms: {verdict})")


if __name__ == "__main__":
    main()
