"""The server's log: routine lines at DEBUG, probes unlogged, one format for every record, failures told once."""

from __future__ import annotations

import io
import json
import logging
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine
from sqlalchemy.orm import sessionmaker

from controlplane.api.health import ReadinessLog
from controlplane.clock import system_clock
from controlplane.logs import RoutineFilter, configure_logging
from controlplane.metrics import ControlPlaneMetrics
from controlplane.scheduler import JobSpec, Leadership, Scheduler
from controlplane.scheduling.failures import FailureStreak

ACCESS = '%s - "%s %s HTTP/%s" %d'


def record(name: str, level: int, msg: str, args: tuple[Any, ...] = ()) -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, msg, args, None)


def access(path: str, status: int = 200) -> logging.LogRecord:
    return record("uvicorn.access", logging.INFO, ACCESS, ("127.0.0.1:5000", "GET", path, "1.1", status))


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics", "/readyz?verbose=1"])
def test_probes_leave_no_access_line(path: str) -> None:
    assert RoutineFilter(logging.INFO).filter(access(path)) is False
    assert RoutineFilter(logging.INFO).filter(access(path, 503)) is False


def test_other_requests_keep_their_access_line() -> None:
    assert RoutineFilter(logging.INFO).filter(access("/api/v1/flags", 401)) is True
    assert RoutineFilter(logging.INFO).filter(access("/metrics/extra")) is True


@pytest.mark.parametrize(
    "name", ["apscheduler.executors.default", "apscheduler.scheduler", "alembic.runtime.migration"]
)
def test_routine_library_lines_are_debug(name: str) -> None:
    line = record(name, logging.INFO, 'Job "deliver_notifications" executed successfully')
    assert RoutineFilter(logging.INFO).filter(line) is False
    shown = record(name, logging.INFO, "Running job")
    assert RoutineFilter(logging.DEBUG).filter(shown) is True
    assert (shown.levelno, shown.levelname) == (logging.DEBUG, "DEBUG")


def test_library_warnings_and_our_info_stay() -> None:
    missed = record("apscheduler.executors.default", logging.WARNING, "Run time of job was missed by 0:00:03")
    assert RoutineFilter(logging.INFO).filter(missed) is True
    assert missed.levelname == "WARNING"
    assert RoutineFilter(logging.INFO).filter(record("controlplane.rollouts.jobs", logging.INFO, "advanced")) is True
    assert RoutineFilter(logging.WARNING).filter(record("controlplane.x", logging.INFO, "advanced")) is False


def test_json_format_renders_every_record_as_one_object_with_access_fields(restore_logging: None) -> None:
    stream = io.StringIO()
    # uvicorn's own default config gives its access logger a stdout handler: ours must take over.
    logging.getLogger("uvicorn.access").addHandler(logging.StreamHandler(io.StringIO()))
    logging.getLogger("uvicorn.access").propagate = False
    configure_logging("json", logging.INFO, stream)

    logging.getLogger("uvicorn.access").info(ACCESS, "127.0.0.1:5000", "POST", "/api/v1/events", "1.1", 202)
    logging.getLogger("uvicorn.access").info(ACCESS, "127.0.0.1:5000", "GET", "/readyz", "1.1", 200)
    logging.getLogger("apscheduler.executors.default").info("Running job %s", "deliver_notifications")
    try:
        raise RuntimeError("database is locked")
    except RuntimeError:
        logging.getLogger("controlplane.scheduler").exception("job %s failed", "evaluate_alert_rules")

    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert len(lines) == 2
    request, failure = lines
    assert request["event"] == "POST /api/v1/events 202"
    assert (request["method"], request["path"], request["status"], request["client"]) == (
        "POST",
        "/api/v1/events",
        202,
        "127.0.0.1:5000",
    )
    assert (request["level"], request["logger"]) == ("info", "uvicorn.access")
    assert request["timestamp"].endswith("Z")
    assert "positional_args" not in request
    assert (failure["event"], failure["level"]) == ("job evaluate_alert_rules failed", "error")
    assert "RuntimeError: database is locked" in failure["exception"]


def test_text_format_is_one_line_per_record_with_the_logger_named(restore_logging: None) -> None:
    stream = io.StringIO()
    configure_logging("text", logging.INFO, stream)
    logging.getLogger("controlplane.scheduler").info("replica %s is now the leader", "a")
    [line] = stream.getvalue().splitlines()
    assert "[info" in line and "replica a is now the leader" in line and "[controlplane.scheduler]" in line


def test_a_repeating_failure_is_logged_when_it_starts_changes_kind_and_ends(caplog: pytest.LogCaptureFixture) -> None:
    streak = FailureStreak(logging.getLogger("controlplane.scheduler"), "job deliver_notifications")
    caplog.set_level(logging.DEBUG, logger="controlplane.scheduler")
    for _ in range(3):
        streak.failed(TimeoutError("no answer within 5 s"))
    streak.failed(ConnectionError("connection refused"))
    streak.succeeded()
    streak.succeeded()

    logged = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert logged == [
        ("ERROR", "job deliver_notifications failed: TimeoutError: no answer within 5 s"),
        ("DEBUG", "job deliver_notifications failed again (2 in a row): no answer within 5 s"),
        ("DEBUG", "job deliver_notifications failed again (3 in a row): no answer within 5 s"),
        ("ERROR", "job deliver_notifications failed: ConnectionError: connection refused"),
        ("WARNING", "job deliver_notifications works again after 4 failed runs"),
    ]
    assert caplog.records[0].exc_info is not None  # the traceback, once


def test_a_failing_job_is_counted_each_run_and_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    failures = iter([True, True, True, False])

    def flaky() -> str:
        if next(failures):
            raise TimeoutError("no answer within 5 s")
        return "done"

    metrics = ControlPlaneMetrics()
    leadership = Leadership(sessionmaker(), holder="a", ttl=timedelta(seconds=15), clock=system_clock)
    job = JobSpec("deliver_notifications", flaky, timedelta(seconds=1), leader_only=False)
    run = Scheduler([job], leadership, metrics)._guarded(job)
    caplog.set_level(logging.INFO)

    assert [run() for _ in range(4)] == [None, None, None, "done"]

    errors = metrics.registry.get_sample_value(
        "controlplane_scheduler_job_runs_total", {"job": "deliver_notifications", "result": "error"}
    )
    assert errors == 3
    assert [r.levelname for r in caplog.records] == ["ERROR", "WARNING"]


def test_readiness_is_logged_when_lost_and_when_back_not_at_every_probe(caplog: pytest.LogCaptureFixture) -> None:
    readiness = ReadinessLog()
    caplog.set_level(logging.INFO, logger="controlplane.api.health")
    for answer in [None, None, "unreachable: OperationalError", "no answer within 2 s", None, None]:
        readiness.answered(answer)

    logged = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert logged[0] == ("WARNING", "not ready (database: unreachable: OperationalError)")
    assert logged[1][0] == "INFO" and logged[1][1].startswith("ready again after")
    assert len(logged) == 2


def test_a_lease_renewal_that_keeps_failing_is_logged_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    unreachable = create_engine(f"sqlite:///{tmp_path / 'no-such-folder' / 'controlplane.db'}")
    leadership = Leadership(sessionmaker(unreachable), holder="a", ttl=timedelta(seconds=15), clock=system_clock)
    caplog.set_level(logging.INFO, logger="controlplane.scheduler")

    assert [leadership.renew() for _ in range(5)] == [False] * 5

    [logged] = caplog.records
    assert logged.levelname == "ERROR" and "leader lease renewal" in logged.getMessage()
    assert "OperationalError" in logged.getMessage()
