"""The operator's page over HTTP: sign-in and sign-out, roles as in the API, CSRF refusals, and each rollout action
through the form, audited like the API's."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from litestar import Litestar
from litestar.testing import TestClient

from controlplane.api.roles import Role
from controlplane.ui.session import COOKIE_NAME, csrf_token
from tests.conftest import REPO_ROOT, bearer, problem

FLAG = "enable-reference-images"
PAGE = f"/ui/flags/{FLAG}/environments/qa"
FORM = f"{PAGE}/rollout"
HTML = {"Accept": "text/html"}
HTMX = {"Accept": "text/html", "HX-Request": "true"}

Client = TestClient[Litestar]


def sign_in(client: Client, token: str) -> httpx.Response:
    """Post the sign-in form as a browser does; the client keeps the cookie."""
    return client.post("/ui/sign-in", data={"token": token, "next": "/ui"}, headers=HTML, follow_redirects=False)


def rollout(client: Client, headers: dict[str, str], environment: str = "qa") -> dict[str, Any]:
    response = client.get(f"/api/v1/flags/{FLAG}/environments/{environment}/rollout", headers=headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def audit(client: Client, headers: dict[str, str]) -> list[dict[str, Any]]:
    response = client.get("/api/v1/audit", params={"flag": FLAG, "environment": "qa"}, headers=headers)
    assert response.status_code == 200, response.text
    records: list[dict[str, Any]] = response.json()
    return records


def act(client: Client, token: str, operation: str, **fields: str) -> httpx.Response:
    """Submit the rollout form as the page does (htmx), with the page's CSRF token."""
    data = {"operation": operation, "csrf_token": csrf_token(token), **fields}
    return client.post(FORM, data=data, headers=HTMX)


@pytest.fixture
def operator(client: Client, make_token: Callable[..., str], applied: None) -> str:
    """An operator's token, signed in on ``client``."""
    token: str = make_token(Role.OPERATOR, name="olivia-operator")
    assert sign_in(client, token).status_code == 303
    return token


def test_every_page_forbids_framing_and_foreign_scripts(client: Client, operator: str) -> None:
    answers = [
        client.get("/ui", headers=HTML),
        client.get("/ui/sign-in"),
        client.get("/ui/static/ui.js"),
        client.get("/ui/flags/no-such-flag/environments/qa", headers=HTML),  # a refusal's page too
    ]
    assert [response.status_code for response in answers] == [200, 200, 200, 404]
    for response in answers:
        assert response.headers["x-frame-options"] == "DENY"
        policy = response.headers["content-security-policy"]
        assert "frame-ancestors 'none'" in policy
        assert "script-src 'self';" in policy


def test_the_root_opens_the_operators_page(client: Client) -> None:
    response = client.get("/", follow_redirects=False)

    assert response.status_code == 303
    assert response.headers["location"] == "/ui"


def test_a_browser_without_a_token_is_sent_to_sign_in_and_back(client: Client) -> None:
    response = client.get(PAGE, headers=HTML, follow_redirects=False)

    assert response.status_code == 303
    assert response.headers["location"] == f"/ui/sign-in?next={PAGE}"
    form = client.get(response.headers["location"])
    assert form.status_code == 200
    assert f'name="next" value="{PAGE}"' in form.text


def test_a_client_that_does_not_ask_for_html_gets_the_apis_problem(client: Client) -> None:
    problem(client.get("/ui"), 401, "unauthenticated")


def test_sign_in_keeps_the_token_in_an_httponly_strict_cookie_scoped_to_the_page(
    client: Client, make_token: Callable[..., str], applied: None
) -> None:
    token = make_token(Role.VIEWER, name="vera-viewer")

    response = sign_in(client, token)

    assert response.status_code == 303
    assert response.headers["location"] == "/ui"
    cookie = response.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE_NAME}={token};")
    attributes = {part.strip().lower() for part in cookie.split(";")}
    assert {"httponly", "samesite=strict", "path=/ui"} <= attributes
    assert "secure" not in attributes  # plain HTTP here: a Secure cookie would never come back
    page = client.get("/ui", headers=HTML)
    assert page.status_code == 200
    assert 'data-testid="principal">vera-viewer<' in page.text
    assert f'data-testid="cell-{FLAG}-qa"' in page.text


def test_sign_in_over_https_sets_a_secure_cookie(app: Litestar, make_token: Callable[..., str]) -> None:
    with TestClient(app, base_url="https://testserver.local") as secure_client:
        response = sign_in(secure_client, make_token(Role.VIEWER))

    assert response.status_code == 303
    assert "secure" in {part.strip().lower() for part in response.headers["set-cookie"].split(";")}


def test_sign_in_refuses_an_unknown_token_and_sets_no_cookie(client: Client) -> None:
    response = sign_in(client, "cpt_" + "A" * 43)

    assert response.status_code == 401
    assert "unknown or revoked" in response.text
    assert "set-cookie" not in response.headers


