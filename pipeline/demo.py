"""`python -m pipeline.demo`: a bad canary rolled back on its own, end to end on one machine, with its timeline.

1. Cloud Storage: gcp-storage-emulator in this process, bucket `reference-images`.
2. The control plane: `controlplane serve` in a process of its own on SQLite (definitions applied, alerts
   evaluated every second), with an evaluate and an ingest token made for the pipeline by its command line.
3. The rollout of `enable-reference-images`: QA and staging pushed through (forced, audited as the demo), then
   production started at its first stage, 10%.
4. The pipeline service, `python -m pipeline` in a process of its own with fault injection on, flags through its
   in-process OpenFeature provider and events through the emitter; the load generator drives it.
5. After a healthy while, Vision errors are injected. Uploads answer 503; the guard `upload-failure-rate` (the share
   of uploads the service fails, decided at 99% confidence) fires and the control plane rolls the flag back to `off`
   in production by itself.

Exit 0 once the flag is rolled back (the timeline printed), 1 if it was not within ``--timeout``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from pipeline.emulator import fresh_bucket, running_emulator, storage_client
from pipeline.loadgen import LoadConfig, LoadStats, run_load, set_faults
from pipeline.local_control_plane import (
    ControlPlaneProcess,
    ServiceProcess,
    complete_rollout,
    free_port,
    operate_rollout,
)
from pipeline.settings import FLAG_KEY

__all__ = ["Timeline", "main", "run_demo"]

#: Users of the load: at 10%, about ten of them are in the canary.
USERS = 1000  # enough users in the 10% canary that counting each at most 4 times leaves the guard its samples


@dataclass
class Timeline:
    """What happened, when, relative to the start; printed as it goes and at the end."""

    started: float = field(default_factory=time.monotonic)
    entries: list[tuple[float, str]] = field(default_factory=list)
    out: Callable[[str], None] = print

    def mark(self, what: str) -> float:
        """Record (and print) one step; return its time since the start."""
        at = time.monotonic() - self.started
        self.entries.append((at, what))
        self.out(f"[{at:7.2f}s] {what}")
        return at


def start_production_canary(client: httpx.Client) -> dict[str, Any]:
    """QA and staging pushed through (forced: the demo has no days to bake), production started at 10%."""
    for environment in ("qa", "staging"):
        complete_rollout(client, environment, "demo: no time to bake")
    return operate_rollout(client, "production", "start", "demo: production canary")


def pipeline_process(folder: Path, controlplane_url: str, tokens: Mapping[str, str]) -> ServiceProcess:
    """`python -m pipeline` on a free port with fault injection on, using the local control plane's tokens."""
    port = free_port()
    return ServiceProcess(
        [sys.executable, "-m", "pipeline"],
        port=port,
        ready_path="/healthz",
        log_path=folder / "pipeline.log",
        settings={
            "PIPELINE_HOST": "127.0.0.1",
            "PIPELINE_PORT": str(port),
            "CONTROLPLANE_URL": controlplane_url,
            "PIPELINE_EVALUATE_TOKEN": tokens["evaluate"],
            "PIPELINE_INGEST_TOKEN": tokens["ingest"],
            "PIPELINE_RUNS_DIR": str(folder / "runs"),
            "PIPELINE_SPOOL_DIR": str(folder / "spool"),
            "PIPELINE_FAULTS_ENABLED": "true",
        },
    )


def _status(client: httpx.Client) -> dict[str, Any]:
    status: dict[str, Any] = client.get(f"/api/v1/flags/{FLAG_KEY}/environments/production/rollout").json()
    return status


def _firing(client: httpx.Client) -> list[dict[str, Any]]:
    alerts: list[dict[str, Any]] = client.get("/api/v1/alerts", params={"state": "firing"}).json()
    return [alert for alert in alerts if alert["environment"] == "production"]


