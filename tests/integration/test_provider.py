"""The in-process provider against a real server: rollout and rollback seen live, outages, restarts, the cache.

The provider's server is a second app on the same database (a replica): the ``app`` fixture already runs under the
``client`` fixture, and one Litestar app must not run its lifespan (and configuration feed) in two event loops.
"""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import msgspec
import pytest
import uvicorn
from litestar import Litestar
from litestar.testing import TestClient
from openfeature import api
from openfeature.client import OpenFeatureClient
from openfeature.evaluation_context import EvaluationContext
from openfeature.event import EventDetails, ProviderEvent
from openfeature.flag_evaluation import Reason
from openfeature.provider import ProviderStatus
from sqlalchemy import Engine

from controlplane.api.roles import Role
from controlplane.app import create_app
from controlplane.embedded import serve_in_thread
from controlplane.settings import Settings
from controlplane_client.provider import ControlPlaneProvider
from controlplane_client.provider.bucketing import in_rollout
from tests.conftest import FakeClock

API = "/api/v1"
FLAG = "enable-reference-images"
DEADLINE_SECONDS = 5.0
STALE_AFTER = timedelta(seconds=30)
THREAD_NAME = "controlplane-provider-stream"

Client = TestClient[Litestar]
# First keys inside and outside production's first 10% stage (sticky: the same on every client).
INSIDE = EvaluationContext(targeting_key=next(f"user-{n}" for n in range(1000) if in_rollout(FLAG, f"user-{n}", 10)))
OUTSIDE = EvaluationContext(
    targeting_key=next(f"user-{n}" for n in range(1000) if not in_rollout(FLAG, f"user-{n}", 10))
)


# --- helpers ------------------------------------------------------------------------------------------------------


def _operate(client: Client, headers: dict[str, str], environment: str, operation: str, **body: Any) -> None:
    """Apply a rollout operation against the revision currently shown; it must succeed."""
    rollout = f"{API}/flags/{FLAG}/environments/{environment}/rollout"
    shown = client.get(rollout, headers=headers)
    assert shown.status_code == 200, shown.text
    body.setdefault("expected_revision", shown.json()["revision"])
    response = client.post(f"{rollout}/{operation}", headers=headers, json=body)
    assert response.status_code == 200, response.text


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


