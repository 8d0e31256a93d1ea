"""Unit tests for the `cleanup:` section of pipeline definitions and the cron helpers behind it: what the shipped
file declares, and every refusal naming the field path and the line it is about."""

from __future__ import annotations

import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from controlplane.cleanup.policies import selection_from_json, selection_to_json
from controlplane.cleanup.schedule import allowed_gap, check_cron, longest_gap, next_slot
from controlplane.cleanup.selection import DeleteAfterAge, ExpiredSignedUrls, KeepObject, OlderThan, UploadedBetween
from controlplane.definitions.document import DefinitionError
from controlplane.definitions.loader import load_definition, parse_definition
from controlplane.definitions.schemas import PipelineDefinition

ENVIRONMENTS = ("dev", "qa", "staging", "production")
DEFINITIONS = Path(__file__).resolve().parents[2] / "definitions"

VALID = textwrap.dedent(
    """\
    pipeline: demo
    flags:
      - key: demo-flag
        type: boolean
        variants: {"on": true, "off": false}
        off_variant: "off"
    cleanup:
      - name: expired-uploads
        description: Uploads whose signed URL expired.
        bucket: demo-uploads
        prefix: uploads/
        schedule: "17 * * * *"
        select:
          expired_signed_urls:
            grace: 30m
            missing_metadata: keep
      - name: old-uploads
        bucket: demo-uploads
        schedule: "0 3 * * *"
        alert_after: 3d
        select:
          older_than: {days: 90}
    """
)


def parse(text: str) -> PipelineDefinition:
    return parse_definition(text, source="demo.yaml", environments=ENVIRONMENTS)


def edited(old: str, new: str, text: str = VALID) -> str:
    assert text.count(old) == 1, old
    return text.replace(old, new)


def assert_refused(text: str, path: str, line_text: str, *reason: str) -> None:
    """Loading ``text`` fails on ``path``, on the line holding ``line_text``, with every ``reason`` in its reason."""
    with pytest.raises(DefinitionError) as caught:
        parse(text)
    error = caught.value
    assert text.count(line_text) == 1, line_text
    line = text[: text.index(line_text)].count("\n") + 1
    assert (error.path, error.line) == (path, line), error
    for part in reason:
        assert part in error.reason, error.reason


def test_policies_are_built_as_written() -> None:
    expired, old = parse(VALID).cleanup
    assert expired.name == "expired-uploads" and expired.pipeline == "demo"
    assert (expired.bucket, expired.prefix, expired.schedule) == ("demo-uploads", "uploads/", "17 * * * *")
    assert expired.selection == ExpiredSignedUrls(grace=timedelta(minutes=30), missing_metadata=KeepObject())
    assert expired.alert_after is None
    assert old.selection == OlderThan(90) and old.prefix == "" and old.alert_after == timedelta(days=3)


def test_the_shipped_reference_images_policy() -> None:
    definition = load_definition(DEFINITIONS / "reference-images.yaml", environments=ENVIRONMENTS)
    [policy] = definition.cleanup
    assert policy.name == "expired-reference-images"
    assert (policy.bucket, policy.prefix, policy.schedule) == ("reference-images", "reference-images/", "17 * * * *")
    assert policy.selection == ExpiredSignedUrls(grace=timedelta(hours=1), missing_metadata=DeleteAfterAge(30))


def test_missing_metadata_may_delete_after_an_age() -> None:
    text = edited("missing_metadata: keep", "missing_metadata: {delete_after_days: 30}")
    assert parse(text).cleanup[0].selection == ExpiredSignedUrls(timedelta(minutes=30), DeleteAfterAge(30))


def test_a_schedule_is_optional_for_a_policy_run_by_hand() -> None:
    text = edited('    schedule: "17 * * * *"\n', "")
    assert parse(text).cleanup[0].schedule is None