@pytest.mark.parametrize("role", [Role.INGEST, Role.EVALUATE])
def test_sign_in_refuses_a_service_token(client: Client, make_token: Callable[..., str], role: Role) -> None:
    response = sign_in(client, make_token(role, environment="qa" if role is Role.EVALUATE else None))

    assert response.status_code == 403
    assert "set-cookie" not in response.headers


def test_sign_in_without_a_token_is_bad_input(client: Client) -> None:
    problem(client.post("/ui/sign-in", data={"token": " "}), 422, "token-required")


def test_sign_in_from_another_site_is_refused(client: Client, make_token: Callable[..., str]) -> None:
    response = client.post(
        "/ui/sign-in", data={"token": make_token(Role.ADMIN)}, headers={"Origin": "https://evil.example"}
    )

    problem(response, 403, "cross-site-sign-in")
    assert "set-cookie" not in response.headers


@pytest.mark.parametrize("role", [Role.INGEST, Role.EVALUATE])
def test_a_service_token_cannot_see_the_page(
    client: Client, make_token: Callable[..., str], applied: None, role: Role
) -> None:
    token = make_token(role, environment="qa" if role is Role.EVALUATE else None)

    problem(client.get("/ui", headers=bearer(token)), 403, "forbidden")
    page = client.get("/ui", headers={**bearer(token), **HTML})
    assert page.status_code == 403
    assert 'data-testid="problem-type">forbidden<' in page.text


def test_a_viewer_sees_the_rollout_without_buttons_and_is_refused_if_it_posts(
    client: Client, make_token: Callable[..., str], applied: None, admin_headers: dict[str, str]
) -> None:
    token = make_token(Role.VIEWER, name="vera-viewer")
    sign_in(client, token)

    page = client.get(PAGE, headers=HTML)
    refused = act(client, token, "start")

    assert page.status_code == 200
    assert 'data-testid="state">pending<' in page.text
    assert 'id="rollout-actions"' not in page.text
    assert 'data-testid="read-only"' in page.text
    assert refused.status_code == 403
    assert "this route needs `operator`" in refused.text
    assert rollout(client, admin_headers)["state"] == "pending"


def test_a_change_with_the_cookie_but_without_the_csrf_token_is_refused_and_changes_nothing(
    client: Client, operator: str, admin_headers: dict[str, str]
) -> None:
    before = audit(client, admin_headers)

    missing = client.post(FORM, data={"operation": "start"}, headers=HTMX)
    wrong = client.post(FORM, data={"operation": "start", "csrf_token": csrf_token("cpt_other")}, headers=HTMX)
    as_json = client.post(FORM, data={"operation": "start"})

    for response in (missing, wrong):
        assert response.status_code == 403
        assert 'data-testid="problem-type">csrf-token-invalid<' in response.text
    problem(as_json, 403, "csrf-token-invalid")
    assert rollout(client, admin_headers)["state"] == "pending"
    assert audit(client, admin_headers) == before


def test_sign_out_needs_the_csrf_token_too(client: Client, operator: str) -> None:
    assert client.post("/ui/sign-out", headers=HTMX).status_code == 403

    response = client.post(
        "/ui/sign-out", data={"csrf_token": csrf_token(operator)}, headers=HTML, follow_redirects=False
    )

    assert response.status_code == 303
    assert f"{COOKIE_NAME}=" in response.headers["set-cookie"]
    assert "max-age=0" in response.headers["set-cookie"].lower()
    client.cookies.clear()  # what the browser does with an expired cookie
    assert client.get("/ui", headers=HTML, follow_redirects=False).status_code == 303


def test_a_bearer_token_acts_without_a_csrf_token_as_the_api_does(
    client: Client, make_token: Callable[..., str], applied: None, admin_headers: dict[str, str]
) -> None:
    token = make_token(Role.OPERATOR, name="otto-script")

    revision = str(rollout(client, admin_headers)["revision"])

    response = client.post(
        FORM, data={"operation": "start", "expected_revision": revision}, headers=bearer(token), follow_redirects=False
    )

    assert response.status_code == 303
    assert response.headers["location"] == PAGE
    assert rollout(client, admin_headers)["state"] == "running"
    assert audit(client, admin_headers)[0]["actor"] == "otto-script"


def test_each_action_through_the_form_is_applied_and_audited_with_the_tokens_name(
    client: Client, operator: str, admin_headers: dict[str, str]
) -> None:
    steps = [
        ("start", {}, "running", 0),
        ("pause", {"reason": "looking at a dashboard"}, "paused", 0),
        ("resume", {}, "running", 0),
        ("rollback", {"reason": "upload errors at 4%"}, "rolled_back", 0),
    ]
    for operation, fields, state, stage in steps:
        revision = str(rollout(client, admin_headers)["revision"])
        response = act(client, operator, operation, expected_revision=revision, **fields)

        assert response.status_code == 200, response.text
        assert 'data-testid="action-result"' in response.text
        assert 'hx-swap-oob="innerHTML"' in response.text  # the page's live part, fresh, in the same answer
        status = rollout(client, admin_headers)
        assert (status["state"], status["stage_index"]) == (state, stage)
        record = audit(client, admin_headers)[0]
        assert (record["actor"], record["action"]) == ("olivia-operator", f"rollout.{operation}")
        assert fields.get("reason", "") in (record["reason"] or "")
    assert rollout(client, admin_headers)["serving_percentage"] == 0
    page = client.get(PAGE, headers=HTML).text
    assert "upload errors at 4%" in page
    assert 'data-testid="state">rolled back<' in page


