"""Token rules: environment scope only on evaluate tokens, reserved names, the last admin token, bootstrap's first
admin token, and one winner when many create the same name at once.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from litestar import Litestar
from litestar.testing import TestClient
from sqlalchemy import func, select

from controlplane.api.roles import Role
from controlplane.app import create_app
from controlplane.auth.models import ApiToken
from controlplane.cli import CommandError, bootstrap
from controlplane.db import create_db_engine
from controlplane.flags.models import Flag
from controlplane.settings import Settings
from tests.conftest import bearer, problem

API = "/api/v1"
FLAG = "enable-reference-images"
REQUEST_TIMEOUT_SECONDS = 60.0

Client = TestClient[Litestar]


def tokens_by_name(client: Client, headers: dict[str, str]) -> dict[str, dict[str, Any]]:
    response = client.get(f"{API}/tokens", headers=headers)
    assert response.status_code == 200, response.text
    return {token["name"]: token for token in response.json()}


def audit_count(client: Client, headers: dict[str, str]) -> int:
    response = client.get(f"{API}/audit/verify", headers=headers)
    assert response.status_code == 200, response.text
    assert response.json()["ok"] is True
    count: int = response.json()["records"]
    return count


# --- environment scope --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("role", [Role.VIEWER, Role.OPERATOR, Role.ADMIN, Role.INGEST])
def test_an_environment_on_a_token_other_than_evaluate_is_refused_with_422_invalid_field(
    client: Client, admin_headers: dict[str, str], role: Role
) -> None:
    audit_before = audit_count(client, admin_headers)

    response = client.post(
        f"{API}/tokens", headers=admin_headers, json={"name": "scoped", "role": role.value, "environment": "qa"}
    )

    body = problem(response, 422, "invalid-field")
    assert body["field"] == "environment"
    assert "scoped" not in tokens_by_name(client, admin_headers)
    assert audit_count(client, admin_headers) == audit_before


def test_an_evaluate_token_scoped_to_an_environment_is_created_with_201(
    client: Client, admin_headers: dict[str, str]
) -> None:
    response = client.post(
        f"{API}/tokens", headers=admin_headers, json={"name": "qa-evaluator", "role": "evaluate", "environment": "qa"}
    )

    assert response.status_code == 201, response.text
    created = response.json()
    assert created["token"].startswith("cpt_")
    assert (created["details"]["role"], created["details"]["environment"]) == ("evaluate", "qa")
    assert created["details"]["created_by"] == "admin"
    listed = tokens_by_name(client, admin_headers)["qa-evaluator"]
    assert listed == created["details"]
    assert "token" not in listed
    # A service role is not a management rank: the evaluate token reads no flags.
    problem(client.get(f"{API}/flags", headers=bearer(created["token"])), 403, "forbidden")


def test_an_evaluate_token_for_an_unknown_environment_is_refused_with_422(
    client: Client, admin_headers: dict[str, str]
) -> None:
    response = client.post(
        f"{API}/tokens",
        headers=admin_headers,
        json={"name": "moon-evaluator", "role": "evaluate", "environment": "moon"},
    )

    assert problem(response, 422, "unknown-environment")["field"] == "environment"
    assert "moon-evaluator" not in tokens_by_name(client, admin_headers)


# --- reserved names -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["scheduler", "bootstrap", "system", "alertmanager", "cli:someone"])
def test_a_name_the_control_plane_writes_as_actor_is_refused_with_422_reserved_token_name(
    client: Client, admin_headers: dict[str, str], name: str
) -> None:
    audit_before = audit_count(client, admin_headers)

    response = client.post(f"{API}/tokens", headers=admin_headers, json={"name": name, "role": "operator"})

    assert problem(response, 422, "reserved-token-name")["field"] == "name"
    assert name not in tokens_by_name(client, admin_headers)
    assert audit_count(client, admin_headers) == audit_before


# --- revocation ---------------------------------------------------------------------------------------------------


def test_revoking_the_last_admin_token_is_refused_with_409_and_it_keeps_working(
    client: Client, admin_headers: dict[str, str], make_token: Callable[..., str]
) -> None:
    make_token(Role.OPERATOR, name="an-operator")
    audit_before = audit_count(client, admin_headers)

    response = client.delete(f"{API}/tokens/admin", headers=admin_headers)

    assert "admin" in problem(response, 409, "last-admin-token")["detail"]
    assert tokens_by_name(client, admin_headers)["admin"]["revoked_at"] is None
    assert audit_count(client, admin_headers) == audit_before
    assert client.get(f"{API}/flags", headers=admin_headers).status_code == 200


def test_with_a_second_admin_the_first_is_revoked_and_then_refused_with_401(
    client: Client, admin_headers: dict[str, str], make_token: Callable[..., str]
) -> None:
    second = bearer(make_token(Role.ADMIN, name="second-admin"))
    assert client.get(f"{API}/flags", headers=admin_headers).status_code == 200

    response = client.delete(f"{API}/tokens/admin", headers=second, params={"reason": "rotated"})

    assert response.status_code == 200, response.text
    assert response.json()["revoked_at"] is not None
    problem(client.get(f"{API}/flags", headers=admin_headers), 401, "unauthenticated")
    assert client.get(f"{API}/flags", headers=second).status_code == 200
    records = client.get(f"{API}/audit", headers=second, params={"action": "token.revoke"}).json()
    assert [(r["target"], r["actor"], r["reason"]) for r in records] == [("admin", "second-admin", "rotated")]
    # Now the second admin is the last one.
    problem(client.delete(f"{API}/tokens/second-admin", headers=second), 409, "last-admin-token")


def test_revoking_a_revoked_token_is_refused_with_409_token_already_revoked(
    client: Client, admin_headers: dict[str, str], make_token: Callable[..., str]
) -> None:
    make_token(Role.VIEWER, name="old-viewer")
    assert client.delete(f"{API}/tokens/old-viewer", headers=admin_headers).status_code == 200
    audit_before = audit_count(client, admin_headers)

    response = client.delete(f"{API}/tokens/old-viewer", headers=admin_headers)

    problem(response, 409, "token-already-revoked")
    assert audit_count(client, admin_headers) == audit_before


# --- bootstrap ----------------------------------------------------------------------------------------------------


def fresh_settings(tmp_path: Path, definitions: dict[str, str]) -> Settings:
    """Settings for a SQLite file that does not exist yet, with its own definitions folder."""
    folder = tmp_path / "definitions"
    folder.mkdir()
    for name, content in definitions.items():
        (folder / name).write_text(content)
    return Settings(database_url=f"sqlite:///{tmp_path / 'fresh.db'}", definitions_dir=folder, scheduler_enabled=False)


def count_rows(settings: Settings, model: type[Flag] | type[ApiToken]) -> int:
    engine = create_db_engine(settings.database_url)
    try:
        with engine.connect() as connection:
            return int(connection.scalar(select(func.count()).select_from(model)) or 0)
    finally:
        engine.dispose()


def broken_definition() -> str:
    return "pipeline: broken\nflags:\n  - key: half-a-flag\n    type: boolean\n    colour: blue\n"


def test_bootstrap_creates_a_working_admin_token_once(tmp_path: Path, reference_images_yaml: str) -> None:
    settings = fresh_settings(tmp_path, {"reference-images.yaml": reference_images_yaml})
    engine = create_db_engine(settings.database_url)
    try:
        token = bootstrap(settings, engine)
        again = bootstrap(settings, engine)

        assert token is not None and token.startswith("cpt_")
        assert again is None
        with TestClient(create_app(settings, engine=engine)) as client:
            tokens = list(tokens_by_name(client, bearer(token)).values())
            flags = client.get(f"{API}/flags", headers=bearer(token)).json()
    finally:
        engine.dispose()
    assert len(tokens) == 1
    assert tokens[0]["name"].startswith("admin-")
    assert (tokens[0]["role"], tokens[0]["created_by"], tokens[0]["revoked_at"]) == ("admin", "bootstrap", None)
    assert [flag["key"] for flag in flags] == [FLAG]


def test_bootstrap_refuses_an_invalid_definition_with_a_command_error(tmp_path: Path) -> None:
    settings = fresh_settings(tmp_path, {"broken.yaml": broken_definition()})
    engine = create_db_engine(settings.database_url)
    try:
        with pytest.raises(CommandError, match="invalid definition"):
            bootstrap(settings, engine)
    finally:
        engine.dispose()
    assert count_rows(settings, Flag) == 0
    assert count_rows(settings, ApiToken) == 0


def test_bootstrap_with_one_invalid_definition_applies_none_of_the_others(
    tmp_path: Path, reference_images_yaml: str
) -> None:
    settings = fresh_settings(
        tmp_path, {"a-reference-images.yaml": reference_images_yaml, "z-broken.yaml": broken_definition()}
    )
    engine = create_db_engine(settings.database_url)
    try:
        with pytest.raises(CommandError, match="nothing applied"):
            bootstrap(settings, engine)
    finally:
        engine.dispose()
    assert count_rows(settings, ApiToken) == 0
    assert count_rows(settings, Flag) == 0


# --- concurrent creation ------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Answer:
    """One racer's response."""

    status: int
    body: dict[str, Any]


