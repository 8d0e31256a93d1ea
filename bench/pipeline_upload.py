"""Benchmark: upload requests/s with the flag check and the emitter in place, against the same endpoint with both
disabled.

A control plane is served in this process (SQLite, the reference-images definition applied, production rolled to
100% so every upload is accepted). The pipeline runs in a process of its own (`bench.pipeline_server`, its bucket
in memory, a real V4 signature per upload), once per mode, rounds alternating which goes first:

- `with`: the flag decided per request through OpenFeature and the in-process provider (snapshot synced from the
  control plane), and every upload's events (upload, Vision, http_request) queued to the emitter, which batches
  them to the control plane in the background;
- `without`: a fixed "on" and no emitter.

`wrk` posts the same multipart upload (a 64x64 JPEG, one user id) for `--duration` seconds over
`--connections` connections. Each upload is fully checked (decode, Vision heuristics) and signed; those dominate.

    .venv/bin/python -m bench.pipeline_upload [--duration 10] [--connections 8] [--rounds 2]
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import httpx
from PIL import Image
from sqlalchemy.orm import sessionmaker

from bench.ingest import parse_wrk
from bench.rollout_race import print_results
from controlplane.api.roles import Role
from controlplane.auth import service as auth_service
from controlplane.auth.schemas import TokenCreate
from controlplane.db import create_db_engine, session_scope
from controlplane.migrate import upgrade_to_head
from pipeline.local_control_plane import complete_rollout, free_port
from tests.conftest import REPO_ROOT, serve_with_admin

BOUNDARY = "benchboundary7d2f"
LUA = """
local f = io.open("%(body)s", "rb")
local body = f:read("*a")
f:close()
wrk.method = "POST"
wrk.path = "/upload/reference-image"
wrk.body = body
wrk.headers["Content-Type"] = "multipart/form-data; boundary=%(boundary)s"
"""


def upload_body() -> bytes:
    """One multipart upload: a small real JPEG, role character, a user id."""
    image = io.BytesIO()
    Image.effect_noise((64, 64), 40).convert("RGB").save(image, "JPEG")
    parts = [
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="role"\r\n\r\ncharacter\r\n'.encode(),
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="user_id"\r\n\r\nbench-user\r\n'.encode(),
        (
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="ref.jpg"\r\n'
            "Content-Type: image/jpeg\r\n\r\n"
        ).encode()
        + image.getvalue()
        + b"\r\n",
        f"--{BOUNDARY}--\r\n".encode(),
    ]
    return b"".join(parts)


@contextmanager
def control_plane(folder: Path) -> Iterator[tuple[str, str, str]]:
    """A served control plane with the flag at 100% in production; its URL, an evaluate and an ingest token."""
    url = f"sqlite:///{folder / 'controlplane.db'}"
    engine = create_db_engine(url)
    upgrade_to_head(engine)
    with session_scope(sessionmaker(engine, expire_on_commit=False)) as session:
        tokens = [
            auth_service.create_token(
                session,
                request=TokenCreate(name=f"bench-{role.value}", role=role, environment=environment),
                actor="bench",
                environments=("dev", "qa", "staging", "production"),
                now=datetime.now(UTC),
            ).token
            for role, environment in ((Role.EVALUATE, "production"), (Role.INGEST, None))
        ]
    engine.dispose()
    with serve_with_admin(url, ingest_rate_limit_per_second=100_000) as (base, headers):
        definition = (REPO_ROOT / "definitions" / "reference-images.yaml").read_text()
        httpx.post(f"{base}/api/v1/definitions/apply", headers=headers, json={"content": definition}).raise_for_status()
        with httpx.Client(base_url=base, headers=headers, timeout=10) as client:
            for environment in ("qa", "staging", "production"):
                complete_rollout(client, environment, "bench")
        yield base, tokens[0], tokens[1]


@contextmanager
def pipeline_process(mode: str, base: str, evaluate: str, ingest: str, folder: Path) -> Iterator[tuple[str, int]]:
    """`bench.pipeline_server` in a process of its own; its URL (once it answers) and its pid."""
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "bench.pipeline_server",
        f"--port={port}",
        f"--mode={mode}",
        f"--controlplane-url={base}",
        f"--evaluate-token={evaluate}",
        f"--ingest-token={ingest}",
        f"--work-dir={folder / mode}",
    ]
    process = subprocess.Popen(command, cwd=REPO_ROOT, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})  # noqa: S603
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError(f"the pipeline ({mode}) did not start")
            time.sleep(0.1)
        yield url, process.pid
    finally:
        process.terminate()
        process.wait(timeout=30)


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) the process has used, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    wrk = shutil.which("wrk")
    if wrk is None:
        raise SystemExit("wrk is needed: apt-get install wrk")
    results: list[dict[str, object]] = []
    rates: dict[str, list[float]] = {"with": [], "without": []}
    cpu_costs: dict[str, list[float]] = {"with": [], "without": []}
    with tempfile.TemporaryDirectory() as temporary, control_plane(Path(temporary)) as (base, evaluate, ingest):
        folder = Path(temporary)
        (folder / "body.bin").write_bytes(upload_body())
        script = folder / "upload.lua"
        script.write_text(LUA % {"body": folder / "body.bin", "boundary": BOUNDARY})
        for round_number in range(1, args.rounds + 1):
            modes = ("with", "without") if round_number % 2 else ("without", "with")
            for mode in modes:
                with pipeline_process(mode, base, evaluate, ingest, folder) as (url, pid):
                    for duration in (2, args.duration):  # a short warm-up, then the measured run
                        cpu_before = cpu_seconds(pid)
                        completed = subprocess.run(  # noqa: S603 - wrk with our arguments
                            [
                                wrk,
                                "-t1",
                                f"-c{args.connections}",
                                f"-d{duration}s",
                                "--latency",
                                "-s",
                                str(script),
                                url,
                            ],
                            capture_output=True,
                            text=True,
                            check=True,
                        )
                    rate, total, non_2xx, latency = parse_wrk(completed.stdout)
                    cpu = cpu_seconds(pid) - cpu_before
                    stats = httpx.get(f"{url}/metrics").text if mode == "with" else ""
                rates[mode].append(rate)
                cpu_costs[mode].append(1000 * cpu / max(total, 1))
                results.append(
                    {
                        "round": round_number,
                        "mode": mode,
                        "uploads_per_s": round(rate, 1),
                        "requests": total,
                        "non_2xx": non_2xx,
                        "pipeline_cpu_ms_per_upload": round(1000 * cpu / max(total, 1), 3),
                        "latency": latency,
                        "emitter_dropped": _dropped(stats),
                    }
                )
    print_results(results)
    best = {mode: round(max(values), 1) for mode, values in rates.items()}
    print(
        f"best uploads/s: with flag check and emitter {best['with']}, without {best['without']}; "
        f"cost {100 * (1 - best['with'] / best['without']):.1f}%"
    )
    cheapest = {mode: min(values) for mode, values in cpu_costs.items()}
    print(
        f"pipeline CPU per upload (lowest): with {cheapest['with']:.3f} ms, without {cheapest['without']:.3f} ms; "
        f"the flag check and emitter add {cheapest['with'] - cheapest['without']:.3f} ms"
    )


def _dropped(metrics: str) -> str:
    for line in metrics.splitlines():
        if line.startswith("pipeline_emitter_events_total") and 'outcome="dropped"' in line:
            return line.rsplit(" ", 1)[1]
    return "-"


if __name__ == "__main__":
    main()
