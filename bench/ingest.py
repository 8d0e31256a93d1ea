"""Benchmark: event ingest through HTTP in batches of 1,000, on SQLite and PostgreSQL, against the decode floor.

For each backend: migrate a fresh database, apply the reference-images definition, create an ingest token, start
the control plane as its own process (uvicorn, one worker, ingest rate limit lifted), and load
`POST /api/v1/events` with `wrk`: every request carries 1,000 events (upload requests, uploads, Vision checks,
spread over the last 10 seconds as an emitter flushing every few seconds sends them, so they fall in one or two
10-second windows and about 20 series) under its own batch id.
An answer is 200 only once the batch is committed; after the run the database must hold exactly
(acknowledged batches x 1,000) events, or the run is reported as broken. The floor is the same payload decoded
alone (msgspec into the wire types) in this process, and decoded + validated + aggregated (ingest's CPU work).

Scale out: `--workers 2` runs uvicorn with two worker processes; `--replicas 2` starts two separate server
processes on the same database and splits wrk's connections between them (one wrk per replica, run at the same
time); the figures are summed and the consistency check covers every replica's batches. Each run also reports the
CPU the server processes and PostgreSQL used per second of load, and how many transactions waited, on average, for
the write lock (`pg_locks`, sampled): where a single database saturates.

    .venv/bin/python -m bench.ingest [--duration 10] [--connections 16] [--backends sqlite,postgresql]
                                     [--workers 1,2] [--replicas 1,2]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import timedelta
from pathlib import Path

import psycopg
from litestar import Litestar
from sqlalchemy import func, select
from sqlalchemy.orm import sessionmaker

from bench.ofrep_throughput import UNLIMITED, server_process
from bench.rollout_race import POSTGRES_ADMIN, database, prepare_with_definition, print_results
from controlplane.api.roles import Role
from controlplane.app import create_app
from controlplane.catalog.events import Catalog
from controlplane.catalog.service import load_catalog
from controlplane.db import create_db_engine, session_scope, utcnow
from controlplane.settings import Settings
from controlplane.telemetry.aggregation import aggregate, decode_batch
from controlplane.telemetry.models import IngestedBatch, TelemetryWindow

DEFINITION = Path(__file__).resolve().parent.parent / "definitions" / "reference-images.yaml"
BATCH = 1000
PLACEHOLDER = "BATCH-ID-PLACEHOLDER"

LUA = """
local prefix = [[%(prefix)s]]
local suffix = [[%(suffix)s]]
local counter = 0
local thread_id = "0"

init = function(args)
  -- A table's address differs per thread's Lua state: batch ids stay unique across wrk threads.
  thread_id = string.gsub(tostring({}), "table: ", "")
end

request = function()
  counter = counter + 1
  local body = prefix .. "run-%(run)s-" .. thread_id .. "-" .. counter .. suffix
  return wrk.format("POST", "/api/v1/events", {
    ["Content-Type"] = "application/json",
    ["Authorization"] = "Bearer %(token)s",
  }, body)
