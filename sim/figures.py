"""What `simulate` and `replay` measure, as structs: what they print and what `report` reads.

A simulation's JSON also carries some figures flat, under the names the issue asked for
(`realtime_watch_s_per_session`, `new_upload_minutes_to_1000_views`, ...): `Summary.flat`
writes that layout and `Summary.from_flat` reads it back, so `report` takes what `simulate
--out` (or bench/simulate.py --out) wrote.
"""

from __future__ import annotations

from typing import Any

import msgspec


class ArmFigures(msgspec.Struct, frozen=True):
    """What one policy arm's people did (None: nothing to divide by)."""

    sessions: int
    watch_s_per_session: float | None
    burst_watch_s_per_session: float | None  # sessions during a burst
    like_rate: float | None
    early_skip_rate: float | None
    coverage: float | None  # share of the catalogue shown at least once
    creator_gini: float  # inequality of impressions across creators


class Reach(msgspec.Struct, frozen=True):
    """How fast each arm's gem uploads reached `views` views."""

    views: int
    minutes: dict[str, float | None]  # per arm: median minutes from upload (None: none did)
    gems: dict[str, int]  # per arm: gems that got there


class UploadViews(msgspec.Struct, frozen=True):
    """Mean views per new upload: the gems, and the others."""

    gem: float | None
    other: float | None


class BurstSpan(msgspec.Struct, frozen=True):
    """A burst as the report shades it."""

    topic: str
    start_s: float
    end_s: float
    lift: float


class Summary(msgspec.Struct, frozen=True, kw_only=True):
    """A simulation's figures: per arm, and the comparisons between arms."""

    arms: dict[str, ArmFigures]
    errors: int
    catalog: int
    lift_vs_batch: float | None  # real time over batch in watch seconds during bursts
    adaptation_lag_s: dict[str, float | None]
    gem_uploads: int
    reach: list[Reach]  # one per number of views timed
    people_per_arm: int
    views_per_upload: dict[str, UploadViews]
    measured_s: float
    bursts: list[BurstSpan]
    timeline: dict[str, list[list[float]]]  # per arm: [bucket s, impressions, topical, watch s]
    gem_views_by_minute: dict[str, list[int]]

    def flat(self) -> dict[str, Any]:
        """The figures as `simulate` prints them: after `catalog` each arm's watch seconds
        per session, and in place of `reach` the minutes and gem counts per number of views."""
        fields: dict[str, Any] = msgspec.to_builtins(self)
        out: dict[str, Any] = {}
        for name, value in fields.items():
            if name == "reach":
                for r in value:
                    out[f"new_upload_minutes_to_{r['views']}_views"] = r["minutes"]
                    out[f"gems_reaching_{r['views']}_views"] = r["gems"]
                continue
            out[name] = value
            if name == "catalog":
                for arm, figures in fields["arms"].items():
                    out[f"{arm}_watch_s_per_session"] = figures["watch_s_per_session"]
        return out

    @classmethod
    def from_flat(cls, figures: object) -> Summary:
        """`flat`'s layout read back; msgspec.ValidationError when it is not one. Takes
        bench/simulate.py's too, which keeps every arm's minutes to N views at `by_arm_` +
        the key and the real-time arm's alone at the key."""
        if not isinstance(figures, dict):
            raise msgspec.ValidationError(f"Expected `object`, got `{type(figures).__name__}`")
        reach = []
        for key in figures:
            n = key.removeprefix("gems_reaching_").removesuffix("_views")
            if key.startswith("gems_reaching_") and n.isdigit():
                minutes = f"new_upload_minutes_to_{n}_views"
                by_arm = figures.get(f"by_arm_{minutes}", figures.get(minutes))
                reach.append({"views": int(n), "minutes": by_arm, "gems": figures[key]})
        return msgspec.convert({**figures, "reach": reach}, cls)


class HitRate(msgspec.Struct, frozen=True):
    """Next-item prediction by one ranker: HR@10 and NDCG@10 of the held-out items."""

    hr_at_10: float
    ndcg_at_10: float


class Validation(msgspec.Struct, frozen=True):
    """What the replay chose on its validation split, never looking at the test."""

    users: int  # scored on their validation item
    covisit_weight: float  # the pre-rank weight chosen
    weights: dict[str, HitRate]  # each weight tried, on the validation items
    covisit: dict[str, float]  # the co-visitation constants (sim.tuning)
    covisit_alone: HitRate | None  # what those found alone on the validation items


class ReplayFigures(msgspec.Struct, frozen=True, kw_only=True):
    """A replay's size, its timings, and how swipeloop and the baselines predicted."""

    ratings: int
    users: int  # scored: each user's last rating is held out
    events: int
    replay_s: float
    catch_up_s: float
    swipeloop: HitRate
    popularity: HitRate
    item_knn: HitRate
    hr_at_10: float  # swipeloop's, again at the top
    ndcg_at_10: float
    # item-kNN from each user's last 20 items weighted 0.9^age (issue 27's baseline); None in
    # a file written before it was added
    recent_item_knn: HitRate | None = None
    validation: Validation | None = None  # None in a file written before it was added
