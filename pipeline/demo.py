"""`python -m pipeline.demo`: a bad canary rolled back on its own and the rollback finished, end to end on one
machine, with its timeline.

1. Cloud Storage: gcp-storage-emulator in this process, bucket `reference-images`.
2. The control plane: `controlplane serve` in a process of its own on SQLite (definitions applied, alerts
   evaluated every second), with an evaluate and an ingest token made for the pipeline by its command line.
3. The rollout of `enable-reference-images`: QA and staging pushed through (forced, audited as the demo), then
   production started at its first stage, 10%.
4. The pipeline service, `python -m pipeline` in a process of its own with fault injection on, flags through its
   in-process OpenFeature provider and events through the emitter; the load generator drives it.
5. After a healthy while, Vision errors are injected. Uploads answer 503; the guard `upload-failure-rate` (the share
   of uploads the service fails, decided at 99% confidence) fires and the control plane rolls the flag back to `off`
   in production by itself. The rest is the playbook's rollback, each step shown with its figure:
6. Flag off: production serves the rollout variant to 0% of users.
7. Cache cleared: the pipeline clears its reference cache on the provider's configuration change (its own counter
   `pipeline_reference_cache_clears_total` on its /metrics, before and after).
8. On-call told: the control plane's notifications go to a webhook receiver the demo serves on loopback; what it
   received is printed (the guard's rollback is a `rollback` alert at `page`).
9. Bad window purged: the SRE purges what was uploaded from the start of the production canary until now
   (`POST /api/v1/cleanup/purges`, what `controlplane cleanup purge` sends); the run's deleted count and the
   bucket's objects before and after.
10. Runs listed: the runs of the window as `python -m pipeline audit --from T --to T` lists them, those that used a
   now purged reference flagged.

Exit 0 once the flag is rolled back and each step of the rollback is done (the timeline printed), 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from pipeline.audit import AuditedRun, audit_table, audit_window
from pipeline.emulator import fresh_bucket, running_emulator, storage_client
from pipeline.loadgen import LoadConfig, LoadStats, run_load, set_faults
from pipeline.local_control_plane import (
    ControlPlaneProcess,
    ServiceProcess,
    complete_rollout,
    free_port,
    operate_rollout,
)
from pipeline.settings import FLAG_KEY, OBJECT_PREFIX

__all__ = ["RollbackFigures", "Timeline", "WebhookInbox", "main", "run_demo"]

#: Users of the load: at 10%, about ten of them are in the canary.
USERS = 1000  # enough users in the 10% canary that counting each at most 4 times leaves the guard its samples
BUCKET = "reference-images"
#: How long each step of the rollback after the flag went off may take (the push, a delivery, the purge).
STEP_TIMEOUT_SECONDS = 30.0
#: Rows of the audit shown (runs that used references first); the count line covers them all.
AUDIT_ROWS_SHOWN = 8


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


@dataclass
class RollbackFigures:
    """What each step of the rollback did, as the demo measured it."""

    rolled_back: bool = False
    serving_percentage: float | None = None
    cache_clears_before: float = 0.0
    cache_clears_after: float = 0.0
    notifications: list[dict[str, Any]] = field(default_factory=list)
    window: tuple[datetime, datetime] | None = None
    objects_before_purge: int = 0
    purge: dict[str, Any] = field(default_factory=dict)
    objects_after_purge: int = 0
    audited: list[AuditedRun] = field(default_factory=list)

    @property
    def rollback_paged(self) -> bool:
        """Whether on-call's receiver got the rollback as a page."""
        return any(alert["kind"] == "rollback" and alert["severity"] == "page" for alert in self.notifications)

    @property
    def finished(self) -> bool:
        """Flag off, cache cleared, on-call paged, the window purged and its runs listed."""
        return (
            self.rolled_back
            and self.serving_percentage == 0
            and self.cache_clears_after > self.cache_clears_before
            and self.rollback_paged
            and self.purge.get("status") == "succeeded"
            and bool(self.audited)
        )


class WebhookInbox:
    """A small HTTP receiver on loopback standing in for on-call: records the alerts of every webhook body."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.url = ""
        self._lock = threading.Lock()

    def alerts(self) -> list[dict[str, Any]]:
        """Every alert received so far, in order."""
        with self._lock:
            return [alert for body in self.bodies for alert in body.get("alerts") or []]

    @contextmanager
    def serving(self) -> Iterator[WebhookInbox]:
        """Serve on a free loopback port for the block (``url`` set)."""
        inbox = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("content-length", "0")))
                with inbox._lock:
                    inbox.bodies.append(json.loads(raw))
                self.send_response(202)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return  # the timeline says what matters

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        thread = threading.Thread(target=server.serve_forever, name="webhook-inbox", daemon=True)
        thread.start()
        self.url = f"http://127.0.0.1:{server.server_address[1]}/on-call"
        try:
            yield self
        finally:
            server.shutdown()
            server.server_close()
            thread.join(5)


def notifications_file(folder: Path, url: str) -> Path:
    """The control plane's notifications: every alert and rollout step to the webhook at ``url``."""
    path = folder / "notifications.yaml"
    path.write_text(f"receivers:\n  on-call: {{type: webhook, url: '{url}'}}\nroutes:\n  - {{receivers: [on-call]}}\n")
    return path


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


