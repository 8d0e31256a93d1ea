"""The page templates (Jinja2, autoescaped) and the one environment that renders them, for a request's response and
for the live streams alike."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

__all__ = ["ASSETS", "SECURITY_HEADERS", "TEMPLATES", "render"]

#: The vendored assets, by role: versioned file names, so a browser may cache them for good.
ASSETS = {
    "htmx": "htmx-2.0.11.min.js",
    "sse": "htmx-ext-sse-2.2.4.min.js",
    "css": "ui.css",
    "js": "ui.js",
}

#: Every answer of the page: its own scripts and stylesheet only, never inside another site's frame (a page with a
#: rollback button must not be clickjacked), and no full URL leaking to other sites.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
        "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    ),
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff",
}


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S UTC") if value is not None else "never"


def _clock(value: datetime | None) -> str:
    return value.strftime("%H:%M:%S") if value is not None else ""


def _percent(value: float | None) -> str:
    return "" if value is None else f"{value:g}%"


def _measured(value: float | None) -> str:
    return "no value" if value is None else f"{value:.4g}"


TEMPLATES = Environment(
    loader=PackageLoader("controlplane.ui", "templates"),
    autoescape=select_autoescape(default=True),
    undefined=StrictUndefined,  # a misspelt name fails the test that renders it, not silently blank in production
    trim_blocks=True,
    lstrip_blocks=True,
)
TEMPLATES.filters.update(when=_when, clock=_clock, percent=_percent, measured=_measured)
TEMPLATES.globals.update(assets=ASSETS)


def render(name: str, **context: Any) -> str:
    """The template ``name`` rendered with ``context``."""
    return TEMPLATES.get_template(name).render(**context)
