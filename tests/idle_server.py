"""An idle `controlplane serve` probed like an orchestrator and Prometheus probe it, and what it wrote.

The server runs as its own process in a fresh folder (the default SQLite file there, the repository's definitions
copied in as ``definitions/``), with stdout and stderr to files. Once it answers /readyz, every ``probe_every``
seconds it gets GET /healthz, /readyz and /metrics; after ``seconds`` it is stopped with SIGTERM. Shared by
``tests/integration/test_quiet_logs.py`` (seconds, fast jobs) and ``bench/idle_logs.py`` (minutes, defaults).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.processes import stop
from tests.prometheus_stack import free_port

__all__ = ["PROBES", "IdleLog", "observe_idle_server"]

REPO = Path(__file__).resolve().parents[1]
PROBES = ("/healthz", "/readyz", "/metrics")
START_TIMEOUT_SECONDS = 30.0


@dataclass(frozen=True, slots=True)
class IdleLog:
    """What the server wrote: stdout whole, stderr in three parts, and what it answered."""

    stdout: str
    startup: list[str]
    """stderr lines until it first answered /readyz."""
    idle: list[str]
    """stderr lines while it was probed."""
    shutdown: list[str]
    """stderr lines from SIGTERM to its exit."""
    probes: int
    """Probe requests answered 200 during the idle part."""
    metrics: str
    """The last /metrics scrape."""
    exit_code: int


def _lines(path: Path, start: int, end: int | None = None) -> list[str]:
    data = path.read_bytes()[start:end]
    return data.decode().splitlines()


def observe_idle_server(
    folder: Path,
    *,
    seconds: float,
    probe_every: float,
    settings: Mapping[str, str] | None = None,
    during: list[str] | None = None,
) -> IdleLog:
    """Run `controlplane serve` in ``folder`` with default settings (plus ``settings``), probe it for ``seconds``.

    ``during`` names extra paths requested once in the idle part (a request that should leave an access line)."""
    shutil.copytree(REPO / "definitions", folder / "definitions")
    port = free_port()
    # Default settings: no CONTROLPLANE_* from the caller's environment leaks in.
    environment = {key: value for key, value in os.environ.items() if not key.startswith("CONTROLPLANE_")}
    environment.update({"CONTROLPLANE_PORT": str(port), **(settings or {})})
    out_path, err_path = folder / "stdout.txt", folder / "stderr.txt"
    base = f"http://127.0.0.1:{port}"
    with out_path.open("wb") as out, err_path.open("wb") as err:
        process = subprocess.Popen(
            [sys.executable, "-m", "controlplane.cli", "serve"], cwd=folder, env=environment, stdout=out, stderr=err
        )
        try:
            with httpx.Client(base_url=base, timeout=5) as client:
                _wait_ready(client, process)
                idle_from = err_path.stat().st_size
                probes, metrics = 0, ""
                started = time.monotonic()
                next_probe = started
                for path in during or []:
                    client.get(path)
                while time.monotonic() - started < seconds:
                    for path in PROBES:
                        answer = client.get(path)
                        probes += answer.status_code == 200
                        if path == "/metrics":
                            metrics = answer.text
                    next_probe += probe_every
                    time.sleep(max(0.0, next_probe - time.monotonic()))  # the probe period, as a prober keeps it
                idle_to = err_path.stat().st_size
        finally:
            exit_code = stop(process, 30)
    return IdleLog(
        stdout=out_path.read_text(),
        startup=_lines(err_path, 0, idle_from),
        idle=_lines(err_path, idle_from, idle_to),
        shutdown=_lines(err_path, idle_to),
        probes=probes,
        metrics=metrics,
        exit_code=exit_code,
    )


def _wait_ready(client: httpx.Client, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"controlplane serve exited with {process.returncode} before it was ready")
        try:
            if client.get("/readyz").status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)  # waiting for a real process to bind its port
    raise RuntimeError(f"controlplane serve was not ready within {START_TIMEOUT_SECONDS:g} s")
