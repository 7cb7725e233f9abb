"""Who may call what: app keys (events, items, feeds), admin keys (erasure, take-downs, metrics,
operations), a rate limit per key, and CORS closed unless origins are named.

Keys come from the environment only (SWIPELOOP_APP_KEYS, SWIPELOOP_ADMIN_KEYS, comma-separated)
and are sent as `Authorization: Bearer <key>`; an admin key opens the app's routes too. A class
of keys left unset closes its routes to everyone but loopback callers (Redis's "protected
mode"): `swipeloop up` works out of the box on one machine, and nothing is public by default.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import Any, Literal

from litestar.config.cors import CORSConfig
from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.handlers.base import BaseRouteHandler
from litestar.middleware.rate_limit import RateLimitConfig
from litestar.openapi.spec import Components, SecurityRequirement, SecurityScheme

from swipeloop.settings import Settings, keys_of

Role = Literal["app", "admin"]
LOOPBACK = frozenset({"127.0.0.1", "::1", "::ffff:127.0.0.1"})
_SCOPE_KEY = "swipeloop.caller"

APP: list[SecurityRequirement] = [{"appKey": []}, {"adminKey": []}]
ADMIN: list[SecurityRequirement] = [{"adminKey": []}]
COMPONENTS = Components(
    security_schemes={
        "appKey": SecurityScheme(
            type="http", scheme="bearer", description="an app key (SWIPELOOP_APP_KEYS)"
        ),
        "adminKey": SecurityScheme(
            type="http", scheme="bearer", description="an admin key (SWIPELOOP_ADMIN_KEYS)"
        ),
    }
)


@dataclass(frozen=True)
class Caller:
    """What a request proved: the roles its key holds, and whom a rate limit counts it as."""

    roles: frozenset[Role]
    loopback: bool
    identity: str  # a key's fingerprint, or the client address when it showed no valid key


class Keys:
    """The configured keys; `identify` compares a bearer token with every one of them."""

    def __init__(self, settings: Settings) -> None:
        self.app = tuple(k.encode() for k in keys_of(settings.app_keys))
        self.admin = tuple(k.encode() for k in keys_of(settings.admin_keys))

    def configured(self, role: Role) -> tuple[bytes, ...]:
        """The keys that open a role's routes (an admin key opens the app's too)."""
        return self.admin if role == "admin" else self.app + self.admin

    def roles_of(self, token: bytes) -> frozenset[Role]:
        """The roles `token` holds; constant time in the token, and every key is compared
        (no early exit) so the time taken says nothing about which one was close."""
        app = admin = False
        for key in self.app:
            app |= hmac.compare_digest(key, token)
        for key in self.admin:
            admin |= hmac.compare_digest(key, token)
        if admin:
            return frozenset({"app", "admin"})
        return frozenset({"app"}) if app else frozenset()

    def identify(self, connection: ASGIConnection[Any, Any, Any, Any]) -> Caller:
        """The caller of this request (computed once, kept in its scope)."""
        cached: Caller | None = connection.scope.get(_SCOPE_KEY)  # type: ignore[assignment]
        if cached is not None:
            return cached
        host = connection.client.host if connection.client else ""
        scheme, _, token = connection.headers.get("authorization", "").partition(" ")
        roles = self.roles_of(token.strip().encode()) if scheme.lower() == "bearer" else frozenset()
        identity = (
            "key:" + hashlib.sha256(token.strip().encode()).hexdigest()[:16]
            if roles
            else f"addr:{host}"
        )
        caller = Caller(roles, host in LOOPBACK, identity)
        connection.scope[_SCOPE_KEY] = caller  # type: ignore[literal-required]
        return caller

    def allows(self, caller: Caller, role: Role) -> bool:
        """A key of the role (or an admin key); with none configured, loopback callers only."""
        return role in caller.roles or (not self.configured(role) and caller.loopback)


def _keys(connection: ASGIConnection[Any, Any, Any, Any]) -> Keys:
    keys: Keys = connection.app.state["keys"]
    return keys


def _require(connection: ASGIConnection[Any, Any, Any, Any], role: Role) -> None:
    keys = _keys(connection)
    caller = keys.identify(connection)
    if keys.allows(caller, role):
        return
    if caller.roles:
        raise PermissionDeniedException(f"this route needs an {role} key")
    if not keys.configured(role):
        variable = "SWIPELOOP_ADMIN_KEYS" if role == "admin" else "SWIPELOOP_APP_KEYS"
        raise NotAuthorizedException(
            f"no {role} keys are configured ({variable}): this route answers loopback callers only"
        )
    raise NotAuthorizedException(f"this route needs an {role} key: Authorization: Bearer <key>")


def app_key(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """Guard: an app or admin key (401 without one, 403 with a key of another role)."""
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
