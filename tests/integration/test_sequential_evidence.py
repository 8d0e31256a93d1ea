"""A sequential rule's statistic is stored with its alert state and read back by the next evaluator: a leader that
starts afresh (a new evaluation cache, as after a restart or a change of leader) continues it exactly, on SQLite
and PostgreSQL alike; plain rules store none."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import func, insert, select
from sqlalchemy.orm import Session, sessionmaker

from controlplane.alerting.evaluation import EvaluationCache
from controlplane.alerting.models import AlertStateRow
from controlplane.alerting.rules import hypotheses
from controlplane.alerting.sequential import Evidence
from controlplane.db import session_scope
from controlplane.definitions.loader import parse_definition
from controlplane.definitions.service import apply_definition
from controlplane.guarding.evaluation import evaluate_alerts
from controlplane.notifications.config import NotificationConfig
from controlplane.settings import Settings
from controlplane.telemetry.aggregation import labels_key
from controlplane.telemetry.models import TelemetryWindow
from tests.conftest import REPO_ROOT, FakeClock

ENVIRONMENTS = Settings().environments
RULE = "upload-failure-rate"


def confident_definition() -> str:
    """The shipped reference-images definition: its stage guards (upload failure rate and latency) and its cohort
    comparison are decided at 99% confidence as shipped, every other rule of it is plain."""
    text = (REPO_ROOT / "definitions" / "reference-images.yaml").read_text()
    assert text.count("    confidence: 0.99\n") == 3
    return text


def uploads(clock: FakeClock, ago: timedelta, status_class: str, count: int) -> dict[str, object]:
    """One window row of upload requests in production, starting ``ago`` before now."""
    return {
        "window_start": clock() - ago,
        "pipeline": "reference-images",
        "event": "http_request",
        "environment": "production",
        "variant": "on",
        "outcome": "",
        "labels_key": labels_key({"route": "upload_reference_image", "status_class": status_class}),
        "count": count,
        "value_count": 0,
        "value_sum": 0.0,
    }


def stored_evidence(factory: sessionmaker[Session], rule: str) -> Evidence | None:
    with session_scope(factory) as session:
        data = session.scalar(
            select(AlertStateRow.evidence).where(AlertStateRow.rule == rule, AlertStateRow.environment == "production")
        )
    return Evidence.from_json(data) if data is not None else None


def test_a_new_evaluator_continues_the_stored_statistic(
    session_factory: sessionmaker[Session], clock: FakeClock
) -> None:
    definition = parse_definition(confident_definition(), source="reference-images.yaml", environments=ENVIRONMENTS)
    with session_scope(session_factory) as session:
        apply_definition(session, definition=definition, actor="t", environments=ENVIRONMENTS, now=clock())
    rule = next(rule for rule in definition.rules if rule.name == RULE)
    tested = hypotheses(rule)

    def tick(cache: EvaluationCache) -> None:
        with session_scope(session_factory) as session:
            evaluate_alerts(
                session, environments=ENVIRONMENTS, now=clock(), notifications=NotificationConfig(), cache=cache
            )

    # A minute ago: 100 uploads, 8 of them 5xx: evidence for a breach, short of a decision at 99%.
    with session_scope(session_factory) as session:
        session.execute(
            insert(TelemetryWindow),
            [uploads(clock, timedelta(seconds=60), "2xx", 92), uploads(clock, timedelta(seconds=60), "5xx", 8)],
        )
    tick(EvaluationCache())
    first = stored_evidence(session_factory, RULE)
    assert first is not None
    assert (first.upper, first.lower, first.through) == (tested.log_ratio(100, 8, 10.0), 0.0, clock())

    # Six minutes later a new leader (a fresh cache) reads one more closed window: 20 uploads, 2 of them 5xx. The
    # first window is outside the rule's 5 minutes now, so only the stored statistic still remembers it.
    clock.advance(timedelta(minutes=6))
    with session_scope(session_factory) as session:
        session.execute(
            insert(TelemetryWindow),
            [uploads(clock, timedelta(seconds=10), "2xx", 18), uploads(clock, timedelta(seconds=10), "5xx", 2)],
        )
    tick(EvaluationCache())
    second = stored_evidence(session_factory, RULE)
    assert second is not None
    window = tested.log_ratio(20, 2, 10.0)
    assert (second.upper, second.through) == (first.upper + window, clock())
    assert second.upper > window  # a fresh start would have only this window

    with session_scope(session_factory) as session:
        state, detail = session.execute(
            select(AlertStateRow.state, AlertStateRow.detail).where(
                AlertStateRow.rule == RULE, AlertStateRow.environment == "production"
            )
        ).one()
        sequential = (RULE, "upload-latency", "generation-error-rate-on-vs-off")  # with their own statistics
        plain = session.scalar(
            select(func.count()).select_from(AlertStateRow).where(AlertStateRow.rule.not_in(sequential))
        )
        without = session.scalar(
            select(func.count())
            .select_from(AlertStateRow)
            .where(AlertStateRow.rule.not_in(sequential), AlertStateRow.evidence.is_(None))
        )
    assert state == "insufficient_data"  # 20 events, fewer than min_samples 50 over the window
    assert "sequential: undecided" in detail, detail
    assert plain and without == plain  # plain rules store no statistic (SQL NULL, not a JSON null)
