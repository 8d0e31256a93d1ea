"""A control plane in a process of its own on SQLite, for the demo and the tests that stop and restart it.

`controlplane serve` with the repository's definitions, alerts evaluated every second, and three tokens made in
the database before it starts: admin, evaluate (production) and ingest. ``stop(kill=True)`` is a crash (SIGKILL);
``start()`` again brings it back on the same port and database.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import httpx
from sqlalchemy.orm import sessionmaker

from controlplane.auth import service as auth_service
from controlplane.auth.roles import Role
from controlplane.auth.schemas import TokenCreate
from controlplane.db import create_db_engine, session_scope
from controlplane.migrate import upgrade_to_head
from pipeline.settings import FLAG_KEY

__all__ = ["ControlPlaneProcess", "complete_rollout", "free_port", "operate_rollout"]

REPO_ROOT = Path(__file__).resolve().parent.parent
ENVIRONMENTS = ("dev", "qa", "staging", "production")
START_TIMEOUT_SECONDS = 60.0


def free_port() -> int:
    """A loopback port free right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class ControlPlaneProcess:
    """`controlplane serve` on ``folder/controlplane.db``; ``url`` and ``tokens`` (by role) once started."""

    def __init__(self, folder: Path, **settings: str) -> None:
        self.folder = folder
        self.database_url = f"sqlite:///{folder / 'controlplane.db'}"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.tokens = self._make_tokens()
        self._settings = settings
        self._process: subprocess.Popen[Any] | None = None
        self._log: IO[str] | None = None

    def _make_tokens(self) -> dict[str, str]:
        engine = create_db_engine(self.database_url)
        upgrade_to_head(engine)
        tokens = {}
        with session_scope(sessionmaker(engine, expire_on_commit=False)) as session:
            for role, environment in ((Role.ADMIN, None), (Role.EVALUATE, "production"), (Role.INGEST, None)):
                created = auth_service.create_token(
                    session,
                    request=TokenCreate(name=f"local-{role.value}", role=role, environment=environment),
                    actor="local",
                    environments=ENVIRONMENTS,
                    now=datetime.now(UTC),
                )
                tokens[role.value] = created.token
        engine.dispose()
        return tokens

    def start(self) -> None:
        """Start serving and wait until it is ready."""
        environment = {
            **os.environ,
            "CONTROLPLANE_DATABASE_URL": self.database_url,
            "CONTROLPLANE_PORT": str(self.port),
            "CONTROLPLANE_DEFINITIONS_DIR": str(REPO_ROOT / "definitions"),
            "CONTROLPLANE_NOTIFICATIONS_FILE": str(self.folder / "no-notifications.yaml"),
            "CONTROLPLANE_ALERT_EVALUATION_SECONDS": "1",
            "CONTROLPLANE_REPLICA_ID": "local",
            **self._settings,
        }
        self._log = (self.folder / "controlplane.log").open("a")
        self._process = subprocess.Popen(
            [sys.executable, "-m", "controlplane.cli", "serve"], env=environment, stdout=self._log, stderr=self._log
        )
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while True:
            if self._process.poll() is not None:
                raise RuntimeError(f"the control plane exited at start; see {self.folder / 'controlplane.log'}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the control plane did not answer within {START_TIMEOUT_SECONDS:g} s")
            time.sleep(0.1)

    def stop(self, *, kill: bool = False) -> None:
        """Stop it: SIGTERM and wait, or with ``kill`` SIGKILL (a crash: nothing flushed, nothing said)."""
        if self._process is not None:
            if self._process.poll() is None:
                self._process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            self._process.wait(timeout=30)
            self._process = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> ControlPlaneProcess:
        self.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.stop()


def operate_rollout(
    client: httpx.Client, environment: str, operation: str, reason: str, *, force: bool = False
) -> dict[str, Any]:
    """One rollout operation on `enable-reference-images` through the API (``client`` carries an admin token)."""
    path = f"/api/v1/flags/{FLAG_KEY}/environments/{environment}/rollout"
    body: dict[str, Any] = {
        "expected_revision": client.get(path).raise_for_status().json()["revision"],
        "reason": reason,
    }
    if force:
        body["force"] = True
    answer = client.post(f"{path}/{operation}", json=body)
    if answer.status_code != 200:
        raise RuntimeError(f"{operation} in {environment} refused: {answer.status_code} {answer.text}")
    status: dict[str, Any] = answer.json()
    return status


def complete_rollout(client: httpx.Client, environment: str, reason: str) -> dict[str, Any]:
    """Start the rollout in ``environment`` and force it through every stage (no bake, no gates): audited."""
    status = operate_rollout(client, environment, "start", reason)
    while status["state"] != "completed":
        status = operate_rollout(client, environment, "advance", reason, force=True)
    return status
