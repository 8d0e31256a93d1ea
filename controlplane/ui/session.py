"""The sign-in cookie and the CSRF token that goes with it.

The cookie holds the API token itself, not a server-side session id: replicas are stateless over the database, so a
session store would be one more table (or a shared secret) for no gain in what the cookie can do; the token's
revocation ends the page's access at once, as it ends the API's; and the cookie is ``HttpOnly`` (no script reads
it), ``SameSite=Strict`` (no other site's request carries it) and ``Secure`` when served over HTTPS.

The CSRF token is an HMAC of a fixed label keyed by that API token (OWASP's HMAC-based token pattern): only a page
that can read our HTML knows it, it needs no state on any replica, and it changes when the token does.
"""

from __future__ import annotations

import hashlib
import hmac

from litestar.datastructures import Cookie

__all__ = [
    "COOKIE_NAME",
    "CSRF_FIELD",
    "UI_PATH",
    "csrf_token",
    "is_valid_csrf",
    "safe_next",
    "sign_in_cookie",
    "sign_out_cookie",
]

UI_PATH = "/ui"
COOKIE_NAME = "controlplane_ui_token"
CSRF_FIELD = "csrf_token"
_CSRF_LABEL = b"controlplane-ui-csrf-v1"


def csrf_token(api_token: str) -> str:
    """The CSRF token of forms on a page signed in with ``api_token``."""
    return hmac.new(api_token.encode(), _CSRF_LABEL, hashlib.sha256).hexdigest()


def is_valid_csrf(api_token: str, presented: str | None) -> bool:
    """True when ``presented`` is the CSRF token of ``api_token`` (compared in constant time)."""
    return presented is not None and hmac.compare_digest(csrf_token(api_token), presented)


def sign_in_cookie(api_token: str, *, secure: bool) -> Cookie:
    """The cookie that keeps a browser signed in: only for /ui, never readable by scripts, never sent cross-site."""
    return Cookie(
        key=COOKIE_NAME,
        value=api_token,
        path=UI_PATH,
        httponly=True,
        samesite="strict",
        secure=secure,
    )


def sign_out_cookie(*, secure: bool) -> Cookie:
    """The cookie that replaces the sign-in cookie, already expired."""
    return Cookie(key=COOKIE_NAME, value="", path=UI_PATH, httponly=True, samesite="strict", secure=secure, max_age=0)


def safe_next(path: str | None) -> str:
    """Where to go after signing in: a path of this page, never another site (``//evil`` or ``/ui@evil``)."""
    if path and path.startswith(UI_PATH) and not path.startswith("//") and "\\" not in path:
        rest = path[len(UI_PATH) :]
        if rest == "" or rest[0] in "/?":
            return path
    return UI_PATH
