"""Splitting users between arms by a hash: sticky without remembering anything, and afresh for
every new key (an experiment's name, a canary's version)."""

from __future__ import annotations

import hashlib

BUCKETS = 100  # shares are in percent


def bucket(key: str, user_id: str) -> int:
    """The user's bucket for `key`, 0-99: the same on every replica, for ever."""
    digest = hashlib.blake2b(f"{key}\0{user_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % BUCKETS
