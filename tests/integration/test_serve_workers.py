"""`controlplane serve --workers N`: refused where it cannot work; on PostgreSQL, N worker processes that each answer,
each its own replica in the leader lease, each recycling keep-alive connections as the environment says."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import psycopg
import pytest

from controlplane.cli.server import worker_settings
from tests.integration.test_cli import run
from tests.integration.test_connection_recycling import get_over
from tests.processes import stop
from tests.prometheus_stack import free_port

REPLICA = "workers-test"
START_TIMEOUT_SECONDS = 60.0
#: uvicorn's lines, once per worker: before its app starts (with its process id), and once it serves.
STARTED = re.compile(r"Started server process \[(\d+)\]")
READY = "Application startup complete."


def test_serve_refuses_fewer_than_one_worker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CONTROLPLANE_DATABASE_URL", f"sqlite:///{tmp_path / 'never.db'}")

    code, out, err = run(capsys, "serve", "--workers", "0")

    assert code == 1 and out == ""
    assert "--workers must be 1 or more, got 0" in err
    assert not (tmp_path / "never.db").exists()  # refused before touching the database


def test_serve_refuses_several_workers_on_sqlite(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CONTROLPLANE_DATABASE_URL", f"sqlite:///{tmp_path / 'never.db'}")

    code, out, err = run(capsys, "serve", "--workers", "2")

    assert code == 1 and out == ""
    assert "--workers 2 needs PostgreSQL" in err and "CONTROLPLANE_DATABASE_URL" in err
    assert not (tmp_path / "never.db").exists()


def test_a_worker_appends_its_process_id_to_a_replica_id_set_in_the_environment() -> None:
    named = worker_settings({"CONTROLPLANE_REPLICA_ID": "pod-a"}, 4242)
    unnamed = worker_settings({}, 4242)

    assert named.replica_id == "pod-a-4242"
    # The default already names the process: host name and the worker's own process id.
    assert unnamed.replica_id == f"{os.uname().nodename}-{os.getpid()}"


def parent_of(pid: int) -> int:
    """The parent process id, from /proc (the field after the parenthesised command name and the state)."""
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def wait_for_workers(process: subprocess.Popen[bytes], log: Path, count: int) -> list[int]:
    """The process ids of ``count`` workers, once each has said it serves."""
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        text = log.read_text()
        workers = [int(pid) for pid in STARTED.findall(text)]
        if len(workers) >= count and text.count(READY) >= count:
            return workers
        if process.poll() is not None:
            raise AssertionError(f"serve exited with {process.returncode}:\n{text[-3000:]}")
        time.sleep(0.05)  # polling a real process's log, against the deadline above
    tail = log.read_text()[-3000:]
    raise AssertionError(f"{count} workers did not start within {START_TIMEOUT_SECONDS:g} s:\n{tail}")


@contextmanager
def paused(pids: list[int]) -> Iterator[None]:
    """``pids`` stopped (SIGSTOP) for the block: a connection made meanwhile can only be accepted by another process.
    Kept short: uvicorn's parent replaces a worker that does not answer its health check within 5 s."""
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)


def lease_holder(url: str) -> str | None:
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    with psycopg.connect(url.replace("+psycopg", ""), autocommit=True) as connection:
        while time.monotonic() < deadline:
            row = connection.execute("SELECT holder FROM leader_leases WHERE name = 'scheduler'").fetchone()
            if row is not None:
                return str(row[0])
            time.sleep(0.05)  # polling for the first lease, taken when a worker's scheduler starts
    return None


def test_serve_with_two_workers_on_postgresql_runs_two_processes_that_each_answer(
    postgres_url: str, tmp_path: Path
) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    environment = {key: value for key, value in os.environ.items() if not key.startswith("CONTROLPLANE_")}
    environment.update(
        {
            "CONTROLPLANE_DATABASE_URL": postgres_url,
            "CONTROLPLANE_PORT": str(port),
            "CONTROLPLANE_DEFINITIONS_DIR": str(tmp_path / "none"),
            "CONTROLPLANE_NOTIFICATIONS_FILE": str(tmp_path / "none.yaml"),
            "CONTROLPLANE_REPLICA_ID": REPLICA,
            "CONTROLPLANE_HTTP_MAX_REQUESTS_PER_CONNECTION": "2",
        }
    )
    log = tmp_path / "serve.log"
    with log.open("wb") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "controlplane.cli", "serve", "--workers", "2"],
            env=environment,
            stdout=subprocess.PIPE,
            stderr=stderr,
        )
    try:
        workers = wait_for_workers(process, log, 2)
        children = [parent_of(pid) for pid in workers]
        answers = {}
        for worker in workers:
            with paused([other for other in workers if other != worker]):
                answers[worker] = httpx.get(f"{base}/healthz", timeout=3).status_code
        with httpx.Client(base_url=base, timeout=10) as client:
            recycled = [get_over(client, "/healthz") for _ in range(3)]
        holder = lease_holder(postgres_url)
    finally:
        code = stop(process, 30)
        assert process.stdout is not None
        out = process.stdout.read().decode()
        process.stdout.close()

    assert len(set(workers)) == 2 and children == [process.pid, process.pid]
    assert answers == dict.fromkeys(workers, 200)  # each alone, the other stopped
    # The limit reached each worker through the environment: the second answer on a connection says close.
    assert [response.headers.get("connection") for response, _ in recycled] == [None, "close", None]
    assert recycled[0][1] == recycled[1][1] != recycled[2][1]
    # One lease among the workers, held under the replica id set in the environment plus the worker's process id.
    assert holder in {f"{REPLICA}-{pid}" for pid in workers}
    assert code == 0
    assert not any(Path(f"/proc/{pid}").exists() for pid in workers)
    # Bootstrap ran once, in the parent: one admin token printed, nothing else on stdout.
    assert re.fullmatch(r"cpt_\S+\n", out), out
    assert "Traceback" not in log.read_text()
