"""CORS for the evaluation routes only: browsers on the configured origins may call OFREP and open the stream.

Litestar's CORS middleware writes the headers and answers preflights; it applies to a whole app, so this wraps it
to the evaluation paths and to allowed origins. Everything else (the management API above all) answers exactly as
without CORS: a browser on another origin can neither read it nor send it a token. No route allows credentials:
evaluation authenticates with a bearer token or the stream credential, never a cookie.
"""

from __future__ import annotations

from collections.abc import Sequence

from litestar.config.cors import CORSConfig
from litestar.datastructures import Headers
from litestar.enums import ScopeType

# Litestar's CORS middleware, which its public module only re-exports with a deprecation warning (it is built
# from `cors_config`, for the whole app); pinned by litestar<3 in pyproject.toml.
from litestar.middleware._internal.cors import CORSMiddleware
from litestar.types import ASGIApp, Receive, Scope, Send

__all__ = ["EVALUATION_REQUEST_HEADERS", "EvaluationCORS", "evaluation_cors_config"]

#: What OFREP clients send besides the CORS-safelisted headers (content-type: application/json is not safelisted).
EVALUATION_REQUEST_HEADERS = ["authorization", "x-api-key", "x-environment", "content-type", "if-none-match"]


def evaluation_cors_config(origins: Sequence[str]) -> CORSConfig:
    """The CORS answer for evaluation: those origins, GET and POST, the OFREP headers, ETag readable, no cookies."""
    return CORSConfig(
        allow_origins=list(origins),
        allow_methods=["GET", "POST", "OPTIONS"],
        allow_headers=EVALUATION_REQUEST_HEADERS,
        allow_credentials=False,
        # The web provider reads ETag to send it back, and Retry-After to pause after a 429.
        expose_headers=["ETag", "Retry-After"],
        max_age=600,
    )


class EvaluationCORS:
    """ASGI middleware: CORS on paths under ``prefixes`` for allowed origins; any other request passes untouched."""

    def __init__(self, app: ASGIApp, *, origins: Sequence[str], prefixes: Sequence[str]) -> None:
        self._app = app
        self._prefixes = tuple(prefixes)
        self._config = evaluation_cors_config(origins)
        self._cors = CORSMiddleware(app=app, config=self._config)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Hand evaluation requests from an allowed origin to the CORS middleware; the rest to the app."""
        if scope["type"] == ScopeType.HTTP and scope["path"].startswith(self._prefixes):
            origin = Headers.from_scope(scope).get("origin")
            # A disallowed origin gets the plain answer (a preflight: 204 with `Allow` and no CORS headers), which
            # the browser refuses to use: the same as before CORS existed, not Litestar's text/plain 400.
            if origin is not None and self._config.is_origin_allowed(origin):
                await self._cors(scope, receive, send)
                return
        await self._app(scope, receive, send)
