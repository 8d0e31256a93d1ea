"""A private PostgreSQL cluster to break, a served control plane on it, and light mixed traffic against it: what the
fault tests and ``bench.db_faults`` share.

The cluster is ``initdb``/``pg_ctl`` run as the ``postgres`` user (they refuse root) on a free port, in a folder of
its own; it can be stopped, started and paused (SIGSTOP on every process of it) while the control plane serves.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import psycopg

from tests.processes import stop as stop_process

__all__ = [
    "FaultRun",
    "Traffic",
    "cluster",
    "cluster_available",
    "cluster_pids",
    "control_plane",
    "pause",
    "percentile",
    "resume",
    "run_faults",
    "start",
    "stop",
]

REPO = Path(__file__).resolve().parents[2]
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
    subprocess.run([RUNUSER, "-u", "postgres", "--", *command], check=check, capture_output=True)


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
    found = subprocess.run([PGREP, "-P", str(postmaster)], capture_output=True, text=True)
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
    # Keep reading what it prints: serve writes only the token on stdout (its log goes to stderr), but a pipe nobody
    # drains would block the server on 64 KiB of anything written there later.
    stdout = process.stdout

    def drain() -> None:
        with contextlib.suppress(ValueError, OSError):  # the log is closed once the server has stopped
            shutil.copyfileobj(stdout, log)

    drainer = threading.Thread(target=drain, daemon=True)
    drainer.start()
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
        stop_process(process, 15)
        drainer.join(5)  # the pipe ends with the process: the drain returns
        stdout.close()
        log.close()


class Traffic:
    """Five clients and what they saw: (phase when sent, kind, status or error, seconds, monotonic time answered)."""

    #: An OFREP evaluation, a snapshot read, a management read, an ingest batch of 10 events, a Prometheus scrape.
    KINDS = ("ofrep", "snapshot", "admin", "ingest", "metrics")

    def __init__(self, base: str, admin: str, evaluate: str, ingest: str) -> None:
        self.base, self.phase, self.stopped = base, "healthy", threading.Event()
        self.headers = {"admin": admin, "evaluate": evaluate, "ingest": ingest}
        self.seen: list[tuple[str, str, str, float, float]] = []
        self.acknowledged = 0
        self.lock = threading.Lock()

    def client(self, kind: str) -> None:
        with httpx.Client(base_url=self.base, timeout=60) as http:
            while not self.stopped.is_set():
                started, phase = time.monotonic(), self.phase  # a request belongs to the phase it was sent in
                try:
                    response = self.send(http, kind)
                    outcome = str(response.status_code)
                except httpx.HTTPError as error:
                    outcome = type(error).__name__
                elapsed = time.monotonic() - started
                with self.lock:
                    self.seen.append((phase, kind, outcome, elapsed, time.monotonic()))
                time.sleep(0.1)  # light traffic: about ten requests a second per client

    def send(self, http: httpx.Client, kind: str) -> httpx.Response:
        holder = "evaluate" if kind in ("ofrep", "snapshot") else "admin" if kind == "metrics" else kind
        bearer = {"Authorization": f"Bearer {self.headers[holder]}"}
        if kind == "ofrep":
            body = {"context": {"targetingKey": "user-1"}}
            return http.post("/ofrep/v1/evaluate/flags/enable-reference-images", headers=bearer, json=body)
        if kind == "snapshot":
            return http.get("/evaluation/v1/snapshot", headers=bearer)
        if kind == "admin":
            return http.get("/api/v1/flags", headers=bearer)
        if kind == "metrics":
            return http.get("/metrics")
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


def pause(data: Path) -> list[int]:
    """Freeze the cluster: SIGSTOP to the postmaster and every process it started; the pids, for ``resume``."""
    pids = cluster_pids(data)
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    return pids


def resume(pids: list[int]) -> None:
    """Let a paused cluster run again."""
    for pid in pids:
        os.kill(pid, signal.SIGCONT)


def cluster_available() -> str | None:
    """Why a private cluster cannot be run here (None: it can): the PostgreSQL programs, runuser and the
    ``postgres`` user are needed, and root to switch to it."""
    if not (BIN / "initdb").exists() or not (BIN / "pg_ctl").exists():
        return f"PostgreSQL's initdb and pg_ctl (looked in {BIN})"
    if shutil.which("runuser") is None or os.geteuid() != 0:
        return "runuser, as root (initdb and the server refuse to run as root themselves)"
    try:
        import pwd

        pwd.getpwnam("postgres")
    except KeyError:
        return "a `postgres` user"
    return None


@dataclass(frozen=True, slots=True)
class FaultRun:
    """What a ``run_faults`` scenario saw: every request (``Traffic.seen``), when the database came back (monotonic),
    the ingest events acknowledged and those stored."""

    seen: list[tuple[str, str, str, float, float]]
    back: float
    acknowledged: int
    stored: int


def run_faults(folder: Path, *, settle: float, stopped: float, frozen: float) -> FaultRun:
    """The whole scenario: a cluster and a served control plane in ``folder``, five clients, then ``settle`` s of
    healthy traffic, the cluster stopped for ``stopped`` s and started, ``settle`` s, paused for ``frozen`` s and
    resumed, ``settle`` s. Each request counts in the phase it was sent in."""
    with cluster(folder) as (data, port):
        with control_plane(f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres", folder) as (base, admin):
            made = {}
            for role, environment in (("evaluate", "production"), ("ingest", None)):
                body = {"name": f"fault-{role}", "role": role, **({"environment": environment} if environment else {})}
                created = httpx.post(f"{base}/api/v1/tokens", headers={"Authorization": f"Bearer {admin}"}, json=body)
                if created.status_code != 201:
                    raise RuntimeError(f"cannot make the {role} token: {created.text}")
                made[role] = created.json()["token"]
            traffic = Traffic(base, admin, made["evaluate"], made["ingest"])
            clients = [threading.Thread(target=traffic.client, args=(kind,)) for kind in Traffic.KINDS]
            for client in clients:
                client.start()
            try:
                time.sleep(settle)  # the scenario's own timeline, as an operator would live it: traffic first
                traffic.phase = "stopped"
                stop(data)
                time.sleep(stopped)
                traffic.phase = "restarting"
                start(data, port)
                back = time.monotonic()
                traffic.phase = "after stop"
                time.sleep(settle)
                traffic.phase = "frozen"
                paused = pause(data)
                time.sleep(frozen)
                resume(paused)
                traffic.phase = "after freeze"
                time.sleep(settle)
            finally:
                traffic.stopped.set()
                for client in clients:
                    client.join(90)
        with psycopg.connect(f"postgresql://postgres@127.0.0.1:{port}/postgres") as connection:
            row = connection.execute(
                "SELECT coalesce(sum(count), 0) FROM telemetry_windows WHERE event = 'http_request'"
            ).fetchone()
    return FaultRun(traffic.seen, back, traffic.acknowledged, int(row[0]) if row else 0)
