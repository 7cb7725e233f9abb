"""Who may call what: per-user tokens (events and feeds, for the token's user only), app keys
(item uploads; events and feeds too until tokens are on), admin keys (everything: erasure,
take-downs, metrics, operations, and events or feeds of any user), a rate limit per caller,
and CORS closed unless origins are named.

Keys come from the environment only (SWIPELOOP_APP_KEYS, SWIPELOOP_ADMIN_KEYS, comma-separated);
tokens are JWTs from the app's own login service (api.tokens). Both are sent as
`Authorization: Bearer ...`. A kind of route nobody can open (no keys, no tokens configured)
answers loopback callers only (Redis's "protected mode"): `swipeloop up` works out of the box on
one machine, and nothing is public by default.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import Any

from litestar.config.cors import CORSConfig
from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.handlers.base import BaseRouteHandler
from litestar.middleware.rate_limit import RateLimitConfig
from litestar.openapi.spec import Components, SecurityRequirement, SecurityScheme

from api.tokens import BadToken, Tokens
from swipeloop.settings import Route, Settings, keys_of

LOOPBACK = frozenset({"127.0.0.1", "::1", "::ffff:127.0.0.1"})
_SCOPE_KEY = "swipeloop.caller"

USER: list[SecurityRequirement] = [{"userToken": []}, {"appKey": []}, {"adminKey": []}]
APP: list[SecurityRequirement] = [{"appKey": []}, {"adminKey": []}]
ADMIN: list[SecurityRequirement] = [{"adminKey": []}]
COMPONENTS = Components(
    security_schemes={
        "userToken": SecurityScheme(
            type="http",
            scheme="bearer",
            bearer_format="JWT",
            description="a user's token from the app's login service (SWIPELOOP_JWT_SECRET or "
            "SWIPELOOP_JWKS_URL); its subject is the user_id it may act for",
        ),
        "appKey": SecurityScheme(
            type="http",
            scheme="bearer",
            description="an app key (SWIPELOOP_APP_KEYS): item uploads; events and feeds "
            "while tokens are off",
        ),
        "adminKey": SecurityScheme(
            type="http", scheme="bearer", description="an admin key (SWIPELOOP_ADMIN_KEYS)"
        ),
    }
)


@dataclass(frozen=True)
class Caller:
    """What a request proved: the kinds of route it opens, the user its token names, and whom
    a rate limit counts it as."""

    roles: frozenset[Route]
    loopback: bool
    identity: str  # user:<subject>, key:<fingerprint>, or addr:<client> without valid credentials
    subject: str | None = None  # a token's user: the only user_id this caller may act for
    refused: str = ""  # why the token it showed proves nothing


class Keys:
    """The configured keys and token issuer; `identify` checks a request's bearer credential."""

    def __init__(self, settings: Settings) -> None:
        self.app = tuple(k.encode() for k in keys_of(settings.app_keys))
        self.admin = tuple(k.encode() for k in keys_of(settings.admin_keys))
        self.tokens = Tokens(settings)

    def configured(self, role: Route) -> bool:
        """Whether any credential opens a kind of route (an admin key opens every kind)."""
        if role == "admin":
            return bool(self.admin)
        if role == "user" and self.tokens.on:
            return True
        return bool(self.app or self.admin)

    def roles_of(self, key: bytes) -> frozenset[Route]:
        """The kinds of route a key opens; constant time in the key, and every key is compared
        (no early exit) so the time taken says nothing about which one was close."""
        app = admin = False
        for known in self.app:
            app |= hmac.compare_digest(known, key)
        for known in self.admin:
            admin |= hmac.compare_digest(known, key)
        if admin:
            return frozenset({"user", "app", "admin"})
        if not app:
            return frozenset()
        return frozenset({"app"}) if self.tokens.on else frozenset({"user", "app"})

    def identify(self, connection: ASGIConnection[Any, Any, Any, Any]) -> Caller:
        """The caller of this request (computed once, kept in its scope)."""
        cached: Caller | None = connection.scope.get(_SCOPE_KEY)  # type: ignore[assignment]
        if cached is not None:
            return cached
        caller = self._check(connection)
        connection.scope[_SCOPE_KEY] = caller  # type: ignore[literal-required]
        return caller

    def _check(self, connection: ASGIConnection[Any, Any, Any, Any]) -> Caller:
        host = connection.client.host if connection.client else ""
        loopback = host in LOOPBACK
        scheme, _, credential = connection.headers.get("authorization", "").partition(" ")
        credential = credential.strip() if scheme.lower() == "bearer" else ""
        refused = ""
        if self.tokens.on and credential.count(".") == 2:  # a JWT's three parts
            try:
                subject = self.tokens.subject_of(credential)
                return Caller(frozenset({"user"}), loopback, f"user:{subject}", subject)
            except BadToken as exc:
                refused = str(exc)  # (unless it is a key that happens to look like a JWT)
        roles = self.roles_of(credential.encode()) if credential else frozenset()
        if not roles:
            return Caller(roles, loopback, f"addr:{host}", refused=refused)
        fingerprint = hashlib.sha256(credential.encode()).hexdigest()[:16]
        return Caller(roles, loopback, f"key:{fingerprint}")

    def allows(self, caller: Caller, role: Route) -> bool:
        """Credentials that open the route; with none configured, loopback callers only."""
        return role in caller.roles or (not self.configured(role) and caller.loopback)


