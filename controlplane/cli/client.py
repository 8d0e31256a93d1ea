"""The HTTP API client of the commands that are not bootstrap: `Api`, read from CONTROLPLANE_URL and _TOKEN."""

from __future__ import annotations

import json
import os
from typing import Any

import httpx

__all__ = ["DEFAULT_URL", "Api", "CommandError", "query_params"]

DEFAULT_URL = "http://127.0.0.1:8080"


class CommandError(Exception):
    """A failure to report in one line and exit 1."""


class Api:
    """A thin client of the control plane's HTTP API."""

    def __init__(self, url: str, token: str | None) -> None:
        if not token:
            raise CommandError("set CONTROLPLANE_TOKEN to an API token (see `controlplane tokens create`)")
        self._url = url
        self._headers = {"Authorization": f"Bearer {token}"}

    @classmethod
    def from_env(cls) -> Api:
        """The API at CONTROLPLANE_URL (default: the local one), authorised by CONTROLPLANE_TOKEN."""
        return cls(os.environ.get("CONTROLPLANE_URL", DEFAULT_URL), os.environ.get("CONTROLPLANE_TOKEN"))

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        """Send a request; return the JSON body, or raise CommandError with the problem's type and detail."""
        try:
            with httpx.Client(base_url=self._url, headers=self._headers, timeout=30) as client:
                response = client.request(method, "/api/v1" + path, **kwargs)
        except httpx.HTTPError as error:
            raise CommandError(f"cannot reach the control plane at {self._url}: {error}") from error
        try:
            body = response.json()
        except ValueError:
            # Not the control plane's API (a proxy's error page, another service on the port): say so in one line.
            kind = response.headers.get("content-type", "no content type")
            raise CommandError(
                f"{response.status_code} not-the-api: {response.request.url} answered {kind}, not JSON; "
                "is CONTROLPLANE_URL the control plane?"
            ) from None
        if response.is_success:
            return body
        problem = body if isinstance(body, dict) else {}
        slug = str(problem.get("type", "http-error")).rsplit("/", 1)[-1]
        detail = problem.get("detail", response.reason_phrase)
        extra = {k: v for k, v in problem.items() if k not in ("type", "title", "status", "detail", "instance")}
        suffix = f" {json.dumps(extra)}" if extra else ""
        raise CommandError(f"{response.status_code} {slug}: {detail}{suffix}")


def query_params(**values: Any) -> dict[str, Any]:
    """The query parameters that were given (a None value is left out)."""
    return {name: value for name, value in values.items() if value is not None}
