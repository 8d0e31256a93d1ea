"""Local services in processes of their own, for the demo and the tests that stop and restart them.

``ControlPlaneProcess`` is `controlplane serve` on SQLite with the repository's definitions and alerts evaluated
every second. Before it starts, its own command line (`db upgrade`, `tokens create --database`) makes three
tokens: admin, evaluate (production) and ingest. ``stop(kill=True)`` is a crash (SIGKILL); ``start()`` again brings
it back on the same port and database. ``ServiceProcess`` is what any such service shares: start, wait until
ready, stop.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

import httpx

from pipeline.settings import FLAG_KEY

__all__ = ["ControlPlaneProcess", "ServiceProcess", "complete_rollout", "free_port", "operate_rollout"]

REPO_ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT_SECONDS = 60.0
#: The control plane's command line, run as a program of its own: nothing of the server is imported here.
CONTROLPLANE_CLI = (sys.executable, "-m", "controlplane.cli")


def free_port() -> int:
    """A loopback port free right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class ServiceProcess:
    """``command`` serving on ``port`` (loopback), ready once ``ready_path`` answers 200; output in ``log_path``.

    It runs with this process's environment plus ``settings``.
    """

    def __init__(
        self, command: Sequence[str], *, port: int, ready_path: str, log_path: Path, settings: Mapping[str, str]
    ) -> None:
        self.command = list(command)
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.settings = dict(settings)
        self._ready_url = f"{self.url}{ready_path}"
        self._log_path = log_path
        self._process: subprocess.Popen[Any] | None = None
        self._log: IO[str] | None = None

    def environment(self) -> dict[str, str]:
        """The environment the service runs in: this process's, with its settings on top."""
        return {**os.environ, **self.settings}

    def start(self) -> None:
        """Start serving and wait until it is ready."""
        self._log = self._log_path.open("a")
        self._process = subprocess.Popen(  # noqa: S603 - our own interpreter and arguments
            self.command, env=self.environment(), stdout=self._log, stderr=self._log
        )
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while True:
            if self._process.poll() is not None:
                raise RuntimeError(f"{' '.join(self.command[1:])} exited at start; see {self._log_path}")
            try:
                if httpx.get(self._ready_url, timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.url} did not answer within {START_TIMEOUT_SECONDS:g} s")
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

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.stop()


class ControlPlaneProcess(ServiceProcess):
    """`controlplane serve` on ``folder/controlplane.db``; ``url`` and ``tokens`` (by role) once created."""

    def __init__(self, folder: Path, **settings: str) -> None:
        self.folder = folder
        self.database_url = f"sqlite:///{folder / 'controlplane.db'}"
        port = free_port()
        super().__init__(
            [*CONTROLPLANE_CLI, "serve"],
            port=port,
            ready_path="/readyz",
            log_path=folder / "controlplane.log",
            settings={
                "CONTROLPLANE_DATABASE_URL": self.database_url,
                "CONTROLPLANE_PORT": str(port),
                "CONTROLPLANE_DEFINITIONS_DIR": str(REPO_ROOT / "definitions"),
                "CONTROLPLANE_NOTIFICATIONS_FILE": str(folder / "no-notifications.yaml"),
                "CONTROLPLANE_ALERT_EVALUATION_SECONDS": "1",
                "CONTROLPLANE_REPLICA_ID": "local",
                **settings,
            },
        )
        self.tokens = self._make_tokens()

    def command_line(self, *args: str) -> str:
        """Run `controlplane ARGS` on this control plane's database; what it printed (stdout)."""
        done = subprocess.run(  # noqa: S603 - our own interpreter and arguments
            [*CONTROLPLANE_CLI, *args], env=self.environment(), capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(f"controlplane {' '.join(args)} failed ({done.returncode}): {done.stderr.strip()}")
        return done.stdout.strip()

    def _make_tokens(self) -> dict[str, str]:
        self.command_line("db", "upgrade")
        tokens = {}
        for role, environment in (("admin", None), ("evaluate", "production"), ("ingest", None)):
            scope = ["--env", environment] if environment is not None else []
            tokens[role] = self.command_line(
                "tokens", "create", "--database", "--name", f"local-{role}", "--role", role, *scope
            )
        return tokens


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
