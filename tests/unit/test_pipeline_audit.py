"""`python -m pipeline audit`: exactly the runs of the window, what they used, and why some are flagged."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from pipeline.audit import main
from pipeline.runs import RunStore, append_delivery_audit_event, new_run_id

START = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
END = START + timedelta(hours=1)
KEPT, PURGED, BLURRY = "a" * 32, "b" * 32, "c" * 32


def reference(asset_id: str, expires: datetime) -> dict[str, Any]:
    return {
        "asset_id": asset_id,
        "role": "character",
        "object_name": f"reference-images/{asset_id}.png",
        "signed_url_expires_at": expires.isoformat(),
    }


def save_run(store: RunStore, created: datetime, ids: list[str], *, rejected: str | None = None) -> str:
    """A run as the workflow leaves it after generation (meta.json and its delivery audit trail)."""
    notes = [f"character {asset} visible: covers 9.0% of the canvas, contrast 40.0" for asset in ids]
    if rejected is not None:
        notes = [f"character {rejected} too small: covers 0.5% of the canvas, contrast 40.0; needs 2.0%"]
    state: dict[str, Any] = {
        "run_id": new_run_id(),
        "user_id": "user-7",
        "created_at": created.isoformat(),
        "flag": {"key": "enable-reference-images", "variant": "on", "enabled": True},
        "reference_images": [reference(asset, datetime.now(UTC) + timedelta(hours=24)) for asset in ids],
        "image_assets": {
            "status": "review_failed" if rejected else "pass",
            "references_used": ids,
            "variations": [{"index": 0, "status": "review_failed" if rejected else "pass", "notes": notes}],
        },
    }
    append_delivery_audit_event(state, "preflight_reference_images_resolved", at=created, reference_images=ids)
    store.save(state)
    return str(state["run_id"])


@pytest.fixture
def runs(tmp_path: Path) -> dict[str, str]:
    store = RunStore(tmp_path / "runs")
    return {
        "before": save_run(store, START - timedelta(microseconds=1), [PURGED]),
        "clean": save_run(store, START, [KEPT]),
        "purged": save_run(store, START + timedelta(minutes=5), [KEPT, PURGED]),
        "rejected": save_run(store, START + timedelta(minutes=9), [BLURRY], rejected=BLURRY),
        "again": save_run(store, START + timedelta(minutes=30), [BLURRY]),
        "at-end": save_run(store, END, [PURGED]),
    }


def audit(tmp_path: Path, *extra: str) -> list[str]:
    return [
        "--from",
        START.isoformat(),
        "--to",
        END.isoformat().replace("+00:00", "Z"),
        "--runs-dir",
        str(tmp_path / "runs"),
        *extra,
    ]


def still_stored(name: str) -> bool:
    return PURGED not in name


def test_the_json_lists_exactly_the_runs_of_the_window_and_flags_rejected_and_purged_references(
    tmp_path: Path, runs: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(audit(tmp_path, "--json"), still_stored=still_stored) == 0

    document = json.loads(capsys.readouterr().out)
    listed = {run["run_id"]: run for run in document["runs"]}
    assert list(listed) == [runs["clean"], runs["purged"], runs["rejected"], runs["again"]]  # [from, to)
    assert listed[runs["clean"]]["flagged"] == []
    assert listed[runs["purged"]]["references"] == [KEPT, PURGED]
    assert listed[runs["purged"]]["purged_references"] == [PURGED]
    assert listed[runs["purged"]]["flagged"] == [f"used purged reference {PURGED}"]
    rejected = listed[runs["rejected"]]
    assert (rejected["grade"], rejected["variation_grades"], rejected["rejected_references"]) == (
        "review_failed",
        ["review_failed"],
        [BLURRY],
    )
    # A later run that used the reference the review rejected earlier in the window is flagged too.
    assert listed[runs["again"]]["flagged"] == [f"used rejected reference {BLURRY}"]


def test_the_table_shows_one_line_per_run_and_the_count_of_flagged_runs(
    tmp_path: Path, runs: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(audit(tmp_path), still_stored=still_stored) == 0

    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == [
        "run", "created", "user", "variant", "references", "grade", "variations", "rejected", "flagged"
    ]  # fmt: skip
    assert [line.split()[0] for line in lines[1:-1]] == [runs[k] for k in ("clean", "purged", "rejected", "again")]
    assert lines[-1] == "4 runs, 3 flagged"


@pytest.mark.parametrize(
    ("start", "end", "said"),
    [
        ("yesterday", "2026-11-01T13:00:00Z", "not an ISO 8601 time"),
        ("2026-11-01T12:00:00", "2026-11-01T13:00:00Z", "no UTC offset"),
        ("2026-11-01T13:00:00Z", "2026-11-01T12:00:00Z", "is not before"),
    ],
)
def test_a_bad_time_is_a_clear_error_with_exit_code_2(
    tmp_path: Path, start: str, end: str, said: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--from", start, "--to", end, "--runs-dir", str(tmp_path), "--no-bucket"])

    assert exited.value.code == 2
    assert said in capsys.readouterr().err
