"""Names for keyed state that land on chosen workers.

Bytewax places a key's state on worker `h % workers`, where h is Rust's default hash of the
key (SipHash-1-3 with zero keys over its UTF-8 bytes and a 0xFF terminator; checked against
Bytewax 0.21 in the unit tests). Keys named "0".."7" land 6 and 2 on two workers; a flow that
runs one shard per worker names its shards here instead, so each worker holds one.
"""

from __future__ import annotations

_MASK = (1 << 64) - 1


def _rotl(x: int, b: int) -> int:
    return ((x << b) | (x >> (64 - b))) & _MASK


def _round(v0: int, v1: int, v2: int, v3: int) -> tuple[int, int, int, int]:
    v0 = (v0 + v1) & _MASK
    v1 = _rotl(v1, 13) ^ v0
    v0 = _rotl(v0, 32)
    v2 = (v2 + v3) & _MASK
    v3 = _rotl(v3, 16) ^ v2
    v0 = (v0 + v3) & _MASK
    v3 = _rotl(v3, 21) ^ v0
    v2 = (v2 + v1) & _MASK
    v1 = _rotl(v1, 17) ^ v2
    v2 = _rotl(v2, 32)
    return v0, v1, v2, v3


def siphash13(data: bytes) -> int:
    """SipHash-1-3 with the key (0, 0): Rust's `DefaultHasher`."""
    v0, v1, v2, v3 = 0x736F6D6570736575, 0x646F72616E646F6D, 0x6C7967656E657261, 0x7465646279746573
    whole = len(data) - len(data) % 8
    for at in range(0, whole, 8):
        m = int.from_bytes(data[at : at + 8], "little")
        v3 ^= m
        v0, v1, v2, v3 = _round(v0, v1, v2, v3)
        v0 ^= m
    last = ((len(data) & 0xFF) << 56) | int.from_bytes(data[whole:], "little")
    v3 ^= last
    v0, v1, v2, v3 = _round(v0, v1, v2, v3)
    v0 ^= last
    v2 ^= 0xFF
    for _ in range(3):
        v0, v1, v2, v3 = _round(v0, v1, v2, v3)
    return v0 ^ v1 ^ v2 ^ v3


def worker_of(key: str, workers: int) -> int:
    """The worker Bytewax keeps `key`'s state on."""
    return siphash13(key.encode() + b"\xff") % workers


def shard_keys(prefix: str, shards: int, workers: int) -> list[str]:
    """A key per shard, shard i's on worker i % `workers` (`prefix`-i, salted if need be)."""
    keys = []
    for shard in range(shards):
        salt = 0
        key = f"{prefix}-{shard}"
        while worker_of(key, workers) != shard % workers:
            salt += 1
            key = f"{prefix}-{shard}.{salt}"
        keys.append(key)
    return keys
