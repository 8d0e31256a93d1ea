"""OPTIONS on any route: 204 with every method the path serves in `Allow`.

Litestar answers OPTIONS with a handler made per route object, listing that object's methods only: a path whose
GET and POST come from two handlers of a controller answered `Allow: OPTIONS, POST`. This hook answers from the
whole route table instead, before any handler runs (the guard lets OPTIONS through: it reveals no data).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from litestar import Request, Response
from litestar.routes import BaseRoute, HTTPRoute
from litestar.status_codes import HTTP_204_NO_CONTENT

__all__ = ["allowed_methods", "answer_options"]


def allowed_methods(routes: Iterable[BaseRoute]) -> dict[str, str]:
    """Per path template (as routing puts it in the scope), the `Allow` value: every method served on it, sorted."""
    methods: dict[str, set[str]] = {}
    for route in routes:
        if isinstance(route, HTTPRoute):
            methods.setdefault(route.path_format, set()).update(route.methods)
    return {path: ", ".join(sorted(served | {"OPTIONS"})) for path, served in methods.items()}


async def answer_options(request: Request[Any, Any, Any]) -> Response[None] | None:
    """Answer an OPTIONS request from the route table (None: not OPTIONS, let the handler run)."""
    if request.method != "OPTIONS":
        return None
    table: dict[str, str] | None = getattr(request.app.state, "allowed_methods", None)
    if table is None:
        table = request.app.state.allowed_methods = allowed_methods(request.app.routes)
    template = request.scope.get("path_template", request.url.path)
    allow = table.get(template, "OPTIONS")
    return Response(content=None, status_code=HTTP_204_NO_CONTENT, headers={"Allow": allow})
