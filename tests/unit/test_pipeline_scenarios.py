"""The QA canary scenarios' check of a run's meta.json, and the reference images they upload."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from pipeline.generator import GenerationRequest, Grade, LocalGenerator, ReferenceImage, ReferenceRole
from pipeline.images import CheckedImage, check_upload
from pipeline.scenarios import Expected, Reference, check_scenario, expected_trail, reference_image
from pipeline.vision import LocalAnalyzer

CHARACTER = Reference("a" * 32, "character")
PRODUCT = Reference("b" * 32, "product")
CREATED = "2026-11-01T12:00:00+00:00"
EARLY, LATE = "2026-11-02T12:00:00+00:00", "2026-11-02T12:00:05+00:00"
RUN_ID = "c" * 32


def good_meta(references: tuple[Reference, ...], *, flag_on: bool = True) -> dict[str, Any]:
    """A run's meta.json as the workflow writes it for these references (resolved when the flag is on)."""
    used = references if flag_on else ()
    ids = [reference.asset_id for reference in references]
    expiries = [EARLY, LATE]
    stored = [
        {"asset_id": r.asset_id, "role": r.role, "signed_url_expires_at": expiries[i % 2], "object_name": "x"}
        for i, r in enumerate(used)
    ]
    assets = [{"asset_id": r.asset_id, "role": r.role} for r in used]
    preflight: dict[str, Any] = (
        {"event": "preflight_reference_images_resolved", "at": CREATED, "reference_images": ids}
        if flag_on
        else {"event": "preflight_reference_images_ignored", "at": CREATED, "ignored": ids, "reason": "off"}
    )
    return {
        "run_id": RUN_ID,
        "user_id": "qa",
        "prompt": "QA canary",
        "environment": "production",
        "created_at": CREATED,
        "flag": {"key": "enable-reference-images", "variant": "on" if flag_on else "off", "enabled": flag_on},
        "requested_reference_image_ids": ids,
        "reference_images_present": bool(used),
        "reference_images": stored,
        "signed_url_expires_at": EARLY if used else None,
        "image_assets": {
            "status": "pass",
            "variations": [
                {"index": index, "status": "pass", "reference_assets": assets, "notes": []} for index in range(3)
            ],
            "references_used": [r.asset_id for r in used],
            "safe_search_notes": {},
            "critical_errors": [],
        },
        "delivery_audit_trail": [
            {"event": "run_started", "at": CREATED, "user": "qa", "variant": "on"},
            preflight,
            {"event": "image_assets_generation_start", "at": CREATED, "references_used": []},
            {"event": "image_assets_generation_complete", "at": CREATED, "status": "pass"},
        ],
    }


def expected(references: tuple[Reference, ...], *, flag_on: bool = True) -> Expected:
    return Expected("scenario", "qa", flag_on, references, RUN_ID)


SCENARIOS = [(), (CHARACTER,), (PRODUCT,), (CHARACTER, PRODUCT)]


@pytest.mark.parametrize("references", SCENARIOS)
@pytest.mark.parametrize("flag_on", [True, False])
def test_a_run_as_the_workflow_writes_it_passes(references: tuple[Reference, ...], flag_on: bool) -> None:
    assert check_scenario(expected(references, flag_on=flag_on), good_meta(references, flag_on=flag_on)) == []


def test_the_trail_names_the_preflight_step_the_flag_took() -> None:
    assert expected_trail(flag_on=True)[1] == "preflight_reference_images_resolved"
    assert expected_trail(flag_on=False)[1] == "preflight_reference_images_ignored"


BOTH = (CHARACTER, PRODUCT)


def broken(change: Any, references: tuple[Reference, ...] = BOTH, *, flag_on: bool = True) -> list[str]:
    meta = good_meta(references, flag_on=flag_on)
    change(meta)
    return check_scenario(expected(references, flag_on=flag_on), meta)


def test_references_missing_from_the_run_fail() -> None:
    def drop(meta: dict[str, Any]) -> None:
        meta["reference_images_present"] = False
        meta["reference_images"] = []

    problems = broken(drop)
    assert any("reference_images_present is False; expected True" in problem for problem in problems)
    assert any("reference_images are []" in problem for problem in problems)


def test_a_reference_stored_with_another_role_fails() -> None:
    problems = broken(lambda meta: meta["reference_images"][0].update(role="product"))
    assert problems == [
        f"reference_images are {[(CHARACTER.asset_id, 'product'), (PRODUCT.asset_id, 'product')]}; "
        f"expected {[(CHARACTER.asset_id, 'character'), (PRODUCT.asset_id, 'product')]}"
    ]


def test_a_variation_that_failed_review_fails_with_its_notes() -> None:
    def fail(meta: dict[str, Any]) -> None:
        meta["image_assets"]["status"] = "review_failed"
        meta["image_assets"]["variations"][2].update(status="review_failed", notes=["product too small"])

    problems = broken(fail)
    assert "image_assets.status is 'review_failed'; expected 'pass'" in problems
    assert "variation 2 status is 'review_failed'; expected 'pass' (product too small)" in problems