def run_demo(
    *,
    healthy_seconds: float,
    rate: float,
    error_rate: float,
    timeout: float,
    timeline: Timeline,
    folder: Path | None = None,
) -> RollbackFigures:
    """The whole demo; what each step of the rollback did (``rolled_back`` False when the guard did not act).
    Runs, spools and logs go to ``folder``, or to a temporary folder removed at the end."""
    figures = RollbackFigures()
    with ExitStack() as stack:
        if folder is None:
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
        bucket = fresh_bucket(storage_client("reference-images-dev"), BUCKET)
        timeline.mark(f"Cloud Storage emulator at {host}, bucket {BUCKET}")
        inbox = stack.enter_context(WebhookInbox().serving())
        timeline.mark(f"on-call's webhook receiver at {inbox.url}")
        plane = stack.enter_context(
            ControlPlaneProcess(folder, CONTROLPLANE_NOTIFICATIONS_FILE=str(notifications_file(folder, inbox.url)))
        )
        url, tokens = plane.url, plane.tokens
        timeline.mark(f"control plane serving at {url} (SQLite, definitions applied, notifications to the webhook)")
        admin = stack.enter_context(
            httpx.Client(base_url=url, headers={"Authorization": f"Bearer {tokens['admin']}"}, timeout=10)
        )
        window_start = datetime.now(UTC)
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
        figures.cache_clears_before = _cache_figures(pipeline_url)["pipeline_reference_cache_clears_total"]
        set_faults(pipeline_url, vision_error_rate=error_rate)
        injected = timeline.mark(f"injected Vision errors: {error_rate:.0%} of Vision calls fail")
        rolled_back = _watch(admin, timeline, injected, timeout)
        if rolled_back is None:
            return figures
        figures.rolled_back, figures.serving_percentage = True, rolled_back["serving_percentage"]
        stop.set()  # the flag is off: the rest is the SRE's clean-up
        _cache_cleared(pipeline_url, figures, timeline)
        _on_call_told(inbox, figures, timeline)
        window = (window_start, datetime.now(UTC))
        figures.window = window
        _purge_window(admin, bucket, window, figures, timeline)
        _list_runs(folder / "runs", bucket, window, figures, timeline)
        return figures


def _restore_environment(name: str, value: str | None) -> None:
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value


def _watch(admin: httpx.Client, timeline: Timeline, injected: float, timeout: float) -> dict[str, Any] | None:
    """Follow alerts and the rollout until the flag is rolled back, marking each change once; the rolled back
    status, or None if it was not rolled back within ``timeout``."""
    seen: set[str] = set()

    def mark_firing() -> None:
        for alert in _firing(admin):
            if alert["rule"] not in seen:
                seen.add(alert["rule"])
                timeline.mark(f"alert {alert['rule']} firing: {alert['detail'] or alert['condition']}")

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        mark_firing()
        status = _status(admin)
        if status["state"] == "rolled_back":
            # The guard may have fired and rolled back between the two reads: its alert is told before the rollback.
            mark_firing()
            at = timeline.mark(
                f"flag off: {FLAG_KEY} rolled back in production by the control plane: serving "
                f"{status['serving_percentage']:g}% of users the rollout variant"
            )
            audit = admin.get("/api/v1/audit", params={"flag": FLAG_KEY, "environment": "production", "limit": 1})
            record = audit.json()[0] if audit.status_code == 200 and audit.json() else {}
            timeline.mark(f"audit: {record.get('actor')} {record.get('action')}: {record.get('reason')}")
            timeline.out(f"\nfrom injecting Vision errors to the rollback: {at - injected:.2f} s\n")
            return status
        time.sleep(0.25)
    timeline.mark(f"not rolled back within {timeout:g} s")
    return None


def _cache_figures(pipeline_url: str) -> dict[str, float]:
    """The reference cache's samples on the pipeline's /metrics (entries, clears, dropped)."""
    text = httpx.get(f"{pipeline_url}/metrics", timeout=5).raise_for_status().text
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(text)
        if family.name.startswith("pipeline_reference_cache")
        for sample in family.samples
    }


