"""The one-command demo, shortened: a production canary at 10%, Vision errors injected, the stage guard
upload-failure-rate fires and the control plane rolls the flag back by itself. Real processes and services
throughout (see pipeline/demo.py)."""

from __future__ import annotations

from collections.abc import Iterator

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
def test_the_demo_ends_with_the_flag_rolled_back_by_the_guard() -> None:
    try:
        import gcp_storage_emulator  # type: ignore[import-untyped]  # noqa: F401
    except ImportError as error:
        missing_service(f"gcp-storage-emulator ({error})")
    lines: list[str] = []

    rolled_back = run_demo(healthy_seconds=4, rate=60, error_rate=1.0, timeout=120, timeline=Timeline(out=lines.append))

    text = "\n".join(lines)
    assert rolled_back, text
    assert "production rollout started: stage 1, 10%" in text
    assert "guards firing: none" in text  # healthy before the faults
    assert "alert upload-failure-rate firing" in text
    assert "rolled back in production by the control plane" in text
    # The stage guard rolls back; the streak pages but guards no production stage.
    assert "automatic rollback: guard upload-failure-rate in production" in text
    steps = [line.split("] ", 1)[1].split(":")[0] for line in lines if line.startswith("[")]
    assert steps.index("injected Vision errors") < steps.index("alert upload-failure-rate firing")
