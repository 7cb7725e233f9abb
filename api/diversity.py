"""The last stage of a feed: creator spread, genre shuffle and exploration slots (pure).

- No creator more than `max_per_creator` times in any `span` consecutive items (a sliding
  window, so it holds across page boundaries within a page too).
- Genres shuffled: the next item avoids the previous item's first tag when one of the next
  `lookahead` ranked items would do.
- Every `explore_every`-th slot (1 in 10 by default) is an exploration slot: an item drawn
  uniformly from the first `explore_top` of the fresh pool (new uploads still under their
  exposure cap, in the order of this second's Thompson draws of their reaction), logged with
  its propensity (1 / the number it was drawn from, given that order), so off-policy
  evaluation can reweigh it.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from functools import partial
from itertools import islice


@dataclass(frozen=True)
class Slot:
    """One placed item: its index in the ranked list (or the pool), and its propensity."""

    index: int
    explore: bool = False
    propensity: float = 1.0


def arrange(
    creators: Sequence[Hashable],
    tags: Sequence[Hashable | None],
    n: int,
    *,
    pool: Sequence[int] = (),
    explore_every: int = 10,
    explore_top: int = 5,
    max_per_creator: int = 2,
    span: int = 10,
    lookahead: int = 5,
    rng: random.Random | None = None,
) -> list[Slot]:
    """Up to n slots from ranked items (their creators and first tags, best first).

    `pool` indexes the ranked items that may fill an exploration slot (the fresh pool's, in
    its order); a drawn item leaves the ranked order. Slots that no item can fill under the
    creator rule stay empty: a page may be shorter than n, never less diverse.
    """
    rng = rng or random.Random()
    placed: list[Slot] = []
    used: set[int] = set()
    while len(placed) < n:
        recent = Counter(creators[s.index] for s in placed[max(0, len(placed) - span + 1) :])
        allowed = partial(_allowed, used, recent, creators, max_per_creator)
        if explore_every and len(placed) % explore_every == explore_every - 1:
            choices = list(islice((i for i in pool if allowed(i)), explore_top))
            if choices:
                pick = rng.choice(choices)
                placed.append(Slot(pick, explore=True, propensity=1.0 / len(choices)))
                used.add(pick)
                continue
        fits = list(islice((i for i in range(len(creators)) if allowed(i)), lookahead))
        if not fits:
            break
        previous = tags[placed[-1].index] if placed else None
        pick = next((i for i in fits if previous is None or tags[i] != previous), fits[0])
        placed.append(Slot(pick))
        used.add(pick)
    return placed


def _allowed(
    used: set[int], recent: Counter[Hashable], creators: Sequence[Hashable], most: int, i: int
) -> bool:
    """Not placed yet, and its creator has room in the window of the last items."""
    return i not in used and recent[creators[i]] < most
