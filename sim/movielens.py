"""Offline replay of a ratings file (pure): the MovieLens `ratings.csv` format read and checked,
ratings mapped to swipes, a leave-last-out split, next-item metrics, and two baselines.

read        userId,movieId,rating,timestamp (a header, then one rating per line; errors name
            the line)
split       per user, the last rating by time (ties: the larger item id) is held out; the
            rest is replayed. Users with a single rating are replayed and not scored. Or each
            user's history cut at 80 %: what precedes the cut replayed, the rating at it
            held out, the rest unused
swipes      what a phone would have sent for a rating (`SWIPES`)
metrics     HR@k (the held-out item is in the top k) and NDCG@k (1 / log2(rank + 2))
baselines   popularity (most rated in the replayed part), item-kNN (cosine similarity of
            items' raters, summed over the user's replayed items) and recency-weighted item-kNN
            (the same, over the user's last 20 items weighted 0.9^age), seen items left out
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.csv as pacsv
from scipy import sparse

from models.rows import run_starts
from swipeloop.arrays import Ints

COLUMNS = ("userId", "movieId", "rating", "timestamp")
REPLAY_DURATION_MS = 60_000  # every replayed item is a 60 s video

# What a rating says, as the swipes a phone sends (kind, share of the video watched); the
# watch or skip comes first, so a like follows a full watch as it would on a phone.
SWIPES: tuple[tuple[float, tuple[tuple[str, float], ...]], ...] = (
    (4.0, (("watch", 1.0), ("like", 0.0))),  # 4-5: watched to the end and liked
    (3.0, (("watch", 0.6),)),  # 3-3.5: watched most of it
    (2.0, (("skip", 0.2),)),  # 2-2.5: skipped after a while
    (0.0, (("skip", 0.01),)),  # 0.5-1.5: an early skip (0.6 s of 60)
)


class RatingsError(ValueError):
    """A ratings file that is not in the expected format; the message says where."""


@dataclass(frozen=True)
class Ratings:
    """One row per rating; ids as given (ints), time in seconds."""

    users: Ints
    items: Ints
    ratings: npt.NDArray[np.float64]
    ts: Ints

    def __len__(self) -> int:
        return len(self.users)

    def take(self, rows: Ints | npt.NDArray[np.bool_]) -> Ratings:
        """The ratings at these rows (indices or a mask)."""
        return Ratings(self.users[rows], self.items[rows], self.ratings[rows], self.ts[rows])


def read_ratings(path: Path) -> Ratings:
    """A ratings file, checked: the four columns, integer ids, ratings in [0.5, 5]."""
    try:
        table = pacsv.read_csv(
            path,
            convert_options=pacsv.ConvertOptions(
                column_types={
                    "userId": pa.int64(),
                    "movieId": pa.int64(),
                    "rating": pa.float64(),
                    "timestamp": pa.int64(),
                },
                include_columns=list(COLUMNS),
            ),
        )
    except (pa.ArrowInvalid, KeyError) as exc:
        raise RatingsError(f"{path}: {exc} (expected a header {','.join(COLUMNS)})") from exc
    users, items, ratings, ts = (table.column(c) for c in COLUMNS)
    if any(c.null_count for c in (users, items, ratings, ts)):
        raise RatingsError(f"{path}: empty fields; every line needs {','.join(COLUMNS)}")
    out = Ratings(
        users.to_numpy(), items.to_numpy(), ratings.to_numpy(), ts.to_numpy().astype(np.int64)
    )
    bad = np.flatnonzero((out.ratings < 0.5) | (out.ratings > 5.0))
    if len(bad):
        line = int(bad[0]) + 2  # the header is line 1
        raise RatingsError(f"{path}, line {line}: rating {out.ratings[bad[0]]} is not in 0.5-5")
    if not len(out):
        raise RatingsError(f"{path}: no ratings")
    return out


def swipes(rating: float) -> tuple[tuple[str, float], ...]:
    """The swipes a rating maps to (`SWIPES`)."""
    for lowest, sent in SWIPES:
        if rating >= lowest:
            return sent
    raise ValueError(f"rating {rating} below every band")


def time_order(r: Ratings) -> Ints:
    """Rows in replay order: by time, then user, then item (deterministic)."""
    return np.lexsort((r.items, r.users, r.ts))


def leave_last_out(r: Ratings) -> tuple[Ratings, dict[int, int]]:
    """The ratings to replay, and each scored user's held-out item: their last by time, the
    larger item id first among ties."""
    order = np.lexsort((r.items, r.ts, r.users))  # per user, oldest first
    firsts = run_starts(r.users[order])
    lasts = np.r_[firsts[1:], len(order)] - 1
    held = order[lasts[lasts > firsts]]  # users with a single rating keep it
    keep = np.ones(len(r), dtype=np.bool_)
    keep[held] = False
    return r.take(keep), {int(r.users[i]): int(r.items[i]) for i in held}


def history_split(r: Ratings, share: float = 0.8) -> tuple[Ratings, dict[int, int]]:
    """Each user's history cut at `share`: the ratings before the cut replayed, the one at it
    held out (its position: `share` of the user's count, rounded down; ties by time as in
    `leave_last_out`), the later ones not used. A user with a single rating is replayed and
    not scored."""
    order = np.lexsort((r.items, r.ts, r.users))  # per user, oldest first
    firsts = run_starts(r.users[order])
    counts = np.diff(np.r_[firsts, len(order)])
    cut = firsts + np.maximum((counts * share).astype(np.int64), 1)
    scored = counts > 1
    position = np.arange(len(order)) - np.repeat(firsts, counts)
    keep = np.zeros(len(r), dtype=np.bool_)
    keep[order[position < np.repeat(np.where(scored, cut - firsts, counts), counts)]] = True
    held = order[cut[scored]]
    return r.take(keep), {int(r.users[i]): int(r.items[i]) for i in held}


def hit_rate_and_ndcg(
    recommended: Mapping[int, Sequence[int]], held: Mapping[int, int], k: int = 10
) -> dict[str, float]:
    """HR@k and NDCG@k over the scored users (a user without a list scores 0)."""
    hits, gains = 0, 0.0
    for user, item in held.items():
        top = list(recommended.get(user, ()))[:k]
        if item in top:
            hits += 1
            gains += 1.0 / math.log2(top.index(item) + 2)
    n = max(len(held), 1)
    return {"hr_at_10" if k == 10 else f"hr_at_{k}": hits / n, f"ndcg_at_{k}": gains / n}


def _matrix(train: Ratings) -> tuple[sparse.csr_matrix, Ints, Ints]:
    """The users x items matrix of who rated what (1 per rating), with the id of each row
    and column."""
    user_ids, rows = np.unique(train.users, return_inverse=True)
    item_ids, cols = np.unique(train.items, return_inverse=True)
    data = np.ones(len(train), dtype=np.float64)
    shape = (len(user_ids), len(item_ids))
    x = sparse.csr_matrix((data, (rows, cols)), shape=shape)
    x.data[:] = 1.0  # a user who rated an item twice rated it
    return x, user_ids, item_ids


def _top_unseen(scores: npt.NDArray[np.float64], seen: sparse.csr_matrix, k: int) -> Ints:
    """Per row, the k best columns the row has not seen (ties: the smaller column)."""
    scores = scores.copy()
    scores[seen.nonzero()] = -np.inf
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.asarray(order, dtype=np.int64)


def popularity(train: Ratings, users: Sequence[int], k: int = 10) -> dict[int, list[int]]:
    """The k items rated most often in `train` that each user has not rated."""
    x, user_ids, item_ids = _matrix(train)
    counts = np.asarray(x.sum(axis=0)).ravel()
    rows = np.searchsorted(user_ids, users)
    scores = np.tile(counts, (len(users), 1))
    top = _top_unseen(scores, x[rows], k)
    return {int(u): item_ids[t].tolist() for u, t in zip(users, top, strict=True)}


def item_knn(train: Ratings, users: Sequence[int], k: int = 10) -> dict[int, list[int]]:
    """Item-based kNN over all neighbours: an item scores the sum of its cosine similarities
    (of the sets of users who rated them) to the items the user rated.

    scores = x_u · D^-1/2 XᵀX D^-1/2 = (y_u Xᵀ) Y with Y = X D^-1/2 (D: each item's raters),
    a users x users product instead of the items x items similarity matrix.
    """
    x, user_ids, item_ids = _matrix(train)
    norms = np.sqrt(np.asarray(x.sum(axis=0)).ravel())
    y = x @ sparse.diags(1.0 / np.maximum(norms, 1e-12))
    rows = np.searchsorted(user_ids, users)
    overlap = y[rows] @ x.T  # (users, all users)
    scores = np.asarray((overlap @ y).todense())
    top = _top_unseen(scores, x[rows], k)
    return {int(u): item_ids[t].tolist() for u, t in zip(users, top, strict=True)}


def recent_item_knn(
    train: Ratings, users: Sequence[int], k: int = 10, last: int = 20, decay: float = 0.9
) -> dict[int, list[int]]:
    """Item-kNN from each user's `last` items, weighted by recency: the first thing a
    recommender engineer tries on a next-item task. An item scores the sum, over the user's
    last `last` training items, of decay^age (age 0: the most recent) times their cosine
    similarity (binary co-occurrence: the sets of users who rated each); items the user rated
    are excluded. The same product as `item_knn`, with the user's row weighted."""
    x, user_ids, item_ids = _matrix(train)
    norms = np.sqrt(np.asarray(x.sum(axis=0)).ravel())
    inverse = 1.0 / np.maximum(norms, 1e-12)
    y = x @ sparse.diags(inverse)
    order = np.lexsort((train.items, train.ts, train.users))  # per user, oldest first
    rows_of = np.searchsorted(user_ids, train.users[order])
    cols_of = np.searchsorted(item_ids, train.items[order])
    starts = run_starts(rows_of)
    ends = np.repeat(np.r_[starts[1:], len(order)], np.diff(np.r_[starts, len(order)]))
    age = ends - 1 - np.arange(len(order))  # 0: the user's most recent rating
    # the user's last `last`, newest first: an item rated twice counts once, at its newest
    picked = np.flatnonzero(age < last)[::-1]
    r, c, a = rows_of[picked], cols_of[picked], age[picked]
    _, first = np.unique(r * len(item_ids) + c, return_index=True)
    weights = sparse.csr_matrix((decay ** a[first], (r[first], c[first])), shape=x.shape)
    rows = np.searchsorted(user_ids, users)
    w = weights[rows] @ sparse.diags(inverse)
    scores = np.asarray(((w @ x.T) @ y).todense())
    top = _top_unseen(scores, x[rows], k)
    return {int(u): item_ids[t].tolist() for u, t in zip(users, top, strict=True)}