def test_concurrent_creation_of_one_token_name_on_postgresql_gives_one_201_and_only_409s(
    postgres_server: tuple[str, dict[str, str]],
) -> None:
    base_url, headers = postgres_server
    racers = 8
    barrier = threading.Barrier(racers)

    def racer(number: int) -> Answer:
        with httpx.Client(base_url=base_url, headers=headers, timeout=REQUEST_TIMEOUT_SECONDS) as client:
            barrier.wait(timeout=REQUEST_TIMEOUT_SECONDS)
            response = client.post(f"{API}/tokens", json={"name": "ci-bot", "role": "operator"})
        return Answer(response.status_code, response.json())

    with ThreadPoolExecutor(max_workers=racers) as pool:
        answers = list(pool.map(racer, range(racers)))

    statuses = sorted(answer.status for answer in answers)
    assert statuses == [201] + [409] * (racers - 1), statuses
    refusal_types = {str(answer.body["type"]).rsplit("/", 1)[-1] for answer in answers if answer.status == 409}
    assert refusal_types <= {"token-name-taken", "concurrent-change"}, refusal_types
    winner = next(answer.body for answer in answers if answer.status == 201)
    with httpx.Client(base_url=base_url, headers=headers, timeout=REQUEST_TIMEOUT_SECONDS) as client:
        listed = [token for token in client.get(f"{API}/tokens").json() if token["name"] == "ci-bot"]
        records = client.get(f"{API}/audit", params={"action": "token.create"}).json()
        assert client.get(f"{API}/flags", headers=bearer(winner["token"])).status_code == 200
    assert listed == [winner["details"]]
    assert [record["target"] for record in records if record["target"] == "ci-bot"] == ["ci-bot"]