def _until(check: Callable[[], bool]) -> bool:
    """Whether ``check`` came true within STEP_TIMEOUT_SECONDS (asked every 0.2 s)."""
    deadline = time.monotonic() + STEP_TIMEOUT_SECONDS
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def _cache_cleared(pipeline_url: str, figures: RollbackFigures, timeline: Timeline) -> None:
    """Step: the pipeline cleared its reference cache on the flag's change (its own counter)."""
    after: dict[str, float] = {}

    def cleared() -> bool:
        after.update(_cache_figures(pipeline_url))
        return after["pipeline_reference_cache_clears_total"] > figures.cache_clears_before

    done = _until(cleared)
    figures.cache_clears_after = after["pipeline_reference_cache_clears_total"]
    timeline.mark(
        f"cache {'cleared' if done else 'NOT cleared'} by the pipeline on the flag change: "
        f"pipeline_reference_cache_clears_total {figures.cache_clears_before:g} -> {figures.cache_clears_after:g}, "
        f"pipeline_reference_cache_entries {after['pipeline_reference_cache_entries']:g}"
    )


def _on_call_told(inbox: WebhookInbox, figures: RollbackFigures, timeline: Timeline) -> None:
    """Step: on-call's webhook received the rollback (a page) and what led to it."""
    _until(lambda: any(alert["kind"] == "rollback" for alert in inbox.alerts()))
    figures.notifications = inbox.alerts()
    timeline.mark(
        f"on-call {'paged' if figures.rollback_paged else 'NOT paged'}: the webhook received "
        f"{len(inbox.bodies)} notifications, {len(figures.notifications)} alerts"
    )
    for alert in figures.notifications:
        timeline.out(f"    {alert['kind']:16} {alert['severity'] or '-':7} {alert['summary']}")


def _objects(bucket: Any) -> int:
    return sum(1 for _ in bucket.list_blobs(prefix=OBJECT_PREFIX))


def _purge_window(
    admin: httpx.Client, bucket: Any, window: tuple[datetime, datetime], figures: RollbackFigures, timeline: Timeline
) -> None:
    """Step: the SRE purges what was uploaded in the bad window and follows the run to its end."""
    figures.objects_before_purge = _objects(bucket)
    body = {
        "bucket": BUCKET,
        "prefix": OBJECT_PREFIX,
        "from": window[0].isoformat(),
        "to": window[1].isoformat(),
        "reason": "demo: purge what the bad canary uploaded",
    }
    run: dict[str, Any] = admin.post("/api/v1/cleanup/purges", json=body).raise_for_status().json()

    def ended() -> bool:
        run.update(admin.get(f"/api/v1/cleanup/runs/{run['id']}").raise_for_status().json())
        return run["status"] in ("succeeded", "failed")

    _until(ended)
    figures.purge = run
    figures.objects_after_purge = _objects(bucket)
    timeline.mark(
        f"purge of the bad window [{window[0]:%H:%M:%S}, {window[1]:%H:%M:%S}) {run['status']}: run {run['id']} "
        f"deleted {run['deleted']} objects of {run['matched']} matched ({run['bytes_freed']} bytes); "
        f"bucket {figures.objects_before_purge} -> {figures.objects_after_purge} objects"
    )


def _list_runs(
    runs_dir: Path, bucket: Any, window: tuple[datetime, datetime], figures: RollbackFigures, timeline: Timeline
) -> None:
    """Step: the runs of the window as `python -m pipeline audit` lists them, checked against the bucket."""
    figures.audited = audit_window(
        runs_dir, *window, still_stored=lambda name: bool(bucket.blob(name).exists()), now=datetime.now(UTC)
    )
    with_references = [run for run in figures.audited if run.references]
    flagged = [run for run in figures.audited if run.flagged]
    timeline.mark(
        f"runs of the window (python -m pipeline audit --from {window[0].isoformat()} --to {window[1].isoformat()}): "
        f"{len(figures.audited)} runs, {len(with_references)} used reference images, {len(flagged)} flagged"
    )
    shown = (with_references + [run for run in figures.audited if not run.references])[:AUDIT_ROWS_SHOWN]
    for line in audit_table(shown).splitlines()[:-1]:
        timeline.out(f"    {line}")
    if len(figures.audited) > len(shown):
        timeline.out(f"    ... and {len(figures.audited) - len(shown)} more runs")


def main(argv: list[str] | None = None) -> None:
    """Run the demo; exit 0 when the flag ended rolled back and each step of the rollback was done."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--healthy-seconds", type=float, default=15.0, help="healthy traffic before the faults")
    parser.add_argument("--rate", type=float, default=60.0, help="pipeline requests per second")
    parser.add_argument("--vision-error-rate", type=float, default=0.8, help="share of Vision calls that fail")
    parser.add_argument("--timeout", type=float, default=90.0, help="how long to wait for the rollback")
    args = parser.parse_args(argv)
    figures = run_demo(
        healthy_seconds=args.healthy_seconds,
        rate=args.rate,
        error_rate=args.vision_error_rate,
        timeout=args.timeout,
        timeline=Timeline(),
    )
    raise SystemExit(0 if figures.finished else 1)


if __name__ == "__main__":
    main()
