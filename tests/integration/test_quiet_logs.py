"""A served control plane's log: stdout carries the first admin token only, job runs and probes write nothing.

A real `controlplane serve` (its own process, default settings, SQLite) with every job running several times a
second, probed for a few seconds (tests/idle_server.py; bench/idle_logs.py measures the same for minutes).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from tests.idle_server import IdleLog, observe_idle_server

FAST_JOBS = {
    "CONTROLPLANE_ALERT_EVALUATION_SECONDS": "0.2",
    "CONTROLPLANE_NOTIFICATION_DELIVERY_SECONDS": "0.1",
    "CONTROLPLANE_ROLLOUT_TICK_SECONDS": "0.2",
    "CONTROLPLANE_RETENTION_JOB_SECONDS": "0.3",
    "CONTROLPLANE_CLEANUP_TICK_SECONDS": "0.3",
    "CONTROLPLANE_LEADER_LEASE_SECONDS": "1.2",  # renewed every 0.2 s
}
IDLE_SECONDS = 2.5
#: Requested once while idle: not a probe, so it leaves one access line (401: no token).
REQUEST = "/api/v1/flags"


def job_runs(log: IdleLog, job: str) -> float:
    pattern = rf'^controlplane_scheduler_job_runs_total\{{job="{job}",result="ok"\}} (\S+)$'
    found = re.search(pattern, log.metrics, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def served(tmp_path: Path, log_format: str) -> IdleLog:
    return observe_idle_server(
        tmp_path,
        seconds=IDLE_SECONDS,
        probe_every=0.25,
        settings={**FAST_JOBS, "CONTROLPLANE_LOG_FORMAT": log_format},
        during=[REQUEST],
    )


def test_job_runs_and_probes_log_nothing_and_stdout_is_the_token_alone(tmp_path: Path) -> None:
    log = served(tmp_path, "text")

    assert re.fullmatch(r"cpt_[\w-]+\n", log.stdout), log.stdout
    token = log.stdout.strip()
    # The jobs did run, many times, and the probes were answered: their silence is not their absence.
    assert job_runs(log, "deliver_notifications") >= 10
    assert job_runs(log, "evaluate_alert_rules") >= 5
    assert job_runs(log, "renew_leader_lease") >= 5
    assert log.probes >= 20
    # While idle, the one line is the access line of the one request that was not a probe.
    [line] = log.idle
    assert f"GET {REQUEST} 401" in line and "[uvicorn.access]" in line
    everything = "\n".join(log.startup + log.idle + log.shutdown)
    for routine in ("Running job", "executed successfully", "Context impl", "/healthz", "/readyz", "GET /metrics"):
        assert routine not in everything
    assert token not in everything
    assert "replica" in everything and "is now the leader" in everything  # what changed is still said


def test_json_logs_put_every_record_in_one_shape_uvicorns_included(tmp_path: Path) -> None:
    log = served(tmp_path, "json")

    records = [json.loads(line) for line in log.startup + log.idle + log.shutdown]
    assert all({"event", "level", "logger", "timestamp"} <= record.keys() for record in records)
    loggers = {record["logger"] for record in records}
    assert {"controlplane.serve", "controlplane.migrate", "controlplane.scheduler", "uvicorn.error"} <= loggers
    [request] = [record for record in records if record["logger"] == "uvicorn.access"]
    assert (request["method"], request["path"], request["status"]) == ("GET", REQUEST, 401)
    assert re.fullmatch(r"cpt_[\w-]+\n", log.stdout)
