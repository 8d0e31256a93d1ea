"""The upload page: `GET /` shows the reference-image upload control only while the flag is on for the signed-in user.

The browser evaluates the flag itself, against the control plane on its own origin, through the vendored OpenFeature
web SDK and OFREP web provider (`static/vendor/`, see VENDORED.md there), and follows it live over the stream the
bulk answer advertises. The service only hands the page what it needs: the control plane's browser-facing URL, the
browser evaluate token (public to every visitor, so a token of its own, scoped to one environment) and the flag key.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from litestar import Request, Response, get
from litestar.static_files import create_static_files_router
from litestar.types import ControllerRouterHandler

from pipeline.settings import FLAG_KEY, PipelineSettings

__all__ = ["STATIC_DIR", "page_config", "upload_page_handlers"]

STATIC_DIR = Path(__file__).resolve().parent / "static"
_TEMPLATE_MARKER = "__FLAG_CONFIG__"


def page_config(settings: PipelineSettings) -> dict[str, str]:
    """What the page's script reads: where the control plane is for a browser, the browser token, the flag."""
    return {
        "controlPlaneUrl": (settings.browser_controlplane_url or settings.controlplane_url).rstrip("/"),
        "token": settings.browser_evaluate_token,
        "flagKey": FLAG_KEY,
    }


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def render_page(config: dict[str, str]) -> str:
    """The page with its configuration inlined as JSON (escaped so no value can close the script element)."""
    encoded = json.dumps(config).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return (STATIC_DIR / "upload.html").read_text().replace(_TEMPLATE_MARKER, encoded)


@get("/", media_type="text/html", include_in_schema=False)
async def upload_page(request: Request[Any, Any, Any]) -> Response[str]:
    """The upload page, allowed to talk to the control plane's origin and nothing else outside its own."""
    settings: PipelineSettings = request.app.state.settings
    config = page_config(settings)
    policy = (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        f"connect-src 'self' {_origin(config['controlPlaneUrl'])}; base-uri 'none'; form-action 'self'"
    )
    return Response(
        render_page(config),
        media_type="text/html",
        headers={"Content-Security-Policy": policy, "Cache-Control": "no-store"},
    )


def upload_page_handlers() -> list[ControllerRouterHandler]:
    """The page and its static files (its script, style and the vendored OpenFeature bundle)."""
    return [upload_page, create_static_files_router(path="/static", directories=[STATIC_DIR])]
