"""Who may open the console: an admin key, or a loopback caller while none is configured
(`api.security`'s rule for every admin route).

A browser cannot put a header on the address it navigates to, so the sign-in form checks an
admin key once and keeps it in an HttpOnly cookie that opens the console's pages only. The
page's own script sends the key (kept in the tab's sessionStorage) as `Authorization:
Bearer` to the API routes it calls, as any client does: the cookie opens no API route.
"""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, get, post
from litestar.connection import ASGIConnection
from litestar.datastructures import Cookie
from litestar.handlers.base import BaseRouteHandler
from litestar.response import Redirect, Template

from api.security import Keys

COOKIE = "swipeloop_console"
PAGES = "/console"


class SignIn(Exception):
    """The page needs an admin key the request did not show (answered with the sign-in form)."""


def _keys(connection: ASGIConnection[Any, Any, Any, Any]) -> Keys:
    keys: Keys = connection.app.state["keys"]
    return keys


def is_admin_key(keys: Keys, key: str) -> bool:
    """Whether `key` is one of the configured admin keys (constant time, as every key check)."""
    return bool(key) and "admin" in keys.roles_of(key.encode())


def console_page(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """Guard of the pages: an admin key in the header or the console's cookie, or a loopback
    caller while no admin key is configured; anyone else gets the sign-in form."""
    keys = _keys(connection)
    if keys.allows(keys.identify(connection), "admin"):
        return
    if is_admin_key(keys, connection.cookies.get(COOKIE, "")):
        return
    raise SignIn()


def to_sign_in(_request: Request[Any, Any, Any], _exc: SignIn) -> Redirect:
    """A page asked for without an admin key: the sign-in form."""
    return Redirect(f"{PAGES}/login")


class LoginController(Controller):
    """The sign-in form: an admin key in, the console's cookie out."""

    path = PAGES
    include_in_schema = False

    @get("/login")
    async def form(self, request: Request[Any, Any, Any]) -> Template:
        """The form (with a word on what opens the console here)."""
        return Template("login.html", context=_form_context(request, error=""))

    @post("/login", status_code=303)
    async def sign_in(self, request: Request[Any, Any, Any]) -> Redirect | Template:
        """A right admin key: the cookie and on to the console; a wrong one: the form again."""
        form = await request.form()
        key = str(form.get("key", "")).strip()
        if not is_admin_key(_keys(request), key):
            context = _form_context(request, error="that is not an admin key")
            return Template("login.html", context=context, status_code=401)
        cookie = Cookie(
            key=COOKIE,
            value=key,
            path=PAGES,
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
