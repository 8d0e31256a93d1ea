"""Notification messages and decisions as pure functions: payload shapes, severity mapping, dedup keys, grouping,
the de-duplication and silencing table, and the retry rules."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from controlplane.notifications.dedup import Action, Notified, decide, notified_state, silence_matches
from controlplane.notifications.jobs import classify_response, parse_retry_after, retry_delay
from controlplane.notifications.messages import (
    AlertEvent,
    bounded_dedup_key,
    group_status,
    highest_severity,
    is_change_event,
    pagerduty_event,
    slack_message,
    webhook_message,
    with_routing_key,
)

AT = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
RUNBOOK = "https://runbooks.example/upload-error-rate"


def event(kind: str = "trigger", **changes: Any) -> AlertEvent:
    fields: dict[str, Any] = {
        "kind": kind,
        "rule": "upload-error-rate",
        "pipeline": "reference-images",
        "environment": "production",
        "severity": "page",
        "summary": "upload-error-rate firing in production: 4.2% > 3% over 5m",
        "description": "measured 0.042 (42 of 1000 uploads) against ratio > 3% over 5m",
        "at": AT,
        "flag": "enable-reference-images",
        "value": 0.042,
        "threshold": "3%",
        "op": ">",
        "window_seconds": 300.0,
        "runbook_url": RUNBOOK,
        "details": {"samples": 1000},
    }
    fields.update(changes)
    return AlertEvent(**fields)


# --- AlertEvent ---------------------------------------------------------------------------------------------------


def test_dedup_key_names_pipeline_rule_and_environment() -> None:
    assert event().dedup_key == "controlplane/reference-images/upload-error-rate/production"
    assert event(environment="staging").dedup_key != event().dedup_key
    assert event("resolve").dedup_key == event("rollback").dedup_key == event().dedup_key


def test_an_event_refuses_an_unknown_kind_and_a_naive_or_non_utc_time() -> None:
    with pytest.raises(ValueError, match="kind"):
        event("firing")
    with pytest.raises(ValueError, match="UTC"):
        event(at=datetime(2026, 11, 23, 12, 0))
    with pytest.raises(ValueError, match="UTC"):
        event(at=datetime(2026, 11, 23, 12, 0, tzinfo=timezone(timedelta(hours=1))))


def test_an_overlong_dedup_key_is_shortened_stably_to_pagerdutys_255_characters() -> None:
    key = "controlplane/" + "p" * 128 + "/" + "r" * 128 + "/production"
    short = bounded_dedup_key(key)
    assert len(short) == 255
    assert short == bounded_dedup_key(key)
    assert short != bounded_dedup_key(key.replace("production", "staging"))
    assert bounded_dedup_key("controlplane/a/b/c") == "controlplane/a/b/c"


# --- PagerDuty ----------------------------------------------------------------------------------------------------


def test_pagerduty_trigger_has_the_events_api_v2_shape() -> None:
    body = with_routing_key(pagerduty_event(event()), "R" * 32)

    assert list(body) == ["routing_key", "event_action", "dedup_key", "payload", "links"]
    assert body["routing_key"] == "R" * 32
    assert body["event_action"] == "trigger"
    assert body["dedup_key"] == "controlplane/reference-images/upload-error-rate/production"
    assert body["payload"] == {
        "summary": "upload-error-rate firing in production: 4.2% > 3% over 5m",
        "source": "controlplane",
        "severity": "critical",
        "timestamp": "2026-11-23T12:00:00+00:00",
        "component": "enable-reference-images",
        "group": "reference-images",
        "class": "upload-error-rate",
        "custom_details": {
            "samples": 1000,
            "kind": "trigger",
            "pipeline": "reference-images",
            "environment": "production",
            "rule": "upload-error-rate",
            "flag": "enable-reference-images",
            "value": 0.042,
            "threshold": "3%",
            "op": ">",
            "window_seconds": 300.0,
            "description": "measured 0.042 (42 of 1000 uploads) against ratio > 3% over 5m",
            "runbook_url": RUNBOOK,
        },
    }
    assert body["links"] == [{"href": RUNBOOK, "text": "Runbook"}]


def test_pagerduty_resolve_carries_only_routing_key_dedup_key_and_action() -> None:
    body = with_routing_key(pagerduty_event(event("resolve")), "R" * 32)

    assert body == {
        "routing_key": "R" * 32,
        "event_action": "resolve",
        "dedup_key": "controlplane/reference-images/upload-error-rate/production",
    }


def test_pagerduty_rollback_is_a_trigger_on_the_same_incident_saying_the_flag_was_rolled_back() -> None:
    rollback = event("rollback", summary="upload-error-rate: 4.2% > 3% over 5m")
    body = pagerduty_event(rollback)

    assert body["event_action"] == "trigger"
    assert body["dedup_key"] == pagerduty_event(event())["dedup_key"]
    assert body["payload"]["summary"].startswith("enable-reference-images rolled back in production: ")
    assert body["payload"]["custom_details"]["kind"] == "rollback"


def test_a_rollback_summary_that_already_says_so_is_not_prefixed_again() -> None:
    summary = "enable-reference-images rolled back in production by upload-error-rate: 0.042 > 3%"
    assert pagerduty_event(event("rollback", summary=summary))["payload"]["summary"] == summary


@pytest.mark.parametrize(
    ("severity", "expected"),
    [("page", "critical"), ("ticket", "warning"), ("info", "info"), ("warning", "warning"), ("sev1", "error")],
)
def test_severities_map_onto_pagerdutys(severity: str, expected: str) -> None:
    assert pagerduty_event(event(severity=severity))["payload"]["severity"] == expected


def test_pagerduty_summary_is_cut_to_1024_characters_and_optional_fields_are_left_out() -> None:
    body = pagerduty_event(event(summary="x" * 5000, flag=None, runbook_url=""))

    assert len(body["payload"]["summary"]) == 1024
    assert "component" not in body["payload"]
    assert "links" not in body


def test_values_json_cannot_hold_are_sent_as_text_and_details_never_override_measurements() -> None:
    body = pagerduty_event(
        event(value=float("nan"), details={"value": "spoofed", "at": AT, "ratio": float("inf"), "tags": ("a", 1)})
    )
    details = body["payload"]["custom_details"]

    assert details["value"] == "nan"
    assert details["ratio"] == "inf"
    assert details["at"] == "2026-11-23 12:00:00+00:00"
    assert details["tags"] == ["a", 1]


# --- webhook ------------------------------------------------------------------------------------------------------


def test_webhook_message_lists_every_alert_of_the_group() -> None:
    events = [event(), event("resolve", rule="vision-errors", severity="ticket")]
    body = webhook_message("hooks", events)

    assert body["version"] == "1"
    assert body["receiver"] == "hooks"
    assert body["status"] == "firing"
    assert [alert["status"] for alert in body["alerts"]] == ["firing", "resolved"]
    first = body["alerts"][0]
    assert first["dedup_key"] == events[0].dedup_key
    assert first["value"] == 0.042 and first["threshold"] == "3%" and first["op"] == ">"
    assert first["window_seconds"] == 300.0 and first["at"] == "2026-11-23T12:00:00+00:00"
    assert first["details"] == {"samples": 1000}


def test_group_status_is_resolved_only_when_every_event_resolves() -> None:
    assert group_status([event("resolve"), event("resolve")]) == "resolved"
    assert group_status([event("resolve"), event("rollback")]) == "firing"
    assert webhook_message("hooks", [event("rollback")])["alerts"][0]["status"] == "rolled_back"


def test_highest_severity_of_a_group() -> None:
    assert highest_severity([event(severity="info"), event(severity="ticket")]) == "ticket"
    assert highest_severity([event(severity="info"), event(severity="page")]) == "page"


# --- Slack --------------------------------------------------------------------------------------------------------


def test_slack_message_for_one_alert_has_fallback_text_and_one_section() -> None:
    body = slack_message([event()])

    assert body["text"] == "[FIRING] upload-error-rate firing in production: 4.2% > 3% over 5m"
    assert [block["type"] for block in body["blocks"]] == ["section"]
    section = body["blocks"][0]["text"]
    assert section["type"] == "mrkdwn"
    assert "*FIRING* (page) `upload-error-rate` in *production*" in section["text"]
    assert f"<{RUNBOOK}|Runbook>" in section["text"]


def test_slack_message_groups_alerts_under_a_counting_header() -> None:
    body = slack_message([event(), event("resolve", rule="vision-errors"), event("rollback")])

    assert body["text"].splitlines()[0] == "3 alerts: 1 firing, 1 resolved, 1 rolled back"
    assert [block["type"] for block in body["blocks"]] == ["header", "section", "section", "section"]
    assert "ROLLED BACK" in body["blocks"][3]["text"]["text"]


def test_slack_message_escapes_control_characters_and_stays_within_50_blocks() -> None:
    escaped = slack_message([event(summary="a <b> & c")])["blocks"][0]["text"]["text"]
    assert "a &lt;b&gt; &amp; c" in escaped

    body = slack_message([event(rule=f"rule-{i}") for i in range(60)])
    assert len(body["blocks"]) == 50
    assert body["blocks"][-1]["type"] == "context"
    assert "and 12 more" in body["blocks"][-1]["elements"][0]["text"]
    assert len(body["text"]) <= 3000


# --- de-duplication and silencing ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "state", "silenced", "action", "after"),
    [
        ("trigger", Notified.CLOSED, False, Action.SEND, Notified.OPEN),
        ("trigger", Notified.OPEN, False, Action.DROP, Notified.OPEN),
        ("trigger", Notified.MUTED, False, Action.SEND, Notified.OPEN),
        ("trigger", Notified.CLOSED, True, Action.SILENCE, Notified.MUTED),
        ("trigger", Notified.OPEN, True, Action.DROP, Notified.OPEN),
        ("trigger", Notified.MUTED, True, Action.DROP, Notified.MUTED),
        ("rollback", Notified.CLOSED, False, Action.SEND, Notified.OPEN),
        ("rollback", Notified.OPEN, False, Action.SEND, Notified.OPEN),
        ("rollback", Notified.OPEN, True, Action.SILENCE, Notified.OPEN),
        ("rollback", Notified.MUTED, True, Action.SILENCE, Notified.MUTED),
        ("resolve", Notified.CLOSED, False, Action.DROP, Notified.CLOSED),
        ("resolve", Notified.OPEN, False, Action.SEND, Notified.CLOSED),
        ("resolve", Notified.OPEN, True, Action.SEND, Notified.CLOSED),
        ("resolve", Notified.MUTED, True, Action.SILENCE, Notified.CLOSED),
        ("resolve", Notified.MUTED, False, Action.SILENCE, Notified.CLOSED),
        # A rollout step is a trigger of its own key: told once, recorded once when silenced.
        ("stage_advanced", Notified.CLOSED, False, Action.SEND, Notified.OPEN),
        ("stage_advanced", Notified.OPEN, False, Action.DROP, Notified.OPEN),
        ("progress_deadline_passed", Notified.CLOSED, True, Action.SILENCE, Notified.MUTED),
        ("progress_deadline_passed", Notified.MUTED, True, Action.DROP, Notified.MUTED),
    ],
)
def test_the_decision_table(kind: str, state: Notified, silenced: bool, action: Action, after: Notified) -> None:
    decision = decide(kind, state, silenced=silenced)
    assert (decision.action, decision.state) == (action, after)


def test_notified_state_reads_the_newest_settling_event() -> None:
    assert notified_state([]) is Notified.CLOSED
    assert notified_state([("trigger", False)]) is Notified.OPEN
    assert notified_state([("resolve", False), ("trigger", False)]) is Notified.CLOSED
    assert notified_state([("trigger", True)]) is Notified.MUTED
    assert notified_state([("trigger", True), ("resolve", False), ("trigger", False)]) is Notified.MUTED
    # A silenced rollback on an open incident leaves it open.
    assert notified_state([("rollback", True), ("trigger", False)]) is Notified.OPEN


def test_silence_matchers_are_equality_on_every_field_given() -> None:
    alert = event()
    assert silence_matches({"rule": "upload-error-rate", "environment": "production"}, alert)
    assert silence_matches({"flag": "enable-reference-images"}, alert)
    assert silence_matches({"severity": "page", "pipeline": "reference-images"}, alert)
    assert not silence_matches({"rule": "upload-error-rate", "environment": "staging"}, alert)
    assert not silence_matches({"flag": "other"}, event(flag=None))
    assert not silence_matches({}, alert)
    assert not silence_matches({"summary": alert.summary}, alert)


# --- retries ------------------------------------------------------------------------------------------------------


def test_backoff_doubles_from_one_second_up_to_five_minutes_with_full_jitter() -> None:
    assert [retry_delay(n, jitter=1.0).total_seconds() for n in range(1, 11)] == [
        1,
        2,
        4,
        8,
        16,
        32,
        64,
        128,
        256,
        300,
    ]
    assert retry_delay(4, jitter=0.5).total_seconds() == 4
    assert retry_delay(4, jitter=0.0).total_seconds() == 0
    assert retry_delay(10_000, jitter=1.0).total_seconds() == 300


def test_retry_after_is_a_floor_but_never_more_than_an_hour() -> None:
    assert retry_delay(1, jitter=0.0, retry_after=30).total_seconds() == 30
    assert retry_delay(9, jitter=1.0, retry_after=30).total_seconds() == 256
    assert retry_delay(1, jitter=0.0, retry_after=86400).total_seconds() == 3600
    assert parse_retry_after("120", now=AT) == 120
    assert parse_retry_after("Mon, 23 Nov 2026 12:01:30 GMT", now=AT) == 90
    assert parse_retry_after("soon", now=AT) is None
    assert parse_retry_after(None, now=AT) is None


@pytest.mark.parametrize(
    ("receiver", "status", "result"),
    [
        ("pagerduty", 202, "sent"),
        ("webhook", 204, "sent"),
        ("slack", 200, "sent"),
        ("slack", 204, "failed"),
        ("pagerduty", 429, "retry"),
        ("webhook", 500, "retry"),
        ("slack", 503, "retry"),
        ("pagerduty", 400, "failed"),
        ("slack", 404, "failed"),
        ("webhook", 301, "failed"),
    ],
)
def test_which_answers_are_sent_retried_or_failed(receiver: str, status: int, result: str) -> None:
    outcome = classify_response(receiver, status, None, '{"status":"invalid event"}', now=AT)
    assert outcome.result == result
    if result != "sent":
        assert outcome.error is not None and outcome.error.startswith(f"HTTP {status}")


# --- rollout steps ----------------------------------------------------------------------------------------------


def step(kind: str = "stage_advanced", **changes: Any) -> AlertEvent:
    fields: dict[str, Any] = {
        "kind": kind,
        "rule": "rollout",
        "pipeline": "reference-images",
        "environment": "production",
        "severity": "info",
        "summary": "enable-reference-images in production: advanced to stage 2/3 (50%)",
        "description": "by olivia: 10% is healthy",
        "at": AT,
        "flag": "enable-reference-images",
        "key": "enable-reference-images/production/revision-7",
        "details": {"actor": "olivia", "stage": 2, "percentage": 50.0},
    }
    fields.update(changes)
    return AlertEvent(**fields)


def test_a_rollout_step_is_keyed_by_its_own_step_and_needs_a_key() -> None:
    assert step().dedup_key == "controlplane/rollout/enable-reference-images/production/revision-7"
    with pytest.raises(ValueError, match="needs the `key`"):
        step(key="")


def test_a_rollout_step_goes_to_pagerduty_as_a_change_event_without_action_dedup_key_or_severity() -> None:
    body = pagerduty_event(step())

    assert body == {
        "payload": {
            "summary": "enable-reference-images in production: advanced to stage 2/3 (50%)",
            "source": "controlplane",
            "timestamp": AT.isoformat(),
            "custom_details": {
                "actor": "olivia",
                "stage": 2,
                "percentage": 50.0,
                "kind": "stage_advanced",
                "pipeline": "reference-images",
                "environment": "production",
                "flag": "enable-reference-images",
                "description": "by olivia: 10% is healthy",
            },
        }
    }
    assert is_change_event(body)
    assert not is_change_event(pagerduty_event(event()))
    assert not is_change_event(pagerduty_event(event("resolve")))


def test_rollout_steps_in_slack_and_the_webhook_name_the_flag_and_say_what_changed() -> None:
    slack = slack_message([step(), step("progress_deadline_passed", severity="ticket", key="k2")])
    assert slack["text"].splitlines()[1] == (
        "[STAGE ADVANCED] enable-reference-images in production: advanced to stage 2/3 (50%)"
    )
    assert "*PROGRESS DEADLINE PASSED* (ticket) `enable-reference-images` in *production*" in str(slack["blocks"])
    hook = webhook_message("hooks", [step()])
    assert (hook["status"], hook["alerts"][0]["status"], hook["alerts"][0]["kind"]) == (
        "changed",
        "stage_advanced",
        "stage_advanced",
    )
    assert group_status([step(), event()]) == "firing"
