"""Per-user tokens, checked: a JWT from the app's own login service proves who is calling.

Signed with a shared secret (HS256) or with a key the issuer publishes at a JWKS URL (RS256,
ES256; PyJWT does the cryptography). Issuer, audience, expiry and subject are required. JWKS
keys are fetched in the background (at start, every `jwks_refresh_s`, and soon after a token
names a key id not seen yet, at most every MIN_REFETCH_S): checking a token never waits on the
network, as Envoy's jwt_authn does with `async_fetch`. Until the first fetch answers, tokens
get 401 and readiness says so.
"""

from __future__ import annotations

import functools
import logging
import threading
import time

import jwt
from jwt import PyJWK, PyJWKClient

from swipeloop.settings import Settings

log = logging.getLogger(__name__)

JWKS_ALGORITHMS = ("RS256", "ES256")
MIN_REFETCH_S = 10.0  # an unknown key id refetches the JWKS at most this often
MAX_SUBJECT = 128  # a user_id's length limit (swipeloop.contracts)
CACHED_TOKENS = 65_536  # verified tokens remembered (~20 MB at most)


class BadToken(Exception):
    """A token that proves nothing; the message says why (it goes back in the 401)."""


class Tokens:
    """The configured issuer's keys; `subject_of` checks a token and returns its user."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._keys: dict[str | None, PyJWK] = {}  # JWKS keys by kid (None: a key without one)
        self._wanted = threading.Event()
        self._stopping = threading.Event()
        self._last_fetch = 0.0
        self._thread: threading.Thread | None = None
        self.clock = time.time
        self._generation = 0  # bumped with each JWKS fetch: remembered tokens are forgotten
        # (an exception is not remembered: a refused token is checked again each time)
        self._verified = functools.lru_cache(maxsize=CACHED_TOKENS)(self._verify)
        self._jwks = (
            PyJWKClient(settings.jwks_url, cache_jwk_set=False, timeout=5)
            if settings.jwks_url
            else None
        )

    @property
    def on(self) -> bool:
        """Whether tokens are configured at all."""
        return self._settings.tokens

    def ready(self) -> bool:
        """Tokens can be checked: a secret, or JWKS keys fetched at least once."""
        return self._jwks is None or bool(self._keys)

    def subject_of(self, token: str) -> str:
        """The user this token was issued to; BadToken when its signature, issuer, audience,
        expiry or subject do not hold.

        A phone sends the same token with every request until it expires, so a token once
        verified is remembered (by its exact text, up to CACHED_TOKENS; each JWKS fetch
        forgets them all): the next request only checks its expiry again. The signature check
        it saves costs 35-58 µs (bench/RESULTS.md)."""
        subject, expires = self._verified(token, self._generation)
        if self.clock() > expires + self._settings.jwt_leeway_s:
            raise BadToken("token refused: Signature has expired")
        return subject

    def _verify(self, token: str, _generation: int) -> tuple[str, float]:
        """(subject, exp) of a token whose signature and claims hold now."""
        key, algorithms = self._key_for(token)
        s = self._settings
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=algorithms,
                issuer=s.jwt_issuer,
                audience=s.jwt_audience,
                leeway=s.jwt_leeway_s,
                options={"require": ["exp", "sub", "iss", "aud"]},
            )
        except jwt.InvalidTokenError as exc:
            raise BadToken(f"token refused: {exc}") from None
        subject = claims["sub"]
        if not isinstance(subject, str) or not 1 <= len(subject) <= MAX_SUBJECT:
            raise BadToken(f"token refused: its subject must be a user id of 1-{MAX_SUBJECT} chars")
        return subject, float(claims["exp"])

    def _key_for(self, token: str) -> tuple[str | PyJWK, list[str]]:
        if self._jwks is None:
            return self._settings.jwt_secret, ["HS256"]
        try:
            kid = jwt.get_unverified_header(token).get("kid")
        except jwt.InvalidTokenError as exc:
            raise BadToken(f"token refused: {exc}") from None
        key = self._keys.get(kid) or (self._keys.get(None) if kid is None else None)
        if key is None:
            self._wanted.set()  # perhaps a key the issuer just added
            known = "no keys fetched yet" if not self._keys else f"{len(self._keys)} known"
            raise BadToken(f"token refused: signing key {kid!r} is not in the JWKS ({known})")
        algorithm = key.algorithm_name
        if algorithm not in JWKS_ALGORITHMS:
            raise BadToken(f"token refused: key {kid!r} uses {algorithm}, not RS256 or ES256")
        return key, [algorithm]

    def start(self) -> None:
        """Fetch the JWKS now (in the background) and keep it fresh."""
        if self._jwks is not None and self._thread is None:
            self._thread = threading.Thread(target=self._refresh, name="jwks", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Stop refreshing."""
        self._stopping.set()
        self._wanted.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _refresh(self) -> None:
        assert self._jwks is not None
        retry_s = 1.0
        while not self._stopping.is_set():
            self._last_fetch = time.monotonic()
            try:
                found = self._jwks.get_jwk_set(refresh=True).keys
                self._keys = {key.key_id: key for key in found}  # one swap: a whole set
                self._generation += 1  # tokens are verified again against the keys as fetched
                retry_s, wait_s = 1.0, self._settings.jwks_refresh_s
            except Exception as exc:  # (a refresher that dies would leave every token refused)
                log.warning("JWKS %s: %s (again in %.0f s)", self._settings.jwks_url, exc, retry_s)
                wait_s, retry_s = retry_s, min(retry_s * 2, 60.0)
            self._wanted.clear()
            if self._wanted.wait(wait_s):  # an unknown kid: fetch soon, not more often than ...
                self._stopping.wait(self._last_fetch + MIN_REFETCH_S - time.monotonic())
