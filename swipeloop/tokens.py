"""Per-user tokens from the client's side: mint one (the login service's job; here for
`swipeloop token`, the simulator and tests, with the HS256 secret) and pick what a client sends.

A token is a JWT whose subject (`sub`) is the user; the API checks it in api.tokens.
"""

from __future__ import annotations

import time

import jwt

from swipeloop.settings import PREFIX, Settings, SettingsError


def mint(settings: Settings, subject: str, ttl_s: float = 3600.0, now: float | None = None) -> str:
    """An HS256 token for `subject`, valid `ttl_s` seconds, with the settings' issuer and
    audience. Only a shared secret can mint: a JWKS issuer's private keys stay with it."""
    if not settings.jwt_secret:
        raise SettingsError(
            f"{PREFIX}JWT_SECRET is not set: tokens signed with the keys at a JWKS URL come "
            "from that issuer's login service"
        )
    issued = time.time() if now is None else now
    claims = {
        "sub": subject,
        "iss": settings.jwt_issuer,
        "aud": settings.jwt_audience,
        "iat": int(issued),
        "exp": int(issued + ttl_s),
    }
    return jwt.encode(claims, settings.jwt_secret, algorithm="HS256")


class Credentials:
    """What a client acting for many people (the simulator, a load test) sends: each person's
    own token when it can mint them (tokens on, a shared secret), else the settings' key for
    user routes (`Settings.bearer("user")`). Tokens are minted once and renewed when half
    their life is gone."""

    def __init__(self, settings: Settings | None = None, ttl_s: float = 3600.0) -> None:
        settings = settings or Settings()  # (none: the loopback default, no credentials)
        self._settings = settings
        self._ttl_s = ttl_s
        self._minted: dict[str, tuple[float, dict[str, str]]] = {}
        self.per_user = settings.tokens and bool(settings.jwt_secret)

    def user(self, user_id: str) -> dict[str, str]:
        """The Authorization header for requests made as `user_id` (events, their feed)."""
        if not self.per_user:
            return self._settings.bearer("user")
        now = time.time()
        renew_at, header = self._minted.get(user_id, (0.0, {}))
        if now >= renew_at:
            token = mint(self._settings, user_id, self._ttl_s, now)
            header = {"Authorization": f"Bearer {token}"}
            self._minted[user_id] = (now + self._ttl_s / 2, header)
        return header

    def server(self) -> dict[str, str]:
        """The header for server routes (item uploads)."""
        return self._settings.bearer("app")