def run_demo(*, healthy_seconds: float, rate: float, error_rate: float, timeout: float, timeline: Timeline) -> bool:
    """The whole demo; True when the flag ended rolled back."""
    with ExitStack() as stack:
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="reference-images-demo-")))
        # The services' own logs go to files in the demo's folder; the terminal shows the timeline.
        for noisy in ("httpx", "gcp_storage_emulator"):
            logger = logging.getLogger(noisy)
            stack.callback(logger.setLevel, logger.level)
            logger.setLevel(logging.WARNING)
        host = stack.enter_context(running_emulator())
        previous = os.environ.get("STORAGE_EMULATOR_HOST")
        stack.callback(_restore_environment, "STORAGE_EMULATOR_HOST", previous)
        os.environ["STORAGE_EMULATOR_HOST"] = host
        fresh_bucket(storage_client("reference-images-dev"), "reference-images")
        timeline.mark(f"Cloud Storage emulator at {host}, bucket reference-images")
        plane = stack.enter_context(ControlPlaneProcess(folder))
        url, tokens = plane.url, plane.tokens
        timeline.mark(f"control plane serving at {url} (SQLite, definitions applied)")
        admin = stack.enter_context(
            httpx.Client(base_url=url, headers={"Authorization": f"Bearer {tokens['admin']}"}, timeout=10)
        )
        started = start_production_canary(admin)
        timeline.mark(f"production rollout started: stage {started['stage_index'] + 1}, {started['percentage']:g}%")
        pipeline_url = stack.enter_context(pipeline_process(folder, url, tokens)).url
        timeline.mark(f"pipeline serving at {pipeline_url} (flags in-process, events through the emitter)")
        stop = threading.Event()
        progress: list[LoadStats] = []
        load = threading.Thread(
            target=run_load,
            args=(LoadConfig(pipeline_url=pipeline_url, rate=rate, duration=timeout + healthy_seconds, users=USERS),),
            kwargs={"stop": stop, "on_progress": progress.append},
            name="loadgen",
            daemon=True,
        )
        load.start()
        stack.callback(load.join, 30)
        stack.callback(stop.set)
        timeline.mark(f"load generator: {rate:g} requests/s over {USERS} users")
        time.sleep(healthy_seconds)
        status, firing = _status(admin), [alert["rule"] for alert in _firing(admin)]
        uploads = progress[-1].by_status.get("upload_reference_image", {}) if progress else {}
        timeline.mark(
            f"so far: production {status['state']} at {status['percentage']:g}%, "
            f"guards firing: {', '.join(firing) or 'none'}; uploads answered {dict(sorted(uploads.items()))}"
        )
        set_faults(pipeline_url, vision_error_rate=error_rate)
        injected = timeline.mark(f"injected Vision errors: {error_rate:.0%} of Vision calls fail")
        return _watch(admin, timeline, injected, timeout)


def _restore_environment(name: str, value: str | None) -> None:
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value


def _watch(admin: httpx.Client, timeline: Timeline, injected: float, timeout: float) -> bool:
    """Follow alerts and the rollout until the flag is rolled back, marking each change once."""
    seen: set[str] = set()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for alert in _firing(admin):
            if alert["rule"] not in seen:
                seen.add(alert["rule"])
                timeline.mark(f"alert {alert['rule']} firing: {alert['detail'] or alert['condition']}")
        status = _status(admin)
        if status["state"] == "rolled_back":
            at = timeline.mark(
                f"{FLAG_KEY} rolled back in production by the control plane: serving "
                f"{status['serving_percentage']:g}% of users the rollout variant"
            )
            audit = admin.get("/api/v1/audit", params={"flag": FLAG_KEY, "environment": "production", "limit": 1})
            record = audit.json()[0] if audit.status_code == 200 and audit.json() else {}
            timeline.mark(f"audit: {record.get('actor')} {record.get('action')}: {record.get('reason')}")
            timeline.out(f"\nfrom injecting Vision errors to the rollback: {at - injected:.2f} s")
            return True
        time.sleep(0.25)
    timeline.mark(f"not rolled back within {timeout:g} s")
    return False


def main(argv: list[str] | None = None) -> None:
    """Run the demo; exit 0 when the flag ended rolled back."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--healthy-seconds", type=float, default=15.0, help="healthy traffic before the faults")
    parser.add_argument("--rate", type=float, default=60.0, help="pipeline requests per second")
    parser.add_argument("--vision-error-rate", type=float, default=0.8, help="share of Vision calls that fail")
    parser.add_argument("--timeout", type=float, default=90.0, help="how long to wait for the rollback")
    args = parser.parse_args(argv)
    rolled_back = run_demo(
        healthy_seconds=args.healthy_seconds,
        rate=args.rate,
        error_rate=args.vision_error_rate,
        timeout=args.timeout,
        timeline=Timeline(),
    )
    raise SystemExit(0 if rolled_back else 1)


if __name__ == "__main__":
    main()