@pytest.mark.parametrize(
    ("old", "new", "path", "line_text", "reason"),
    [
        (
            "- name: old-uploads",
            "- name: expired-uploads",
            "cleanup[1].name",
            "- name: expired-uploads\n    bucket",
            "already declared at cleanup[0]",
        ),
        ("- name: old-uploads", "- name: Old_Uploads", "cleanup[1].name", "Old_Uploads", "lowercase words"),
        (
            "bucket: demo-uploads\n    prefix",
            "bucket: Demo_Uploads\n    prefix",
            "cleanup[0].bucket",
            "Demo_Uploads",
            "not a Cloud Storage bucket name",
        ),
        (
            "bucket: demo-uploads\n    prefix",
            "bucket: google-images\n    prefix",
            "cleanup[0].bucket",
            "google-images",
            "`google`",
        ),
        ('schedule: "17 * * * *"', 'schedule: "61 * * * *"', "cleanup[0].schedule", "61 * * * *", "five-field cron"),
        ('schedule: "17 * * * *"', 'schedule: "@hourly"', "cleanup[0].schedule", "@hourly", "five-field cron"),
        ('schedule: "17 * * * *"', 'schedule: "0 0 30 2 *"', "cleanup[0].schedule", "0 0 30 2 *", "never fires"),
        ("alert_after: 3d", "alert_after: 1d", "cleanup[1].alert_after", "alert_after: 1d", "longest gap"),
        ("alert_after: 3d", "alert_after: soon", "cleanup[1].alert_after", "alert_after: soon", "not a duration"),
        ("grace: 30m", "grace: 8d", "cleanup[0].select.expired_signed_urls.grace", "grace: 8d", "at most 7d"),
        (
            "missing_metadata: keep",
            "missing_metadata: delete",
            "cleanup[0].select.expired_signed_urls.missing_metadata",
            "missing_metadata: delete",
            "",
        ),
        (
            "older_than: {days: 90}",
            "older_than: {days: 0}",
            "cleanup[1].select.older_than.days",
            "older_than: {days: 0}",
            ">= 1",
        ),
    ],
)
def test_a_policy_that_cannot_work_is_refused_on_its_line(
    old: str, new: str, path: str, line_text: str, reason: str
) -> None:
    assert_refused(edited(old, new), path, line_text, reason)


def test_a_policy_needs_exactly_one_selection() -> None:
    both = edited(
        "older_than: {days: 90}", "older_than: {days: 90}\n      expired_signed_urls: {missing_metadata: keep}"
    )
    assert_refused(both, "cleanup[1].select", "select:\n      older_than", "exactly one", "`older_than`")
    none = edited(
        "      older_than: {days: 90}\n", "", edited("select:\n      older_than", "select: {}\n      older_than")
    )
    assert_refused(none, "cleanup[1].select", "select: {}", "exactly one")


def test_missing_metadata_must_be_stated() -> None:
    text = edited("        missing_metadata: keep\n", "")
    assert_refused(text, "cleanup[0].select.expired_signed_urls.missing_metadata", "expired_signed_urls:", "required")


def test_alert_after_without_a_schedule_is_refused() -> None:
    text = edited('    schedule: "0 3 * * *"\n', "")
    assert_refused(text, "cleanup[1].alert_after", "alert_after: 3d", "needs a `schedule`")


# --- the cron helpers --------------------------------------------------------------------------------------------


def test_next_slot_is_strictly_after_and_in_utc() -> None:
    at = datetime(2026, 11, 23, 5, 17, tzinfo=UTC)
    assert next_slot("17 * * * *", at) == at + timedelta(hours=1)
    assert next_slot("17 * * * *", at - timedelta(microseconds=1)) == at
    assert next_slot("0 3 * * *", at).tzinfo is UTC


@pytest.mark.parametrize(
    ("expression", "gap"),
    [
        ("17 * * * *", timedelta(hours=1)),
        ("*/15 * * * *", timedelta(minutes=15)),
        ("0 3 * * *", timedelta(days=1)),
        ("0 3 * * 1-5", timedelta(days=3)),  # Friday to Monday
        ("0 0 1 * *", timedelta(days=31)),
    ],
)
def test_longest_gap_of_a_schedule(expression: str, gap: timedelta) -> None:
    assert longest_gap(expression) == gap


def test_allowed_gap_is_twice_the_longest_unless_stated() -> None:
    assert allowed_gap("17 * * * *", None) == timedelta(hours=2)
    assert allowed_gap("17 * * * *", timedelta(hours=5)) == timedelta(hours=5)


def test_a_cron_that_never_fires_is_refused() -> None:
    with pytest.raises(ValueError, match="never fires"):
        check_cron("0 0 31 2 *")


@pytest.mark.parametrize(
    "selection",
    [
        ExpiredSignedUrls(timedelta(seconds=90), KeepObject()),
        ExpiredSignedUrls(timedelta(0), DeleteAfterAge(7)),
        OlderThan(30),
        UploadedBetween(datetime(2026, 11, 23, 1, tzinfo=UTC), datetime(2026, 11, 23, 2, 30, 0, 5, tzinfo=UTC)),
    ],
)
def test_selections_survive_their_stored_form(selection: ExpiredSignedUrls | OlderThan | UploadedBetween) -> None:
    assert selection_from_json(selection_to_json(selection)) == selection