end
"""


def events(count: int) -> list[dict[str, object]]:
    """A realistic mix of the reference-image pipeline's events over the last 10 seconds (an emitter's flush)."""
    now = utcnow()
    made: list[dict[str, object]] = []
    for index in range(count):
        at = (now - timedelta(seconds=index % 10, milliseconds=index % 1000)).isoformat()
        variant = "on" if index % 10 == 0 else "off"
        kind = index % 4
        if kind in (0, 1):
            status = "5xx" if index % 97 == 0 else ("4xx" if index % 31 == 0 else "2xx")
            made.append(
                {
                    "type": "http_request",
                    "time": at,
                    "environment": "production",
                    "variant": variant,
                    "labels": {"route": "upload_reference_image", "status_class": status},
                    "value": 0.05 + (index % 50) / 100,
                }
            )
        elif kind == 2:
            made.append(
                {
                    "type": "reference_image_upload",
                    "time": at,
                    "environment": "production",
                    "variant": variant,
                    "outcome": "success" if index % 13 else "rejected",
                    "labels": {"content_type": "image/png", "rejection_reason": "none"},
                    "value": 200_000 + index,
                }
            )
        else:
            made.append(
                {
                    "type": "vision_analysis",
                    "time": at,
                    "environment": "production",
                    "variant": variant,
                    "outcome": "ok" if index % 50 else "error",
                    "value": 0.3,
                }
            )
    return made


def body(batch_id: str) -> bytes:
    """One batch of BATCH events as JSON."""
    return json.dumps({"batch_id": batch_id, "pipeline": "reference-images", "events": events(BATCH)}).encode()


def prepare(url: str) -> str:
    """Migrate, apply the definition, and create an ingest token."""
    return prepare_with_definition(url, DEFINITION.read_text(), [(Role.INGEST, None)])["ingest"]


def reference_catalog() -> Catalog:
    """The event catalog of the reference-images definition, as a migrated database holds it (a throwaway one)."""
    with tempfile.TemporaryDirectory() as folder:
        url = f"sqlite:///{folder}/catalog.db"
        prepare(url)
        engine = create_db_engine(url)
        with session_scope(sessionmaker(engine)) as session:
            catalog = load_catalog(session)
        engine.dispose()
    return catalog


def floor(rounds: int) -> dict[str, float]:
    """Events per second for decoding alone, and for decode + validate + aggregate, in this process."""
    payload = body("floor-batch-0001")
    started = time.perf_counter()
    for _ in range(rounds):
        decode_batch(payload)
    decode_rate = rounds * BATCH / (time.perf_counter() - started)
    catalog = reference_catalog()
    settings = Settings()
    started = time.perf_counter()
    for _ in range(rounds):
        aggregate(
            decode_batch(payload),
            catalog,
            environments=settings.environments,
            now=utcnow(),
            max_age=settings.event_max_age,
            max_future=settings.event_max_future,
            window=settings.telemetry_window,
            tail_events={"vision_analysis": ()},
        )
    prepare_rate = rounds * BATCH / (time.perf_counter() - started)
    return {"decode_events_per_s": decode_rate, "decode_validate_aggregate_events_per_s": prepare_rate}


def parse_wrk(output: str) -> tuple[float, int, int, str]:
    """Requests/s, total requests, non-2xx responses and the latency line from wrk's output."""
    rate = float(next(line for line in output.splitlines() if line.startswith("Requests/sec:")).split()[1])
    total = int(next(line for line in output.splitlines() if "requests in" in line).split()[0])
    non_2xx = 0
    for line in output.splitlines():
        if "Non-2xx or 3xx responses:" in line:
            non_2xx = int(line.split(":")[1])
    latency = next((line.strip() for line in output.splitlines() if line.strip().startswith("Latency")), "")
    return rate, total, non_2xx, latency


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of one process (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _processes() -> list[tuple[int, int, str]]:
    """(pid, parent pid, command name) of every process."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                head, _, tail = (entry / "stat").read_text().partition(" (")
                name, _, rest = tail.rpartition(") ")
                found.append((int(head), int(rest.split()[1]), name))
            except OSError:
                continue
    return found


def _cpu_split() -> dict[str, float]:
    """CPU seconds so far of this benchmark's server processes (its descendants but wrk), each (``pid:N``) and in
    all (``server``), and of PostgreSQL's (``postgres``)."""
    processes = _processes()
    children: dict[int, list[int]] = {}
    for pid, parent, _ in processes:
        children.setdefault(parent, []).append(pid)
    names = {pid: name for pid, _, name in processes}
    servers, stack = [], list(children.get(os.getpid(), []))
    while stack:
        pid = stack.pop()
        if names.get(pid) != "wrk":
            servers.append(pid)
        stack.extend(children.get(pid, []))
    each = {f"pid:{pid}": _cpu_seconds(pid) for pid in servers}
    return {
        **each,
        "server": sum(each.values()),
        "postgres": sum(_cpu_seconds(pid) for pid, _, name in processes if name in ("postgres", "postmaster")),
    }


def _busiest_cores(before: dict[str, float], after: dict[str, float], seconds: int, count: int) -> list[float]:
    """CPU cores used during the run by the ``count`` busiest server processes (the workers and replicas that
    served; a uvicorn supervisor barely moves), busiest first: how evenly the load fell between them."""
    used = sorted(
        (after[key] - before.get(key, 0.0) for key in after if key.startswith("pid:")),
        reverse=True,
    )
    return [round(cpu / seconds, 2) for cpu in used[:count]]


@contextmanager
def _lock_waiters(backend: str) -> Iterator[list[int]]:
    """Sample, every 100 ms, how many transactions wait for a lock (the write lock, a row) on PostgreSQL."""
    samples: list[int] = []
    if backend != "postgresql":
        yield samples
        return
    stop = threading.Event()

    def sample() -> None:
        with psycopg.connect(POSTGRES_ADMIN, autocommit=True) as connection:
            while not stop.wait(0.1):
                row = connection.execute("SELECT count(*) FROM pg_locks WHERE NOT granted").fetchone()
                samples.append(int(row[0]) if row else 0)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield samples
    finally:
        stop.set()
        thread.join()


def create_scheduled_bench_app() -> Litestar:
    """The uvicorn factory of ``--scheduler``: as `controlplane serve` runs, its scheduler on (so the leader
    evaluates the rules each committed batch concerns), heap frozen."""
    return create_app(Settings.from_env(), freeze_heap=True)


def run(
    backend: str, wrk: str, seconds: int, connections: int, workers: int, replicas: int = 1, *, scheduler: bool = False
) -> dict[str, object]:
    """Load one backend (``replicas`` server processes of ``workers`` each, on one database) and check the
    acknowledged events are all in the database; ``scheduler``: the servers run their scheduler."""
    with database(backend) as url:
        token = prepare(url)
        sample = body(PLACEHOLDER).decode()
        prefix, suffix = sample.split(PLACEHOLDER)
        extra = {"CONTROLPLANE_INGEST_RATE_LIMIT_PER_SECOND": str(UNLIMITED)}
        factory = "bench.ofrep_throughput:create_bench_app"
        if scheduler:
            extra["CONTROLPLANE_SCHEDULER_ENABLED"] = "true"
            factory = "bench.ingest:create_scheduled_bench_app"
        with ExitStack() as stack, tempfile.TemporaryDirectory() as folder:
            bases = [stack.enter_context(server_process(url, extra, factory, workers=workers)) for _ in range(replicas)]
            threads = max(1, 2 // replicas)
            share = max(threads, connections // replicas)
            for phase, duration in (("warm", 3), ("run", seconds)):
                commands = []
                for number, base_url in enumerate(bases):
                    script = Path(folder) / f"ingest-{number}.lua"
                    run_id = f"{phase}-{uuid.uuid4().hex[:6]}"
                    script.write_text(LUA % {"prefix": prefix, "suffix": suffix, "token": token, "run": run_id})
                    commands.append(
                        [wrk, f"-t{threads}", f"-c{share}", f"-d{duration}s", "--latency", "-s", str(script), base_url]
                    )
                before = _cpu_split()
                with _lock_waiters(backend) as waiting:
                    loads = [
                        subprocess.Popen(command, stdout=subprocess.PIPE, text=True)  # noqa: S603 - wrk, our arguments
                        for command in commands
                    ]
                    outputs = [load.communicate()[0] for load in loads]
                after = _cpu_split()
                if any(load.returncode for load in loads):
                    raise RuntimeError(f"wrk failed: {outputs}")
            parsed = [parse_wrk(output) for output in outputs]
        engine = create_db_engine(url)
        with session_scope(sessionmaker(engine)) as session:
            batches = session.scalar(select(func.count()).select_from(IngestedBatch)) or 0
            stored = int(session.scalar(select(func.sum(TelemetryWindow.count))) or 0)
            measured = (
                session.scalar(
                    select(func.count()).select_from(IngestedBatch).where(IngestedBatch.batch_id.like("run-run-%"))
                )
                or 0
            )
            # A writing transaction stamps its batches with one received_at: distinct stamps count the transactions.
            transactions = (
                session.scalar(
                    select(func.count(func.distinct(IngestedBatch.received_at))).where(
                        IngestedBatch.batch_id.like("run-run-%")
                    )
                )
                or 0
            )
        engine.dispose()
    rate = sum(rate for rate, _, _, _ in parsed)
    return {
        "backend": backend,
        "scheduler": scheduler,
        "replicas": replicas,
        "workers": workers,
        "batches_per_s": round(rate, 1),
        "events_per_s": round(rate * BATCH),
        "committed_events_per_s": round(measured * BATCH / seconds),
        "requests": sum(total for _, total, _, _ in parsed),
        "non_2xx": sum(non_2xx for _, _, non_2xx, _ in parsed),
        "latency": " / ".join(latency for _, _, _, latency in parsed),
        # CPU cores busy during the measured run: every server process, and all of PostgreSQL (shared machine: other
        # databases' work counts too).
        "server_cores": round((after["server"] - before["server"]) / seconds, 2),
        # Each serving process's share: with several, one far below the others means the connections fell unevenly.
        "process_cores": _busiest_cores(before, after, seconds, replicas * workers),
        "postgres_cores": round((after["postgres"] - before["postgres"]) / seconds, 2),
        # Server CPU per acknowledged batch: steadier than the rate on a shared machine (compare old and new code).
        "server_ms_per_batch": round((after["server"] - before["server"]) * 1000 / max(1.0, rate * seconds), 2),
        # Batches recorded per writing transaction: the group commit's grouping under this load.
        "batches_per_transaction": round(measured / transactions, 2) if transactions else 0.0,
        "lock_waiters_avg": round(sum(waiting) / len(waiting), 2) if waiting else 0.0,
        "db_batches": batches,
        "db_events": stored,
        "consistent": stored == batches * BATCH,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--connections", type=int, default=16, help="wrk connections in all (split over replicas)")
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--floor-rounds", type=int, default=200)
    parser.add_argument("--workers", default="1", help="uvicorn worker processes to try, comma-separated")
    parser.add_argument(
        "--replicas", default="1", help="server processes on one database to try, comma-separated (wrk load split)"
    )
    parser.add_argument(
        "--scheduler",
        action="store_true",
        help="run the servers with their scheduler, as `controlplane serve` does: the leader evaluates the rules "
        "each committed batch concerns while the load runs",
    )
    args = parser.parse_args()
    wrk = shutil.which("wrk")
    if wrk is None:
        raise SystemExit("wrk is needed: apt-get install wrk")
    floors = floor(args.floor_rounds)
    print(
        f"floor: decode alone {floors['decode_events_per_s']:,.0f} events/s; decode + validate + aggregate "
        f"{floors['decode_validate_aggregate_events_per_s']:,.0f} events/s (one core, this process)"
    )
    results = [
        run(backend, wrk, args.duration, args.connections, int(workers), int(replicas), scheduler=args.scheduler)
        for backend in args.backends.split(",")
        for replicas in args.replicas.split(",")
        for workers in args.workers.split(",")
    ]
    print_results(results, floor=floors)


if __name__ == "__main__":
    main()
