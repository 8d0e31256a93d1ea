"""The pipeline's upload page served on one origin, the control plane on another: for the browser test and the bench.

The control plane allows the page's origin (CORS) and serves the reference-images definition (without gates) with
the QA rollout running at 100%; the page's browser token is an evaluate token scoped to QA. ``rollback()`` and
``restart()`` go through the HTTP API as an operator would.
"""

from __future__ import annotations

import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy.orm import sessionmaker

from controlplane.api.roles import Role
from controlplane.app import create_app
from controlplane.auth import service as auth_service
from controlplane.auth.schemas import TokenCreate
from controlplane.db import create_db_engine, session_scope
from controlplane.embedded import loopback_listener, serve_in_thread
from controlplane.settings import Settings
from pipeline.app import Parts, create_pipeline_app
from pipeline.flag import StaticGate
from pipeline.generator import LocalGenerator
from pipeline.settings import FLAG_KEY, PipelineSettings
from pipeline.vision import LocalAnalyzer
from tests.conftest import REPO_ROOT, without_gates

ENVIRONMENT = "qa"
API = "/api/v1"


@dataclass
class FlagPage:
    """The served pair: the page's URL for a user, and the operator's API."""

    page_origin: str
    control_plane: httpx.Client

    def url(self, user: str) -> str:
        """The upload page signed in as ``user``."""
        return f"{self.page_origin}/?user={user}"

    def _operate(self, operation: str, **body: Any) -> float:
        """Apply a rollout operation at the current revision; the wall clock (Unix seconds) just before sending it."""
        path = f"{API}/flags/{FLAG_KEY}/environments/{ENVIRONMENT}/rollout"
        current = self.control_plane.get(path)
        assert current.status_code == 200, current.text
        sent = time.time()
        response = self.control_plane.post(
            f"{path}/{operation}", json={"expected_revision": current.json()["revision"], **body}
        )
        assert response.status_code == 200, response.text
        return sent

    def restart(self) -> float:
        """Start the QA rollout (again), the flag on for every QA user; when the request was sent."""
        return self._operate("start")

    def rollback(self, reason: str = "upload errors in QA") -> float:
        """Roll the QA rollout back; when the request was sent."""
        return self._operate("rollback", reason=reason)


def _token(factory: sessionmaker[Any], role: Role, environment: str | None = None) -> str:
    with session_scope(factory) as session:
        created = auth_service.create_token(
            session,
            request=TokenCreate(name=f"{role.value}-{uuid.uuid4().hex[:6]}", role=role, environment=environment),
            actor="test-bootstrap",
            environments=Settings().environments,
            now=datetime.now(UTC),
        )
    return created.token


@contextmanager
def served_flag_page(database_url: str, **changes: Any) -> Iterator[FlagPage]:
    """Serve the control plane and the pipeline's page on two loopback ports; QA's rollout running at 100%.

    ``changes`` replace the control plane's settings (a short ``stream_credential_seconds``, say)."""
    engine = create_db_engine(database_url)
    factory = sessionmaker(engine, expire_on_commit=False)
    operator = _token(factory, Role.ADMIN)
    browser_token = _token(factory, Role.EVALUATE, ENVIRONMENT)
    page_listener = loopback_listener()
    page_origin = f"http://127.0.0.1:{page_listener.getsockname()[1]}"
    settings = Settings(
        database_url=database_url,
        scheduler_enabled=False,
        replica_id="browser",
        cors_allowed_origins=(page_origin,),
        **changes,
    )
    try:
        with (
            serve_in_thread(create_app(settings, engine=engine)) as control_plane_url,
            tempfile.TemporaryDirectory(prefix="flag-page-") as scratch,
            httpx.Client(
                base_url=control_plane_url, headers={"Authorization": f"Bearer {operator}"}, timeout=10.0
            ) as api,
        ):
            definition = without_gates((REPO_ROOT / "definitions" / "reference-images.yaml").read_text())
            applied = api.post(f"{API}/definitions/apply", json={"content": definition, "source": "reference-images"})
            assert applied.status_code == 200, applied.text
            pipeline_settings = PipelineSettings(
                controlplane_url=control_plane_url,
                browser_evaluate_token=browser_token,
                environment=ENVIRONMENT,
                runs_dir=Path(scratch) / "runs",
                spool_dir=Path(scratch) / "spool",
                flags_enabled=False,
                telemetry_enabled=False,
            )
            # The page is what is under test: the service's own upload path has its tests elsewhere.
            parts = Parts(gate=StaticGate(True), analyzer=LocalAnalyzer(), generator=LocalGenerator(), store=None)
            with serve_in_thread(create_pipeline_app(pipeline_settings, parts), listener=page_listener):
                served = FlagPage(page_origin=page_origin, control_plane=api)
                served.restart()
                yield served
    finally:
        engine.dispose()
