"""Benchmark: operators racing to advance the same rollout, over real HTTP, on SQLite and PostgreSQL.

For each backend: migrate a fresh database, apply the reference-images definition, complete QA and staging,
then repeat ROUNDS times: start production at 10%, fire RACERS concurrent `advance` requests carrying the same
revision, count 200s and 409s, roll back. Prints, per backend: outcome counts, request latency percentiles and
the time of one lone rollback request, so runs can be compared. Rate limits are lifted for the run.

    .venv/bin/python -m bench.rollout_race [--racers 50] [--rounds 5] [--backends sqlite,postgresql]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx
import psycopg
from sqlalchemy.orm import sessionmaker

from controlplane.api.roles import Role
from controlplane.app import create_app
from controlplane.auth import service as auth_service
from controlplane.auth.schemas import TokenCreate
from controlplane.db import create_db_engine, session_scope, utcnow
from controlplane.definitions.loader import parse_definition
from controlplane.definitions.service import apply_definition
from controlplane.embedded import serve_in_thread
from controlplane.migrate import upgrade_to_head
from controlplane.settings import Settings

FLAG = "enable-reference-images"
DEFINITION = Path(__file__).resolve().parent.parent / "definitions" / "reference-images.yaml"
POSTGRES_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


@contextmanager
def database(backend: str) -> Iterator[str]:
    """A fresh database URL on the backend, removed afterwards."""
    if backend == "sqlite":
        with tempfile.TemporaryDirectory() as folder:
            yield f"sqlite:///{folder}/bench.db"
        return
    name = f"cp_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(POSTGRES_ADMIN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect(POSTGRES_ADMIN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def prepare_with_definition(url: str, definition_text: str, roles: list[tuple[Role, str | None]]) -> dict[str, str]:
    """Migrate a fresh database, apply a definition, and create one token per (role, environment scope)."""
    engine = create_db_engine(url)
    upgrade_to_head(engine)
    environments = Settings().environments
    tokens = {}
    with session_scope(sessionmaker(engine, expire_on_commit=False)) as session:
        parsed = parse_definition(definition_text, source="bench.yaml", environments=environments)
        apply_definition(session, definition=parsed, actor="bench", environments=environments, now=utcnow())
        for role, scope in roles:
            tokens[role.value] = auth_service.create_token(
                session,
                request=TokenCreate(name=f"bench-{role.value}", role=role, environment=scope),
                actor="bench",
                environments=environments,
                now=utcnow(),
            ).token
    engine.dispose()
    return tokens


def print_results(results: list[dict[str, object]], **extra: object) -> None:
    """Print benchmark results as a table, one row per run, then the same as one JSON line."""
    columns = list(results[0])
    print(" | ".join(columns))
    for result in results:
        print(" | ".join(str(result[column]) for column in columns))
    print(json.dumps({**extra, "runs": results} if extra else results))


def percentile(values: list[float], share: float) -> float:
    """The value below which ``share`` of the sorted values fall."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def run_backend(backend: str, racers: int, rounds: int) -> None:
    """Run the race on one backend and print its figures."""
    with database(backend) as url:
        engine = create_db_engine(url)
        upgrade_to_head(engine)
        with session_scope(sessionmaker(engine, expire_on_commit=False)) as session:
            token = auth_service.create_token(
                session,
                request=TokenCreate(name="bench", role=Role.ADMIN),
                actor="bench",
                environments=Settings().environments,
                now=utcnow(),
            ).token
        settings = Settings(
            database_url=url,
            scheduler_enabled=False,
            rate_limit_per_minute=1_000_000,
            rate_limit_per_address_per_minute=1_000_000,
        )
        app = create_app(settings, engine=engine)
        headers = {"Authorization": f"Bearer {token}"}
        with serve_in_thread(app) as base_url, httpx.Client(base_url=base_url, headers=headers) as client:
            api = "/api/v1/flags/" + FLAG + "/environments/{env}/rollout"
            client.post("/api/v1/definitions/apply", json={"content": DEFINITION.read_text()}).raise_for_status()
            for env in ("qa", "staging"):
                for operation in ("start", "advance"):
                    revision = client.get(api.format(env=env)).json()["revision"]
                    body = {"expected_revision": revision, "reason": "bench"}
                    client.post(api.format(env=env) + "/" + operation, json=body).raise_for_status()
            production = api.format(env="production")
            outcomes: list[tuple[int, int]] = []
            latencies: list[float] = []
            sequential: list[float] = []
            for _ in range(rounds):
                revision = client.get(production).json()["revision"]
                client.post(production + "/start", json={"expected_revision": revision}).raise_for_status()
                revision = client.get(production).json()["revision"]
                barrier = threading.Barrier(racers)

                def race(_: int, revision: int = revision, barrier: threading.Barrier = barrier) -> int:
                    with httpx.Client(base_url=base_url, headers=headers, timeout=120) as racer:
                        barrier.wait()
                        started = time.perf_counter()
                        status = racer.post(
                            production + "/advance", json={"expected_revision": revision, "reason": "race"}
                        ).status_code
                        latencies.append(time.perf_counter() - started)
                        return status

                with ThreadPoolExecutor(racers) as pool:
                    statuses = list(pool.map(race, range(racers)))
                outcomes.append((statuses.count(200), statuses.count(409)))
                started = time.perf_counter()
                client.post(production + "/rollback", json={"reason": "bench round over"}).raise_for_status()
                sequential.append(time.perf_counter() - started)
        engine.dispose()
    won = sum(ok for ok, _ in outcomes)
    refused = sum(conflicts for _, conflicts in outcomes)
    print(
        f"{backend:10} rounds={rounds} racers={racers} successes={won} conflicts={refused} "
        f"(exactly one winner per round: {all(ok == 1 for ok, _ in outcomes)}) "
        f"race request p50={statistics.median(latencies) * 1000:.1f}ms p95={percentile(latencies, 0.95) * 1000:.1f}ms "
        f"max={max(latencies) * 1000:.1f}ms; lone rollback p50={statistics.median(sequential) * 1000:.1f}ms"
    )


def main() -> None:
    """Parse arguments and run every backend."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--racers", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--backends", default="sqlite,postgresql")
    args = parser.parse_args()
    for backend in args.backends.split(","):
        run_backend(backend.strip(), args.racers, args.rounds)


if __name__ == "__main__":
    main()
