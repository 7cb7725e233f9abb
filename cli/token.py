"""`swipeloop token USER_ID`: a user's token, signed with SWIPELOOP_JWT_SECRET.

The app's own login service issues tokens in production; this command is for trying tokens
out, for scripts and for tests (a JWKS issuer's tokens cannot be made here: its private keys
stay with it).
"""

from __future__ import annotations

from typing import Annotated

import typer

from cli.shared import env_settings


def token(
    user_id: Annotated[str, typer.Argument(help="the user the token speaks for (its subject)")],
    ttl: Annotated[int, typer.Option(min=1, help="seconds until it expires")] = 3600,
) -> None:
    """Print a JWT for USER_ID (HS256, with SWIPELOOP_JWT_ISSUER and SWIPELOOP_JWT_AUDIENCE):
    send it as `Authorization: Bearer <token>` to post that user's events, read their feed,
    or erase them (DELETE /v1/users/me)."""
    from swipeloop.tokens import mint

    print(mint(env_settings(), user_id, ttl_s=ttl))