def test_a_variation_without_its_references_fails() -> None:
    problems = broken(lambda meta: meta["image_assets"]["variations"][1].update(reference_assets=[]))
    assert len(problems) == 1 and problems[0].startswith("variation 1 carries []")


def test_references_used_and_the_variation_count_are_checked() -> None:
    def change(meta: dict[str, Any]) -> None:
        meta["image_assets"]["references_used"] = [CHARACTER.asset_id]
        meta["image_assets"]["variations"].pop()

    problems = broken(change)
    assert any(problem.startswith("image_assets.references_used") for problem in problems)
    assert "image_assets.variations: 2; expected 3 variations" in problems


def test_no_assets_generated_fails() -> None:
    assert "image_assets is None; expected the generated assets" in broken(lambda meta: meta.update(image_assets=None))


def test_the_trail_out_of_order_fails() -> None:
    def swap(meta: dict[str, Any]) -> None:
        trail = meta["delivery_audit_trail"]
        trail[2], trail[3] = trail[3], trail[2]

    problems = broken(swap)
    assert len(problems) == 1 and problems[0].startswith("delivery_audit_trail is ['run_started'")


def test_a_signed_url_anywhere_in_meta_fails() -> None:
    def leak(meta: dict[str, Any]) -> None:
        meta["reference_images"][1]["signed_url"] = "https://storage.googleapis.com/x?X-Goog-Signature=1"
        meta["delivery_audit_trail"][1]["signed_url"] = "https://..."

    assert broken(leak) == [
        "meta.json holds a signed URL at reference_images[1].signed_url",
        "meta.json holds a signed URL at delivery_audit_trail[1].signed_url",
    ]


def test_an_expiry_without_references_fails() -> None:
    problems = broken(lambda meta: meta.update(signed_url_expires_at=EARLY), ())
    assert problems == [f"signed_url_expires_at is {EARLY!r} without references; expected None"]


def test_the_expiry_must_be_the_earliest_reference_expiry_and_after_creation() -> None:
    assert broken(lambda meta: meta.update(signed_url_expires_at=LATE)) == [
        f"signed_url_expires_at {LATE} is not the earliest reference expiry {EARLY}"
    ]
    problems = broken(lambda meta: meta.update(created_at="2026-11-03T00:00:00+00:00"))
    assert problems == [f"signed_url_expires_at {EARLY} is not after the run was created (2026-11-03T00:00:00+00:00)"]
    assert broken(lambda meta: meta.update(signed_url_expires_at=None)) == [
        "signed_url_expires_at is None; expected an ISO time with its offset"
    ]
    assert broken(lambda meta: meta.update(signed_url_expires_at="2026-11-02T12:00:00")) == [
        "signed_url_expires_at is '2026-11-02T12:00:00'; expected an ISO time with its offset"
    ]


def test_a_run_for_another_user_or_run_fails() -> None:
    problems = broken(lambda meta: meta.update(user_id="someone", run_id="d" * 32), ())
    assert problems == [f"run_id is {'d' * 32!r}; expected {RUN_ID}", "user_id is 'someone'; expected qa"]


def test_with_the_flag_off_resolved_references_fail() -> None:
    meta = good_meta(BOTH, flag_on=True)
    problems = check_scenario(expected(BOTH, flag_on=False), meta)
    assert any("flag enable-reference-images is on (variant 'on') for the run; expected off" in p for p in problems)
    assert any("reference_images_present is True; expected False" in p for p in problems)
    assert any(p.startswith("delivery_audit_trail is") for p in problems)


def test_with_the_flag_off_preflight_must_ignore_the_ids_sent() -> None:
    problems = broken(lambda meta: meta["delivery_audit_trail"][1].update(ignored=[]), flag_on=False)
    assert problems == [f"preflight ignored []; expected the ids sent, {[CHARACTER.asset_id, PRODUCT.asset_id]}"]


def test_the_check_does_not_change_the_meta() -> None:
    meta = good_meta(BOTH)
    before = copy.deepcopy(meta)
    check_scenario(expected(BOTH), meta)
    assert meta == before


@pytest.mark.parametrize("role", ["character", "product"])
def test_the_reference_images_pass_the_upload_checks_and_vision(role: str) -> None:
    data = reference_image(role)
    checked = check_upload(data)
    assert isinstance(checked, CheckedImage)
    assert LocalAnalyzer().analyze(data, checked.content_type.value).accepted


def test_generation_with_both_reference_images_passes_review() -> None:
    references = tuple(
        ReferenceImage(f"{index:032x}", ReferenceRole(role), reference_image(role))
        for index, role in enumerate(["character", "product"])
    )
    for seed in range(4):
        result = LocalGenerator().generate(GenerationRequest(prompt="QA canary", seed=seed, references=references))
        assert result.grade is Grade.PASS, [variation.notes for variation in result.variations]
