"""Two replicas on one database: a change made through one reaches evaluations and streams on the other."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx
from sqlalchemy import Engine

from controlplane.api.roles import Role
from controlplane.app import create_app
from controlplane.embedded import serve_in_thread
from controlplane.settings import Settings
from tests.conftest import FakeClock

FLAG = "replicated"
DEADLINE_SECONDS = 5.0


def _flag_value(client: httpx.Client, token: str) -> bool:
    response = client.post(
        f"/ofrep/v1/evaluate/flags/{FLAG}",
        headers={"Authorization": f"Bearer {token}"},
        json={"context": {"targetingKey": "user-1"}},
    )
    assert response.status_code == 200, response.text
    value: bool = response.json()["value"]
    return value


def test_a_change_on_one_replica_reaches_evaluation_and_the_stream_on_another(
    database_url: str, engine: Engine, clock: FakeClock, make_token: Callable[..., str]
) -> None:
    admin = {"Authorization": f"Bearer {make_token(Role.ADMIN)}"}
    evaluate = make_token(Role.EVALUATE, environment="qa")
    settings = Settings(database_url=database_url, scheduler_enabled=False)
    with (
        serve_in_thread(create_app(settings, engine=engine, clock=clock)) as first,
        serve_in_thread(create_app(settings, engine=engine, clock=clock)) as second,
        httpx.Client(base_url=first, timeout=10) as one,
        httpx.Client(base_url=second, timeout=10) as other,
    ):
        created = one.post(
            "/api/v1/flags",
            headers=admin,
            json={"key": FLAG, "type": "boolean", "variants": {"on": True, "off": False}, "off_variant": "off"},
        )
        assert created.status_code == 201, created.text
        deadline = time.monotonic() + DEADLINE_SECONDS
        while (
            other.post(
                f"/ofrep/v1/evaluate/flags/{FLAG}", headers={"Authorization": f"Bearer {evaluate}"}, json={}
            ).status_code
            == 404
        ):
            assert time.monotonic() < deadline, "the second replica never saw the new flag"
            time.sleep(0.01)
        assert _flag_value(other, evaluate) is False

        with other.stream("GET", "/evaluation/v1/stream", headers={"Authorization": f"Bearer {evaluate}"}) as stream:
            lines = stream.iter_lines()
            first_notice = next(line for line in lines if line.startswith("data:"))
            revision = one.get(f"/api/v1/flags/{FLAG}/environments/qa", headers=admin).json()["revision"]
            changed_at = time.monotonic()
            patched = one.patch(
                f"/api/v1/flags/{FLAG}/environments/qa",
                headers={**admin, "If-Match": str(revision)},
                json={"enabled": True, "default_variant": "on"},
            )
            assert patched.status_code == 200, patched.text
            second_notice = next(line for line in lines if line.startswith("data:"))
            seen_after = time.monotonic() - changed_at

        assert second_notice != first_notice
        assert seen_after < DEADLINE_SECONDS, f"the other replica's stream took {seen_after:.3f}s"
        assert _flag_value(other, evaluate) is True