def test_advance_through_the_form_moves_one_stage(
    client: Client, operator: str, admin_headers: dict[str, str], make_token: Callable[..., str]
) -> None:
    # Production's plan has stages to advance through; qa and staging complete first (promotion order).
    for environment in ("qa", "staging"):
        for operation, body in (("start", {}), ("advance", {"reason": "checked"})):
            revision = rollout(client, admin_headers, environment)["revision"]
            response = client.post(
                f"/api/v1/flags/{FLAG}/environments/{environment}/rollout/{operation}",
                json={"expected_revision": revision, **body},
                headers=admin_headers,
            )
            assert response.status_code == 200, response.text
    production = f"/ui/flags/{FLAG}/environments/production/rollout"
    revision = str(rollout(client, admin_headers, "production")["revision"])
    data = {"operation": "start", "csrf_token": csrf_token(operator), "expected_revision": revision}
    assert client.post(production, data=data, headers=HTMX).status_code == 200
    revision = str(rollout(client, admin_headers, "production")["revision"])

    response = client.post(
        production,
        data={**data, "operation": "advance", "reason": "10% clean", "expected_revision": revision},
        headers=HTMX,
    )

    assert response.status_code == 200, response.text
    status = rollout(client, admin_headers, "production")
    assert (status["state"], status["stage_index"]) == ("running", 1)
    page = client.get(f"/ui/flags/{FLAG}/environments/production", headers=HTML).text
    current = re.search(r'<li class="current" aria-current="step">\s*<strong>([^<]+)</strong>', page)
    assert current is not None and current.group(1) == f"{status['percentage']:g}%"


def test_a_rollback_without_a_reason_is_refused_readably_and_changes_nothing(
    client: Client, operator: str, admin_headers: dict[str, str]
) -> None:
    revision = str(rollout(client, admin_headers)["revision"])
    assert act(client, operator, "start", expected_revision=revision).status_code == 200
    before = audit(client, admin_headers)

    response = act(client, operator, "rollback", reason="  ")

    assert response.status_code == 422
    assert 'role="alert"' in response.text
    assert 'data-testid="problem-type">reason-required<' in response.text
    assert rollout(client, admin_headers)["state"] == "running"
    assert audit(client, admin_headers) == before


def test_a_stale_revision_is_refused_with_409(client: Client, operator: str, admin_headers: dict[str, str]) -> None:
    stale = str(rollout(client, admin_headers)["revision"])
    assert act(client, operator, "start", expected_revision=stale).status_code == 200

    paused = act(client, operator, "pause", reason="x")  # stopping never needs a fresh view
    resumed = act(client, operator, "resume", expected_revision=stale)

    assert paused.status_code == 200
    assert resumed.status_code == 409
    assert 'data-testid="problem-type">stale-revision<' in resumed.text


@pytest.mark.parametrize(
    ("fields", "slug"),
    [
        ({"operation": "launch"}, "invalid-operation"),
        ({"operation": "start", "expected_revision": "two"}, "invalid-field"),
        ({"operation": "rollback", "reason": "r", "policy": "sideways"}, "invalid-field"),
        ({"operation": "pause", "reason": "x" * 2001}, "invalid-field"),
    ],
)
def test_bad_form_input_is_refused_with_a_precise_reason_and_changes_nothing(
    client: Client, operator: str, admin_headers: dict[str, str], fields: dict[str, str], slug: str
) -> None:
    before = audit(client, admin_headers)

    response = client.post(FORM, data={"csrf_token": csrf_token(operator), **fields})

    problem(response, 422, slug)
    assert audit(client, admin_headers) == before


def test_an_unknown_flag_is_a_readable_404(client: Client, operator: str) -> None:
    response = client.get("/ui/flags/no-such-flag/environments/qa", headers=HTML)

    assert response.status_code == 404
    assert 'data-testid="problem-type">flag-not-found<' in response.text


def test_the_flag_page_shows_each_guard_with_its_condition_and_state(
    client: Client, make_token: Callable[..., str], admin_headers: dict[str, str]
) -> None:
    # The shipped definition, guards included (the `applied` fixture strips them).
    shipped = (REPO_ROOT / "definitions" / "reference-images.yaml").read_text()
    applied = client.post(
        "/api/v1/definitions/apply", headers=admin_headers, json={"content": shipped, "source": "reference-images.yaml"}
    )
    assert applied.status_code == 200, applied.text
    sign_in(client, make_token(Role.VIEWER))

    page = client.get(PAGE, headers=HTML).text

    assert 'data-testid="guard-upload-failure-rate"' in page
    assert 'data-testid="guard-vision-error-streak"' in page
    assert "not evaluated" in page
    assert "decided at 0.99 confidence" in page
