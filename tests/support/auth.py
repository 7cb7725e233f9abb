"""What a test sends to prove who it is."""

from __future__ import annotations


def bearer(credential: str) -> dict[str, str]:
    """The Authorization header for a key or a token."""
    return {"Authorization": f"Bearer {credential}"}


# Tokens on, as a test stack sets them (HS256: the tests mint with swipeloop.tokens.mint).
TOKENS = {
    "jwt_secret": "a-test-secret-of-32-bytes-or-more!!",
    "jwt_issuer": "https://login.test",
    "jwt_audience": "swipeloop",
}
