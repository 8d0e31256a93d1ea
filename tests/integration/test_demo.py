"""The one-command demo, shortened: a production canary at 10%, Vision errors injected, the stage guard
upload-failure-rate fires and the control plane rolls the flag back by itself; then the rest of the rollback: the
pipeline's reference cache cleared, on-call paged through a webhook, the bad window purged and its runs listed.
Real processes and services throughout (see pipeline/demo.py)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
import structlog

from pipeline.demo import Timeline, run_demo
from tests.conftest import missing_service


@pytest.fixture
def clean_logging() -> Iterator[None]:
    """The demo points structlog at a file of its own; put the defaults back for the tests that follow."""
    yield
    structlog.reset_defaults()


@pytest.mark.usefixtures("clean_logging")
def test_the_demo_rolls_back_then_clears_the_cache_pages_purges_the_window_and_lists_its_runs(tmp_path: Path) -> None:
    try:
        import gcp_storage_emulator  # type: ignore[import-untyped]  # noqa: F401
    except ImportError as error:
        missing_service(f"gcp-storage-emulator ({error})")
    lines: list[str] = []

    # The demo keeps its runs and logs in tmp_path, so the runs can be counted here afterwards.
    figures = run_demo(
        healthy_seconds=5, rate=60, error_rate=1.0, timeout=120, timeline=Timeline(out=lines.append), folder=tmp_path
    )

    text = "\n".join(lines)
    assert figures.rolled_back, text
    assert "production rollout started: stage 1, 10%" in text
    assert "guards firing: none" in text  # healthy before the faults
    assert "alert upload-failure-rate firing" in text
    assert "rolled back in production by the control plane" in text
    # The stage guard rolls back; the streak pages but guards no production stage.
    assert "automatic rollback: guard upload-failure-rate in production" in text
    steps = [line.split("] ", 1)[1].split(":")[0] for line in lines if line.startswith("[")]
    assert steps.index("injected Vision errors") < steps.index("alert upload-failure-rate firing")

    # 1. Flag off.
    assert figures.serving_percentage == 0
    assert "flag off: enable-reference-images rolled back in production" in text
    # 2. The pipeline cleared its reference cache on the provider's change, by its own counter.
    assert figures.cache_clears_after == figures.cache_clears_before + 1, text
    assert f"pipeline_reference_cache_clears_total {figures.cache_clears_before:g} -> " in text
    # 3. On-call's webhook received the guard's rollback as a page, after the alert that caused it.
    kinds = [(alert["kind"], alert["rule"]) for alert in figures.notifications]
    assert ("trigger", "upload-failure-rate") in kinds, kinds
    rollback = next(alert for alert in figures.notifications if alert["kind"] == "rollback")
    assert (rollback["severity"], rollback["flag"], rollback["environment"]) == (
        "page",
        "enable-reference-images",
        "production",
    )
    assert "on-call paged" in text
    # 4. The purge deleted every object the canary uploaded (all of them were uploaded in the window).
    assert figures.purge["status"] == "succeeded", figures.purge
    assert figures.objects_before_purge > 0, text
    assert figures.purge["deleted"] == figures.objects_before_purge
    assert figures.objects_after_purge == 0
    assert f"deleted {figures.objects_before_purge} objects" in text
    # 5. The runs listed are exactly the runs created in the window; those that used a reference used a purged one.
    assert figures.window is not None
    start, end = figures.window
    created = sorted(
        state["run_id"]
        for state in (json.loads(meta.read_text()) for meta in (tmp_path / "runs").glob("*/meta.json"))
        if start <= datetime.fromisoformat(state["created_at"]) < end
    )
    assert created, "no run was created in the window"
    assert sorted(run.run_id for run in figures.audited) == created
    used = [run for run in figures.audited if run.references]
    assert all(run.purged_references and run.flagged for run in used if run.variant != "off"), used
    assert f"{len(created)} runs, {len(used)} used reference images" in text
    assert figures.finished
    # In the order of the playbook.
    marks = [line.split("] ", 1)[1] for line in lines if line.startswith("[")]
    order = ["flag off", "cache cleared", "on-call paged", "purge of the bad window", "runs of the window"]
    positions = [next(i for i, mark in enumerate(marks) if mark.startswith(step)) for step in order]
    assert positions == sorted(positions), marks
