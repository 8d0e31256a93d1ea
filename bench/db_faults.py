"""Benchmark: the control plane under light mixed traffic while its PostgreSQL is stopped, then frozen.

A private PostgreSQL cluster (``initdb`` and ``pg_ctl`` as the ``postgres`` user, on a free port) serves one
`controlplane serve` process with the shipped definitions. Four clients send, each every 0.1 s, one of: an OFREP
evaluation, a snapshot read, a management read (`GET /api/v1/flags`) and an ingest batch of 10 events (each batch
with a new id). Timeline: 5 s healthy; the cluster stopped (`pg_ctl stop -m fast`) for ``--stop`` seconds and
started again; 5 s; every process of the cluster paused (SIGSTOP) for ``--freeze`` seconds and resumed; 5 s.

Printed per phase and request kind: requests, status codes, p99 and max latency; how long after the database came
back the first management read succeeded; and whether every acknowledged ingest event is in the database.

    .venv/bin/python -m bench.db_faults [--stop 30] [--freeze 25]

Run as root: the cluster runs as the `postgres` user through runuser.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import httpx
import psycopg

REPO = Path(__file__).resolve().parent.parent
BIN = next(iter(sorted(Path("/usr/lib/postgresql").glob("*/bin"))), Path("/usr/bin"))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


RUNUSER = shutil.which("runuser") or "/usr/sbin/runuser"
PGREP = shutil.which("pgrep") or "/usr/bin/pgrep"


def as_postgres(*command: str, check: bool = True) -> None:
    """Run a PostgreSQL program as the ``postgres`` user (initdb and the server refuse to run as root)."""
    subprocess.run([RUNUSER, "-u", "postgres", "--", *command], check=check, capture_output=True)  # noqa: S603


@contextmanager
def cluster(folder: Path) -> Iterator[tuple[Path, int]]:
    """A private cluster in ``folder``; its data directory and port. Stopped and removed at the end."""
    data, port = folder / "data", free_port()
    folder.chmod(0o777)
    as_postgres(str(BIN / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres")
    start(data, port)
    try:
        yield data, port
    finally:
        as_postgres(str(BIN / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop", check=False)


def start(data: Path, port: int) -> None:
    options = f"-p {port} -k {data.parent} -c listen_addresses=127.0.0.1"
    as_postgres(str(BIN / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(data.parent / "pg.log"), "-w", "start")


def stop(data: Path) -> None:
    as_postgres(str(BIN / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop")


def cluster_pids(data: Path) -> list[int]:
    """The postmaster and every process it started."""
    postmaster = int((data / "postmaster.pid").read_text().split()[0])
    found = subprocess.run([PGREP, "-P", str(postmaster)], capture_output=True, text=True)  # noqa: S603
    children = found.stdout.split()
    return [postmaster, *map(int, children)]


@contextmanager
def control_plane(url: str, folder: Path) -> Iterator[tuple[str, str]]:
    """`controlplane serve` on the cluster; its base URL and the admin token it printed."""
    port = free_port()
    environment = {
        **os.environ,
        "CONTROLPLANE_DATABASE_URL": url,
        "CONTROLPLANE_PORT": str(port),
        "CONTROLPLANE_DEFINITIONS_DIR": str(REPO / "definitions"),
        "CONTROLPLANE_NOTIFICATIONS_FILE": str(folder / "none.yaml"),
    }
    log = (folder / "serve.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "controlplane.cli", "serve"], env=environment, stdout=subprocess.PIPE, stderr=log
    )
    assert process.stdout is not None
    token = process.stdout.readline().decode().strip()
    # Keep reading what it prints (uvicorn's access log goes to stdout): a pipe nobody drains fills up at 64 KiB,
    # and the server's event loop then blocks writing its next access line.
    stdout = process.stdout

    def drain() -> None:
        with contextlib.suppress(ValueError, OSError):  # the log is closed once the server has stopped
            shutil.copyfileobj(stdout, log)

    threading.Thread(target=drain, daemon=True).start()
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.1)  # waiting for the server to come up
        yield base, token
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


class Traffic:
    """Four clients and what they saw: (phase, kind, status or error, seconds)."""

    def __init__(self, base: str, admin: str, evaluate: str, ingest: str) -> None:
        self.base, self.phase, self.stopped = base, "healthy", threading.Event()
        self.headers = {"admin": admin, "evaluate": evaluate, "ingest": ingest}
        self.seen: list[tuple[str, str, str, float, float]] = []
        self.acknowledged = 0
        self.lock = threading.Lock()

    def client(self, kind: str) -> None:
        with httpx.Client(base_url=self.base, timeout=60) as http:
            while not self.stopped.is_set():
                started = time.monotonic()
                try:
                    response = self.send(http, kind)
                    outcome = str(response.status_code)
                except httpx.HTTPError as error:
                    outcome = type(error).__name__
                elapsed = time.monotonic() - started
                with self.lock:
                    self.seen.append((self.phase, kind, outcome, elapsed, time.monotonic()))
                time.sleep(0.1)  # light traffic: about ten requests a second per client

    def send(self, http: httpx.Client, kind: str) -> httpx.Response:
        bearer = {"Authorization": f"Bearer {self.headers['evaluate' if kind in ('ofrep', 'snapshot') else kind]}"}
        if kind == "ofrep":
            body = {"context": {"targetingKey": "user-1"}}
            return http.post("/ofrep/v1/evaluate/flags/enable-reference-images", headers=bearer, json=body)
        if kind == "snapshot":
            return http.get("/evaluation/v1/snapshot", headers=bearer)
        if kind == "admin":
            return http.get("/api/v1/flags", headers=bearer)
        now = datetime.now(UTC).isoformat()
        events = [
            {
                "type": "http_request",
                "time": now,
                "environment": "production",
                "variant": "off",
                "labels": {"route": "run_preflight", "status_class": "2xx"},
                "value": 0.1,
            }
        ] * 10
        batch = {"batch_id": f"b-{uuid.uuid4().hex}", "pipeline": "reference-images", "events": events}
        response = http.post("/api/v1/events", headers=bearer, json=batch)
        if response.status_code == 200:
            with self.lock:
                self.acknowledged += len(events)
        return response


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] if ordered else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stop", type=float, default=30.0, help="seconds the cluster stays stopped")
    parser.add_argument("--freeze", type=float, default=25.0, help="seconds the cluster stays paused")
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="db-faults-"))
    try:
        with cluster(scratch) as (data, port):
            url = f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
            with control_plane(url, scratch) as (base, admin):
                made = {}
                for role, env in (("evaluate", "production"), ("ingest", None)):
                    body = {"name": f"bench-{role}", "role": role, **({"environment": env} if env else {})}
                    created = httpx.post(
                        f"{base}/api/v1/tokens", headers={"Authorization": f"Bearer {admin}"}, json=body
                    )
                    made[role] = created.json()["token"]
                traffic = Traffic(base, admin, made["evaluate"], made["ingest"])
                threads = [
                    threading.Thread(target=traffic.client, args=(kind,))
                    for kind in ("ofrep", "snapshot", "admin", "ingest")
                ]
                for thread in threads:
                    thread.start()
                time.sleep(5)  # the benchmark's own timeline: healthy traffic first
                traffic.phase = "stopped"
                stop(data)
                time.sleep(args.stop)
                traffic.phase = "restarting"
                start(data, port)
                back = time.monotonic()
                traffic.phase = "after stop"
                time.sleep(5)
                traffic.phase = "frozen"
                pids = cluster_pids(data)
                for pid in pids:
                    os.kill(pid, signal.SIGSTOP)
                time.sleep(args.freeze)
                for pid in pids:
                    os.kill(pid, signal.SIGCONT)
                traffic.phase = "after freeze"
                time.sleep(5)
                traffic.stopped.set()
                for thread in threads:
                    thread.join(60)
            with psycopg.connect(f"postgresql://postgres@127.0.0.1:{port}/postgres") as connection:
                stored = connection.execute(
                    "SELECT coalesce(sum(count), 0) FROM telemetry_windows WHERE event = 'http_request' "
                    "AND environment = 'production'"
                ).fetchone()
        by: dict[tuple[str, str], list[tuple[str, float]]] = defaultdict(list)
        for phase, kind, outcome, elapsed, _ in traffic.seen:
            by[(phase, kind)].append((outcome, elapsed))
        print(f"{'phase':<13} {'kind':<9} {'requests':>8}  {'p99 s':>6} {'max s':>6}  statuses")
        for (phase, kind), rows in by.items():
            latencies = [elapsed for _, elapsed in rows]
            statuses = dict(Counter(outcome for outcome, _ in rows))
            p99, worst = percentile(latencies, 0.99), max(latencies)
            print(f"{phase:<13} {kind:<9} {len(rows):>8}  {p99:>6.2f} {worst:>6.2f}  {statuses}")
        recovered = [
            at - back
            for phase, kind, outcome, _, at in traffic.seen
            if kind == "admin" and outcome == "200" and at >= back
        ]
        print(
            f"first management 200 after the database came back: {min(recovered):.2f} s"
            if recovered
            else "never recovered"
        )
        # More stored than acknowledged is a batch answered 503 that committed later: a client's retry with the same
        # batch id counts it once. Fewer would be an acknowledged event lost.
        print(f"ingest events acknowledged {traffic.acknowledged}, in the database {stored[0] if stored else '?'}")
        print(f"500s anywhere: {sum(1 for row in traffic.seen if row[2] == '500')}")
    finally:
        for name in ("serve.log", "pg.log"):
            if (scratch / name).exists():
                shutil.copy(scratch / name, Path(tempfile.gettempdir()) / f"db-faults-{name}")
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
