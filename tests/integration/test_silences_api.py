"""Silences and the notification log over HTTP (and the CLI): roles, refusals, audit records."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import TestClient
from sqlalchemy.orm import Session, sessionmaker

from controlplane.api.roles import Role
from controlplane.cli import main
from controlplane.db import session_scope
from controlplane.notifications.config import parse_notification_config
from controlplane.notifications.messages import AlertEvent
from controlplane.notifications.service import enqueue_notifications
from tests.conftest import FakeClock, bearer, problem

API = "/api/v1"
Client = TestClient[Litestar]
MATCHERS = {"rule": "upload-error-rate", "environment": "production"}


@pytest.fixture
def operator(make_token: Callable[..., str]) -> dict[str, str]:
    return bearer(make_token(Role.OPERATOR, name="olivia-operator"))


@pytest.fixture
def viewer(make_token: Callable[..., str]) -> dict[str, str]:
    return bearer(make_token(Role.VIEWER, name="victor-viewer"))


def create(client: Client, headers: dict[str, str], **body: Any) -> dict[str, Any]:
    body.setdefault("matchers", MATCHERS)
    body.setdefault("comment", "database maintenance")
    if "ends_at" not in body:
        body.setdefault("duration_seconds", 7200)
    response = client.post(f"{API}/silences", headers=headers, json=body)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def listed(client: Client, headers: dict[str, str], **params: str) -> list[int]:
    response = client.get(f"{API}/silences", headers=headers, params=params)
    assert response.status_code == 200, response.text
    return [silence["id"] for silence in response.json()]


def audit(client: Client, headers: dict[str, str], action: str) -> list[dict[str, Any]]:
    response = client.get(f"{API}/audit", headers=headers, params={"action": action})
    assert response.status_code == 200, response.text
    records: list[dict[str, Any]] = response.json()
    return records


def when(clock: FakeClock, delta: timedelta = timedelta()) -> str:
    return (clock() + delta).isoformat().replace("+00:00", "Z")


def test_an_operator_creates_a_silence_and_a_viewer_sees_it(
    client: Client, operator: dict[str, str], viewer: dict[str, str], admin_headers: dict[str, str], clock: FakeClock
) -> None:
    silence = create(client, operator, comment="  database maintenance  ")

    assert silence["matchers"] == MATCHERS
    assert silence["state"] == "active"
    assert silence["starts_at"] == when(clock)
    assert silence["ends_at"] == when(clock, timedelta(hours=2))
    assert silence["created_by"] == "olivia-operator"
    assert silence["comment"] == "database maintenance"
    assert listed(client, viewer) == [silence["id"]]

    [record] = audit(client, admin_headers, "silence.create")
    assert record["actor"] == "olivia-operator"
    assert record["target_type"] == "silence" and record["target"] == str(silence["id"])
    assert record["environment"] == "production"
    assert record["reason"] == "database maintenance"
    assert record["after"]["matchers"] == MATCHERS


def test_expiring_a_silence_ends_it_now_and_is_audited(
    client: Client, operator: dict[str, str], admin_headers: dict[str, str], clock: FakeClock
) -> None:
    silence = create(client, operator)
    clock.advance(timedelta(minutes=10))

    response = client.delete(f"{API}/silences/{silence['id']}", headers=operator)
    assert response.status_code == 200, response.text
    expired = response.json()
    assert expired["state"] == "expired" and expired["ends_at"] == when(clock)

    assert listed(client, operator) == []
    assert listed(client, operator, all="true") == [silence["id"]]
    [record] = audit(client, admin_headers, "silence.expire")
    assert record["actor"] == "olivia-operator"
    assert record["before"]["ends_at"] != record["after"]["ends_at"]

    again = client.delete(f"{API}/silences/{silence['id']}", headers=operator)
    assert problem(again, 409, "silence-expired")["silence_id"] == silence["id"]
    problem(client.delete(f"{API}/silences/999", headers=operator), 404, "silence-not-found")


def test_a_silence_starting_later_is_pending_and_listed(
    client: Client, operator: dict[str, str], clock: FakeClock
) -> None:
    silence = create(
        client, operator, starts_at=when(clock, timedelta(hours=1)), ends_at=when(clock, timedelta(hours=3))
    )
    assert silence["state"] == "pending"
    assert listed(client, operator) == [silence["id"]]

    expired = client.delete(f"{API}/silences/{silence['id']}", headers=operator).json()
    assert expired["state"] == "expired" and expired["starts_at"] == expired["ends_at"] == when(clock)


def test_a_viewer_cannot_create_or_expire_silences(
    client: Client, operator: dict[str, str], viewer: dict[str, str]
) -> None:
    body = {"matchers": MATCHERS, "comment": "x", "duration_seconds": 60}
    problem(client.post(f"{API}/silences", headers=viewer, json=body), 403, "forbidden")
    silence = create(client, operator)
    problem(client.delete(f"{API}/silences/{silence['id']}", headers=viewer), 403, "forbidden")
    assert listed(client, viewer) == [silence["id"]]


@pytest.mark.parametrize(
    ("change", "slug", "field"),
    [
        ({"matchers": {}}, "invalid-silence", "matchers"),
        ({"comment": "   "}, "invalid-silence", "comment"),
        ({"duration_seconds": None}, "invalid-silence", "ends_at"),
        ({"ends_at": "2026-11-01T14:00:00Z"}, "invalid-silence", "ends_at"),
        ({"duration_seconds": None, "ends_at": "2026-11-01T11:00:00Z"}, "invalid-silence", "ends_at"),
        ({"duration_seconds": None, "ends_at": "2026-11-01T14:00:00"}, "invalid-silence", "ends_at"),
        (
            {"starts_at": "2026-11-01T15:00:00Z", "duration_seconds": None, "ends_at": "2026-11-01T14:00:00Z"},
            "invalid-silence",
            "ends_at",
        ),
        ({"comment": ""}, "invalid-body", "comment"),
        ({"comment": None}, "invalid-body", "comment"),
        ({"matchers": {"team": "payments"}}, "invalid-body", "team"),
        ({"matchers": {"severity": "urgent"}}, "invalid-body", "severity"),
        ({"matchers": {"rule": ""}}, "invalid-body", "rule"),
        ({"duration_seconds": -5}, "invalid-body", "duration_seconds"),
        ({"duration_seconds": 10**9}, "invalid-body", "duration_seconds"),
        ({"until": "tomorrow"}, "invalid-body", "until"),
    ],
)
def test_bad_input_is_refused_with_422_naming_the_field_and_changes_nothing(
    client: Client, operator: dict[str, str], change: dict[str, Any], slug: str, field: str
) -> None:
    body: dict[str, Any] = {"matchers": MATCHERS, "comment": "maintenance", "duration_seconds": 3600}
    body.update(change)
    body = {name: value for name, value in body.items() if value is not None or name == "comment"}

    refused = problem(client.post(f"{API}/silences", headers=operator, json=body), 422, slug)

    assert field in json.dumps(refused)
    assert listed(client, operator, all="true") == []


# --- the notification log -----------------------------------------------------------------------------------------


def seed_notifications(factory: sessionmaker[Session], clock: FakeClock) -> None:
    """A trigger of two rules to a webhook and PagerDuty, then a resolve of one."""
    config = parse_notification_config(
        "receivers: {oncall: {type: pagerduty, routing_key: k}, hooks: {type: webhook, url: 'https://h.test/x'}}\n"
        "routes: [{receivers: [oncall, hooks]}]"
    )

    def alert(kind: str, rule: str) -> AlertEvent:
        return AlertEvent(
            kind=kind,
            rule=rule,
            pipeline="reference-images",
            environment="production",
            severity="page",
            summary=f"{rule} {kind}",
            description="",
            at=clock(),
        )

    with session_scope(factory) as session:
        enqueue_notifications(session, config, [alert("trigger", "a"), alert("trigger", "b")], now=clock())
    clock.advance(timedelta(minutes=1))
    with session_scope(factory) as session:
        enqueue_notifications(session, config, [alert("resolve", "a")], now=clock())


def test_the_notification_log_is_newest_first_and_filtered(
    client: Client, viewer: dict[str, str], session_factory: sessionmaker[Session], clock: FakeClock
) -> None:
    seed_notifications(session_factory, clock)

    def log(**params: Any) -> list[dict[str, Any]]:
        response = client.get(f"{API}/notifications", headers=viewer, params=params)
        assert response.status_code == 200, response.text
        rows: list[dict[str, Any]] = response.json()
        return rows

    everything = log()
    assert [(n["receiver"], n["kind"], n["rule"]) for n in everything] == [
        ("hooks", "resolve", "a"),
        ("oncall", "resolve", "a"),
        ("hooks", "trigger", None),
        ("oncall", "trigger", "b"),
        ("oncall", "trigger", "a"),
    ]
    assert everything[0]["status"] == "pending" and everything[0]["attempts"] == 0
    assert everything[0]["payload"]["body"]["status"] == "resolved"
    assert "routing_key" not in json.dumps(everything)
    assert [n["kind"] for n in log(receiver="oncall", rule="a")] == ["resolve", "trigger"]
    assert len(log(status="pending", limit=2)) == 2
    assert log(status="sent") == []
    assert [n["id"] for n in log(before_id=everything[2]["id"])] == [everything[3]["id"], everything[4]["id"]]


def test_the_notification_log_refuses_an_unknown_status_and_a_caller_without_a_token(
    client: Client, viewer: dict[str, str]
) -> None:
    unknown = problem(
        client.get(f"{API}/notifications", headers=viewer, params={"status": "lost"}), 422, "invalid-body"
    )
    assert unknown["errors"][0]["key"] == "status"
    too_few = problem(client.get(f"{API}/notifications", headers=viewer, params={"limit": 0}), 422, "invalid-body")
    assert too_few["errors"][0]["key"] == "limit"
    problem(client.get(f"{API}/notifications"), 401, "unauthenticated")


# --- the CLI ------------------------------------------------------------------------------------------------------


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Run the CLI in-process; return its exit code, stdout and stderr."""
    try:
        main(list(argv))
        code = 0
    except SystemExit as exit_:
        code = int(exit_.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_adds_lists_and_expires_silences_and_shows_the_log(
    live_server: str,
    make_token: Callable[..., str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    session_factory: sessionmaker[Session],
    clock: FakeClock,
) -> None:
    monkeypatch.setenv("CONTROLPLANE_URL", live_server)
    monkeypatch.setenv("CONTROLPLANE_TOKEN", make_token(Role.OPERATOR, name="olivia-operator"))

    argv = ["silences", "add", "--rule", "upload-error-rate", "--environment", "production", "--duration", "2h"]
    code, out, err = run(capsys, *argv, "--comment", "db maintenance", "--json")
    assert code == 0, err
    silence = json.loads(out)
    assert silence["matchers"] == MATCHERS and silence["ends_at"] == when(clock, timedelta(hours=2))

    code, out, _ = run(capsys, "silences", "list")
    assert code == 0 and "rule=upload-error-rate" in out and "db maintenance" in out

    code, out, _ = run(capsys, "silences", "expire", str(silence["id"]))
    assert code == 0 and f"silence {silence['id']} expired" in out
    assert run(capsys, "silences", "list", "--json")[1].strip() == "[]"
    assert len(json.loads(run(capsys, "silences", "list", "--all", "--json")[1])) == 1

    code, _, err = run(capsys, "silences", "expire", str(silence["id"]))
    assert code == 1 and "409 silence-expired" in err
    code, _, err = run(capsys, "silences", "add", "--duration", "2h", "--comment", "everything")
    assert code == 1 and "--rule" in err
    code, _, err = run(capsys, "silences", "add", "--flag", "f", "--duration", "soon", "--comment", "x")
    assert code == 1 and "--duration `soon`" in err

    seed_notifications(session_factory, clock)
    code, out, _ = run(capsys, "notifications", "list", "--status", "pending")
    assert code == 0 and "oncall" in out and "a@production" in out
    code, out, _ = run(capsys, "notifications", "list", "--rule", "b", "--json")
    assert [n["rule"] for n in json.loads(out)] == ["b"]
