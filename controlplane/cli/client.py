"""The HTTP API client of the commands that are not bootstrap: `Api`, pointed by `--url`/`--token` or
CONTROLPLANE_URL/CONTROLPLANE_TOKEN, and `ApiProblem`, a refusal it read, told in the CLI's words."""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from typing import Any

import httpx

from controlplane.cli.output import plain

__all__ = ["DEFAULT_URL", "Api", "ApiProblem", "CommandError", "query_params"]

DEFAULT_URL = "http://127.0.0.1:8080"

#: Request fields the API names in a problem (`overridable_with`, `field`), as the CLI option that sets them.
_OPTIONS = {
    "force": "--force",
    "reason": "--reason",
    "expected_revision": "--revision",
    "policy": "--policy",
    "purge_uploads_since": "--purge-uploads-since",
}


class CommandError(Exception):
    """A failure to report in one line and exit 1."""


class ApiProblem(CommandError):
    """An RFC 9457 problem the API answered: its status, `type` slug, detail and extra members."""

    def __init__(self, status: int, slug: str, detail: str, extra: Mapping[str, Any]) -> None:
        self.status = status
        self.slug = slug
        self.detail = detail
        self.extra = dict(extra)
        super().__init__(f"{status} {slug}: {_in_cli_words(detail, self.extra)}")


def _in_cli_words(detail: str, extra: dict[str, Any]) -> str:
    """A problem's detail and extra members as one sentence: request fields named as the options that set them,
    values in words (no JSON or Python forms)."""
    shown = {name: value for name, value in extra.items() if name not in ("overridable_with", "errors")}
    # A body of the wrong shape: the detail already joins the messages; say where each one was.
    keys = [item["key"] for item in extra.get("errors") or [] if isinstance(item, dict) and item.get("key")]
    if keys:
        shown["in"] = [_OPTIONS.get(key, key) for key in keys]
    if "field" in shown and shown["field"] in _OPTIONS:
        shown["option"] = _OPTIONS[shown.pop("field")]
    text = detail
    if shown:
        text += " (" + ", ".join(f"{name.replace('_', ' ')} {plain(value)}" for name, value in shown.items()) + ")"
    override = extra.get("overridable_with")
    if override in _OPTIONS:
        # The API names its body field; an operator at a terminal needs the option, and the reason it also needs.
        text += f"; to override, run it again with {_OPTIONS[override]} --reason TEXT (audited)"
    return text


class Api:
    """A thin client of the control plane's HTTP API."""

    def __init__(self, url: str, token: str | None) -> None:
        if not token:
            raise CommandError(
                "no API token: pass --token or set CONTROLPLANE_TOKEN (see `controlplane tokens create`)"
            )
        self._url = url
        self._headers = {"Authorization": f"Bearer {token}"}

    @property
    def url(self) -> str:
        """The base URL of the control plane this client talks to."""
        return self._url

    @property
    def headers(self) -> dict[str, str]:
        """The headers that authorise this client's requests."""
        return dict(self._headers)

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Api:
        """The API at `--url` (else CONTROLPLANE_URL, else the local one), authorised by `--token` (else
        CONTROLPLANE_TOKEN): an option given on the command line wins over the environment."""
        url = getattr(args, "url", None) or os.environ.get("CONTROLPLANE_URL") or DEFAULT_URL
        token = getattr(args, "token", None) or os.environ.get("CONTROLPLANE_TOKEN")
        return cls(url, token)

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        """Send a request; return the JSON body, or raise ApiProblem with the problem's type and detail."""
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
                "is --url (or CONTROLPLANE_URL) the control plane?"
            ) from None
        if response.is_success:
            return body
        problem = body if isinstance(body, dict) else {}
        slug = str(problem.get("type", "http-error")).rsplit("/", 1)[-1]
        detail = str(problem.get("detail", response.reason_phrase))
        extra = {k: v for k, v in problem.items() if k not in ("type", "title", "status", "detail", "instance")}
        raise ApiProblem(response.status_code, slug, detail, extra)


def query_params(**values: Any) -> dict[str, Any]:
    """The query parameters that were given (a None value is left out)."""
    return {name: value for name, value in values.items() if value is not None}
