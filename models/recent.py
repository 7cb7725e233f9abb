"""What a learner keeps of the recent stream (pure): the impressions it draws negatives from,
and new users' first sessions, which stand in for their vectors until they have their own."""

from __future__ import annotations

import numpy as np


class Reservoir:
    """The most recent `size` impressions (item ids), to draw negatives from."""

    def __init__(self, size: int) -> None:
        self.keys = np.empty(size, dtype=object)
        self.size = 0
        self.at = 0

    def remember(self, shown: list[str]) -> None:
        capacity = len(self.keys)
        for start in range(0, len(shown), capacity):
            chunk = shown[start : start + capacity]
            at = (self.at + np.arange(len(chunk))) % capacity
            self.keys[at] = chunk
            self.at = int((self.at + len(chunk)) % capacity)
            self.size = min(capacity, self.size + len(chunk))

    def draw(self, rng: np.random.Generator, n: int) -> list[str]:
        return list(self.keys[rng.integers(0, self.size, size=n)].tolist())

    @property
    def nbytes(self) -> int:
        return int(self.keys.nbytes)


class Sessions:
    """New users' first sessions: the items they liked (at most `limit` each), least recent
    user first, at most `users` of them; and which changed since `take_changed`."""

    def __init__(self, limit: int, users: int) -> None:
        self.limit, self.users = limit, users
        self.items: dict[str, list[str]] = {}
        self.changed: set[str] = set()

    def like(self, user: str, item: str) -> None:
        session = self.items.pop(user, [])
        if len(session) < self.limit and item not in session:
            session.append(item)
        self.items[user] = session  # most recent last
        self.changed.add(user)
        while len(self.items) > self.users:
            oldest = next(iter(self.items))
            del self.items[oldest]
            self.changed.discard(oldest)

    def pop(self, user: str) -> list[str] | None:
        self.changed.discard(user)
        return self.items.pop(user, None)

    def take_changed(self) -> list[tuple[str, list[str]]]:
        out = [(user, self.items.get(user, [])) for user in self.changed]
        self.changed = set()
        return out