NEEDS: dict[Route, str] = {
    "user": "a user token (or an admin key)",
    "app": "an app key (or an admin key)",
    "admin": "an admin key",
}


def _keys(connection: ASGIConnection[Any, Any, Any, Any]) -> Keys:
    keys: Keys = connection.app.state["keys"]
    return keys


def _require(connection: ASGIConnection[Any, Any, Any, Any], role: Route) -> None:
    keys = _keys(connection)
    caller = keys.identify(connection)
    if keys.allows(caller, role):
        return
    if caller.roles:
        raise PermissionDeniedException(f"this route needs {NEEDS[role]}")
    if caller.refused:
        raise NotAuthorizedException(caller.refused)
    if not keys.configured(role):
        kind = "admin" if role == "admin" else "app"
        raise NotAuthorizedException(
            f"no {kind} keys are configured (SWIPELOOP_{kind.upper()}_KEYS): this route answers "
            "loopback callers only"
        )
    needs = NEEDS[role] if role != "user" or keys.tokens.on else NEEDS["app"]
    raise NotAuthorizedException(f"this route needs {needs}: Authorization: Bearer <credential>")


def caller_of(connection: ASGIConnection[Any, Any, Any, Any]) -> Caller:
    """Who made this request (after the guards: credentials already checked)."""
    return _keys(connection).identify(connection)


def acting_for(caller: Caller, user_id: str, where: str) -> None:
    """403 unless the caller may act for `user_id`: a token only for its own subject (keys,
    and loopback callers while nothing is configured, for anyone)."""
    if caller.subject is not None and caller.subject != user_id:
        raise PermissionDeniedException(
            f"the token is for user {caller.subject!r}, not {user_id[:128]!r} - at {where}"
        )


def user_token(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """Guard: a user token (its subject is checked by the route), or a key that opens user
    routes (an admin key; an app key while tokens are off)."""
    _require(connection, "user")


def app_key(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """Guard: an app or admin key (401 without one, 403 with a credential of another kind)."""
    _require(connection, "app")


def admin_key(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """Guard: an admin key."""
    _require(connection, "admin")


def rate_limit(settings: Settings) -> RateLimitConfig | None:
    """`rate_limit_per_s` requests per second per key (per address for callers without one);
    health checks are not counted. None when the setting is 0."""
    if not settings.rate_limit_per_s:
        return None
    return RateLimitConfig(
        rate_limit=("second", settings.rate_limit_per_s),
        identifier_for_request=lambda request: _keys(request).identify(request).identity,
        exclude=["^/health"],
    )


def cors(settings: Settings) -> CORSConfig | None:
    """CORS for the origins named in `cors_origins`; none named: no CORS headers at all."""
    origins = [o.strip() for o in settings.cors_origins.split(",") if o.strip()]
    if not origins:
        return None
    return CORSConfig(
        allow_origins=origins,
        allow_methods=["GET", "POST", "DELETE"],
        allow_headers=["Authorization", "Content-Type"],
    )
