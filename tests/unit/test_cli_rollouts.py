"""The rollout status table's progress-deadline line: when it passes, that it passed, and whether it was told."""

from __future__ import annotations

from controlplane.cli.rollouts import _deadline


def test_the_deadline_line_says_when_it_passes_and_whether_it_was_told() -> None:
    assert _deadline({"progress_deadline_at": None}) == "-"
    pending = {"progress_deadline_at": "2026-11-01T13:15:00Z", "progress_deadline_passed": False}
    assert _deadline(pending) == "2026-11-01 13:15:00"
    passed = pending | {"progress_deadline_passed": True, "progress_deadline_notified_at": None}
    assert _deadline(passed) == "passed at 2026-11-01 13:15:00 (not told yet)"
    told = passed | {"progress_deadline_notified_at": "2026-11-01T13:15:10Z"}
    assert _deadline(told) == "passed at 2026-11-01 13:15:00 (told at 2026-11-01 13:15:10)"
