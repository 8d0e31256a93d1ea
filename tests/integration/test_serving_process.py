"""What a serving process (``controlplane serve``) does beyond what tests' apps do."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest
from litestar.testing import TestClient
from sqlalchemy import Engine

from controlplane.app import create_app
from controlplane.settings import Settings
from tests.conftest import FakeClock


@pytest.fixture
def unfrozen() -> Iterator[None]:
    """Hand the frozen objects back to the collector afterwards: the test process lives on."""
    yield
    gc.unfreeze()


@pytest.mark.usefixtures("unfrozen")
def test_a_serving_app_freezes_its_start_up_heap_and_still_answers(
    settings: Settings, engine: Engine, clock: FakeClock
) -> None:
    gc.unfreeze()
    app = create_app(settings, engine=engine, clock=clock, run_scheduler=False, freeze_heap=True)
    with TestClient(app) as client:
        assert gc.get_freeze_count() > 10_000  # modules, mappers and routes are out of the collector's walk
        assert client.get("/healthz").status_code == 200


def test_an_app_built_for_tests_leaves_the_collector_alone(
    settings: Settings, engine: Engine, clock: FakeClock
) -> None:
    gc.unfreeze()
    with TestClient(create_app(settings, engine=engine, clock=clock, run_scheduler=False)) as client:
        assert client.get("/healthz").status_code == 200
        assert gc.get_freeze_count() == 0
