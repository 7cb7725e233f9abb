"""Who may open the console: an admin key, or a loopback caller while none is configured
(`api.security`'s rule for every admin route).

A browser cannot put a header on the address it navigates to, so the sign-in form checks an
admin key once and sets an HttpOnly cookie that opens the console's pages only: a pass that
expires after `PASS_S` and is signed by that key (HMAC-SHA256), so the cookie never holds the
key, and removing the key from the settings revokes its passes. The page's own script sends
the key (kept in the tab's sessionStorage) as `Authorization: Bearer` to the API routes it
calls, as any client does: the cookie opens no API route.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from typing import Any

from litestar import Controller, Request, get, post
from litestar.connection import ASGIConnection
from litestar.datastructures import Cookie
from litestar.handlers.base import BaseRouteHandler
from litestar.response import Redirect, Template

from api.security import Keys

COOKIE = "swipeloop_console"
PAGES = "/console"
PASS_S = 12 * 3600  # how long a sign-in opens the pages


class SignIn(Exception):
    """The page needs an admin key the request did not show (answered with the sign-in form)."""


def _keys(connection: ASGIConnection[Any, Any, Any, Any]) -> Keys:
    keys: Keys = connection.app.state["keys"]
    return keys


def is_admin_key(keys: Keys, key: str) -> bool:
    """Whether `key` is one of the configured admin keys (constant time, as every key check)."""
    return bool(key) and "admin" in keys.roles_of(key.encode())


def _signature(key: bytes, expires: int) -> str:
    return hmac.new(key, f"swipeloop-console:{expires}".encode(), hashlib.sha256).hexdigest()


def console_pass(key: str, now: float) -> str:
    """The cookie's value for a signed-in admin key: when it expires, and that signed by the
    key."""
    expires = int(now) + PASS_S
    return f"{expires}.{_signature(key.encode(), expires)}"


def is_console_pass(keys: Keys, value: str, now: float) -> bool:
    """Whether a cookie's value is an unexpired pass signed by one of the admin keys (every
    key is tried: the time taken says nothing of which one was close)."""
    expires, _, signature = value.partition(".")
    if not expires.isdigit() or int(expires) <= now:
        return False
    valid = False
    for key in keys.admin:
        valid |= hmac.compare_digest(_signature(key, int(expires)), signature)
    return valid


def console_page(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """Guard of the pages: an admin key in the header, a pass in the console's cookie, or a
    loopback caller while no admin key is configured; anyone else gets the sign-in form."""
    keys = _keys(connection)
    if keys.allows(keys.identify(connection), "admin"):
        return
    if is_console_pass(keys, connection.cookies.get(COOKIE, ""), time.time()):
        return
    raise SignIn()


def to_sign_in(_request: Request[Any, Any, Any], _exc: SignIn) -> Redirect:
    """A page asked for without an admin key: the sign-in form."""
    return Redirect(f"{PAGES}/login")


class LoginController(Controller):
    """The sign-in form: an admin key in, the console's pass out."""

    path = PAGES
    include_in_schema = False

    @get("/login")
    async def form(self, request: Request[Any, Any, Any]) -> Template:
        """The form (with a word on what opens the console here)."""
        return Template("login.html", context=_form_context(request, error=""))

    @post("/login", status_code=303)
    async def sign_in(self, request: Request[Any, Any, Any]) -> Redirect | Template:
        """A right admin key: its pass and on to the console; a wrong one: the form again."""
        form = await request.form()
        key = str(form.get("key", "")).strip()
        if not is_admin_key(_keys(request), key):
            context = _form_context(request, error="that is not an admin key")
            return Template("login.html", context=context, status_code=401)
        cookie = Cookie(
            key=COOKIE,
            value=console_pass(key, time.time()),
            path=PAGES,
            max_age=PASS_S,
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )
        return Redirect(f"{PAGES}/playground", cookies=[cookie], status_code=303)

    @get("/logout")
    async def sign_out(self) -> Redirect:
        """Forget the cookie (the page's script forgets the key it kept)."""
        gone = Cookie(key=COOKIE, value="", path=PAGES, max_age=0, httponly=True)
        return Redirect(f"{PAGES}/login", cookies=[gone])


def _form_context(request: Request[Any, Any, Any], error: str) -> dict[str, Any]:
    keys = _keys(request)
    return {"error": error, "keys_configured": keys.configured("admin")}
