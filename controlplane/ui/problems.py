"""Problem details for people: a refusal on the operator's page reads as a page (or, for an htmx request, a fragment)
with its title, its sentence and its machine-readable ``type``; a client that does not ask for HTML still gets the
JSON problem the API gives, from the same handlers.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from litestar import Request, Response
from litestar.types import ExceptionHandlersMap

from controlplane.api.problems import exception_handlers as json_handlers
from controlplane.ui.pages import SECURITY_HEADERS, render
from controlplane.ui.session import UI_PATH, sign_out_cookie

__all__ = ["exception_handlers", "wants_html"]


def wants_html(request: Request[Any, Any, Any]) -> bool:
    """True for a browser: an htmx request, or one that accepts HTML."""
    return request.headers.get("hx-request") == "true" or "text/html" in request.headers.get("accept", "")


def _json_handler(error: Exception) -> Any:
    for kind in type(error).__mro__:
        if kind in json_handlers:
            return json_handlers[kind]
    return json_handlers[Exception]


def _html_problem(request: Request[Any, Any, Any], error: Exception) -> Response[Any]:
    answer: Response[Any] = _json_handler(error)(request, error)
    if not wants_html(request):
        return answer
    body: dict[str, Any] = answer.content if isinstance(answer.content, dict) else {}
    status = answer.status_code
    gone = sign_out_cookie(secure=request.url.scheme == "https")
    htmx = request.headers.get("hx-request") == "true"
    if status == 401:
        # Not signed in (or the token was revoked): to the sign-in form, and back here afterwards.
        target = f"{UI_PATH}/sign-in?next={quote(request.url.path, safe='/')}"
        if htmx:
            return Response("", status_code=401, headers={"HX-Redirect": target}, cookies=[gone])
        return Response("", status_code=303, headers={"Location": target}, cookies=[gone])
    slug = str(body.get("type", "")).rsplit("/", 1)[-1]
    extras = {key: value for key, value in body.items() if key not in {"type", "title", "status", "detail", "instance"}}
    html = render(
        "problem_fragment.html" if htmx else "problem.html",
        problem=body,
        slug=slug,
        extras=extras,
        principal=None,
    )
    kept = {"retry-after", "www-authenticate"}
    headers = {key: value for key, value in answer.headers.items() if key.lower() in kept} | SECURITY_HEADERS
    return Response(html, status_code=status, media_type="text/html", headers=headers)


#: The API's handlers, answering browsers in HTML: installed on the operator's page's router.
exception_handlers: ExceptionHandlersMap = dict.fromkeys(json_handlers, _html_problem)
