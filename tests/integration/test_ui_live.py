"""The operator's page's live streams over real HTTP: the page's live part at once, then again on every change,
whoever made it; refused like the page to those who may not see it."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import httpx

from controlplane.api.roles import Role
from tests.conftest import bearer

FLAG = "enable-reference-images"
STREAM = f"/ui/live/flags/{FLAG}/environments/qa"


def updates(lines: Iterator[str]) -> Iterator[str]:
    """The data of each `update` event of a server-sent event stream (keep-alive comments skipped)."""
    event, data = "", []
    for line in lines:
        if line.startswith("event:"):
            event = line.removeprefix("event:").strip()
        elif line.startswith("data:"):
            data.append(line.removeprefix("data:").removeprefix(" "))
        elif line == "" and data:
            if event == "update":
                yield "\n".join(data)
            event, data = "", []


def test_a_flag_pages_stream_sends_its_live_part_then_each_change_made_through_the_api(
    live_server: str, make_token: Callable[..., str], reference_images_yaml: str
) -> None:
    admin = bearer(make_token(Role.ADMIN, name="admin"))
    viewer = bearer(make_token(Role.VIEWER, name="vera-viewer"))
    with httpx.Client(base_url=live_server, timeout=10) as api:
        applied = api.post(
            "/api/v1/definitions/apply",
            headers=admin,
            json={"content": reference_images_yaml, "source": "reference-images.yaml"},
        )
        assert applied.status_code == 200, applied.text
        with api.stream("GET", STREAM, headers=viewer) as stream:
            assert stream.status_code == 200
            assert stream.headers["content-type"].startswith("text/event-stream")
            received = updates(stream.iter_lines())
            first = next(received)
            assert 'data-testid="state">pending<' in first

            revision = api.get(f"/api/v1/flags/{FLAG}/environments/qa/rollout", headers=admin).json()["revision"]
            started = api.post(
                f"/api/v1/flags/{FLAG}/environments/qa/rollout/start",
                headers=admin,
                json={"expected_revision": revision},
            )
            assert started.status_code == 200, started.text

            pushed = next(received)
            assert 'data-testid="state">running<' in pushed
            assert "rollout.start" in pushed


def test_a_stream_is_refused_like_the_page(
    live_server: str, make_token: Callable[..., str], reference_images_yaml: str
) -> None:
    admin = bearer(make_token(Role.ADMIN))
    with httpx.Client(base_url=live_server, timeout=10) as api:
        api.post("/api/v1/definitions/apply", headers=admin, json={"content": reference_images_yaml})

        anonymous = api.get(STREAM)
        ingest = api.get(STREAM, headers=bearer(make_token(Role.INGEST)))
        unknown = api.get("/ui/live/flags/no-such-flag/environments/qa", headers=admin)

    assert anonymous.status_code == 401
    assert ingest.status_code == 403
    assert unknown.status_code == 404
    assert unknown.json()["type"].endswith("/flag-not-found")