@contextmanager
def serve_on_port(app: Litestar, port: int) -> Iterator[str]:
    """``serve_in_thread`` on a port chosen by the test, so a restarted server has the same address."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    # The previous server's connections may sit in TIME_WAIT on this port.
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="warning", ws="none", timeout_graceful_shutdown=1
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, name="uvicorn", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + DEADLINE_SECONDS
        while not server.started:
            assert thread.is_alive(), "uvicorn exited before it started serving"
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=DEADLINE_SECONDS)
        listener.close()
    assert not thread.is_alive(), "uvicorn did not shut down"


def _wait_for(condition: Callable[[], bool], what: str) -> None:
    """Poll ``condition`` for at most DEADLINE_SECONDS (a bounded wait for another thread, not a measurement)."""
    deadline = time.monotonic() + DEADLINE_SECONDS
    while not condition():
        assert time.monotonic() < deadline, f"not within {DEADLINE_SECONDS}s: {what}"
        time.sleep(0.02)


class Events:
    """The provider events a client saw, by type."""

    def __init__(self, client: OpenFeatureClient) -> None:
        self.seen: list[tuple[ProviderEvent, EventDetails]] = []
        self._lock = threading.Lock()
        for event in ProviderEvent:
            client.add_handler(event, self._handler(event))

    def _handler(self, event: ProviderEvent) -> Callable[[EventDetails], None]:
        def record(details: EventDetails) -> None:
            with self._lock:
                self.seen.append((event, details))

        return record

    def of(self, event: ProviderEvent) -> list[EventDetails]:
        """Details of every event of one type, in order."""
        with self._lock:
            return [details for seen, details in self.seen if seen == event]


@pytest.fixture
def server_app(settings: Settings, engine: Engine, clock: FakeClock) -> Callable[[], Litestar]:
    """Build a fresh app on this test's database: the provider's server, a replica of the ``client`` app."""
    return lambda: create_app(settings, engine=engine, clock=clock)


@pytest.fixture
def production_token(make_token: Callable[..., str]) -> str:
    """An evaluate token scoped to production: no X-Environment needed."""
    return make_token(Role.EVALUATE, name="image-pipeline", environment="production")


@pytest.fixture
def production_at_10_percent(applied: None, client: Client, admin_headers: dict[str, str]) -> None:
    """qa and staging completed, production running its first stage (10%)."""
    for environment in ("qa", "staging"):
        _operate(client, admin_headers, environment, "start")
        _operate(client, admin_headers, environment, "advance", reason=f"{environment} looks healthy")
    _operate(client, admin_headers, "production", "start")


@pytest.fixture
def connect() -> Iterator[Callable[[ControlPlaneProvider], OpenFeatureClient]]:
    """Register a provider (waiting for initialize) on a domain of its own; clear every provider afterwards."""

    def register(provider: ControlPlaneProvider) -> OpenFeatureClient:
        domain = f"provider-{uuid.uuid4().hex[:8]}"
        api.set_provider_and_wait(provider, domain)
        return api.get_client(domain)

    yield register
    api.clear_providers()


# --- tests --------------------------------------------------------------------------------------------------------


@pytest.mark.usefixtures("production_at_10_percent")
def test_the_provider_serves_the_rollout_and_sees_a_rollback_within_seconds(
    server_app: Callable[[], Litestar],
    production_token: str,
    client: Client,
    admin_headers: dict[str, str],
    connect: Callable[[ControlPlaneProvider], OpenFeatureClient],
) -> None:
    with serve_in_thread(server_app()) as url:
        flags = connect(ControlPlaneProvider(url, production_token, environ={}, reconnect_delay=0.05))
        events = Events(flags)

        inside = flags.get_boolean_details(FLAG, False, INSIDE)
        outside = flags.get_boolean_details(FLAG, True, OUTSIDE)
        assert (inside.value, inside.variant, inside.reason) == (True, "on", Reason.SPLIT)
        assert (outside.value, outside.variant, outside.reason) == (False, "off", Reason.SPLIT)

        _operate(client, admin_headers, "production", "rollback", reason="upload errors spiked")

        _wait_for(lambda: flags.get_boolean_value(FLAG, True, INSIDE) is False, "the provider saw the rollback")
        rolled_back = flags.get_boolean_details(FLAG, True, INSIDE)
        assert (rolled_back.variant, rolled_back.reason) == ("off", Reason.DISABLED)
        _wait_for(lambda: bool(events.of(ProviderEvent.PROVIDER_CONFIGURATION_CHANGED)), "CONFIGURATION_CHANGED ran")
        assert events.of(ProviderEvent.PROVIDER_CONFIGURATION_CHANGED)[0].flags_changed == [FLAG]

        # Shutdown is prompt even with the stream open: the blocked read is woken, not waited out.
        started = time.monotonic()
        api.clear_providers()
        assert time.monotonic() - started < 2.0
        assert THREAD_NAME not in {thread.name for thread in threading.enumerate()}


@pytest.mark.usefixtures("production_at_10_percent")
def test_the_provider_survives_a_server_outage_and_catches_up_with_a_new_server(
    server_app: Callable[[], Litestar],
    production_token: str,
    client: Client,
    admin_headers: dict[str, str],
    connect: Callable[[ControlPlaneProvider], OpenFeatureClient],
) -> None:
    port = _free_port()
    provider_clock = FakeClock()
    provider = ControlPlaneProvider(
        f"http://127.0.0.1:{port}",
        production_token,
        stale_after=STALE_AFTER,
        clock=provider_clock,
        environ={},
        reconnect_delay=0.05,
    )
    with serve_on_port(server_app(), port):
        flags = connect(provider)
        events = Events(flags)
        assert flags.get_boolean_details(FLAG, False, INSIDE).reason == Reason.SPLIT

    # The server is gone: the last values stay, first as they were, then marked STALE once stale_after passes.
    during = flags.get_boolean_details(FLAG, False, INSIDE)
    assert (during.value, during.reason) == (True, Reason.SPLIT)
    provider_clock.advance(STALE_AFTER + timedelta(seconds=1))
    stale = flags.get_boolean_details(FLAG, False, INSIDE)
    assert (stale.value, stale.variant, stale.reason) == (True, "on", Reason.STALE)
    assert stale.flag_metadata["evaluated_reason"] == "SPLIT"
    _wait_for(lambda: flags.get_provider_status() == ProviderStatus.STALE, "the provider announced STALE")
    # Handlers run on the SDK's executor, after the status changed.
    _wait_for(lambda: bool(events.of(ProviderEvent.PROVIDER_STALE)), "the STALE handler ran")

    # Changed while no server runs; a new server on the same database and address serves the change.
    _operate(client, admin_headers, "production", "rollback", reason="rolled back during the outage")
    with serve_on_port(server_app(), port):
        _wait_for(lambda: flags.get_boolean_value(FLAG, True, INSIDE) is False, "the provider caught up")
        caught_up = flags.get_boolean_details(FLAG, True, INSIDE)
        assert (caught_up.variant, caught_up.reason) == ("off", Reason.DISABLED)
        _wait_for(lambda: flags.get_provider_status() == ProviderStatus.READY, "the provider announced READY")
        _wait_for(lambda: bool(events.of(ProviderEvent.PROVIDER_CONFIGURATION_CHANGED)), "CONFIGURATION_CHANGED ran")
        assert events.of(ProviderEvent.PROVIDER_CONFIGURATION_CHANGED)[0].flags_changed == [FLAG]
        # One STALE for the whole outage, however many reconnection attempts failed.
        assert len(events.of(ProviderEvent.PROVIDER_STALE)) == 1
        api.clear_providers()


@pytest.mark.usefixtures("production_at_10_percent")
def test_a_provider_started_while_the_server_is_down_serves_the_cached_snapshot_as_stale(
    server_app: Callable[[], Litestar],
    production_token: str,
    connect: Callable[[ControlPlaneProvider], OpenFeatureClient],
    tmp_path: Path,
) -> None:
    cache = tmp_path / "production-flags.json"
    with serve_in_thread(server_app()) as url:
        connect(ControlPlaneProvider(url, production_token, cache_path=cache, environ={}))
        api.clear_providers()
    assert msgspec.json.decode(cache.read_bytes())["snapshot"]["environment"] == "production"

    # Same address, nothing listening: a restart must not fall back to code defaults.
    restarted = ControlPlaneProvider(url, production_token, cache_path=cache, environ={}, reconnect_delay=0.05)
    flags = connect(restarted)
    events = Events(flags)

    inside = flags.get_boolean_details(FLAG, False, INSIDE)
    outside = flags.get_boolean_details(FLAG, True, OUTSIDE)
    assert (inside.value, inside.variant, inside.reason, inside.error_code) == (True, "on", Reason.STALE, None)
    assert (outside.value, outside.variant, outside.reason) == (False, "off", Reason.STALE)
    _wait_for(lambda: flags.get_provider_status() == ProviderStatus.STALE, "the provider announced STALE")
    _wait_for(lambda: bool(events.of(ProviderEvent.PROVIDER_STALE)), "the STALE handler ran")
