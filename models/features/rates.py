"""Per-play rates of counters, Bayesian-smoothed toward a prior so that three plays and one
like is not a 33 % like rate.
"""

from __future__ import annotations

from typing import TypeVar

import numpy as np
import numpy.typing as npt

from models.features.weights import C
from swipeloop.arrays import Floats
from swipeloop.contracts import Engagement

# Rates per play, smoothed toward a prior worth PRIOR_PLAYS plays.
PRIOR_PLAYS = 20.0
PRIORS = {
    "completion": 0.5,
    "early_skips": 0.3,
    "loops": 0.1,
    "likes": 0.05,
    "shares": 0.01,
    "comments": 0.01,
    "follows": 0.005,
    "not_interested": 0.01,
}
R = TypeVar("R", float, Floats)


def smoothed_rate(count: R, plays: R, prior: float, strength: float = PRIOR_PLAYS) -> R:
    """(count + prior·strength) / (plays + strength): the prior until plays outweigh it (of
    one count, or of arrays of them)."""
    return (count + prior * strength) / (plays + strength)


def rates(e: Engagement) -> dict[str, float]:
    """Smoothed per-play rates of a window's counters, and the mean watch time."""
    out = {
        f"{name}_rate": smoothed_rate(getattr(e, name), e.plays, prior)
        for name, prior in PRIORS.items()
    }
    out["watch_s_per_play"] = e.watch_ms / 1000.0 / e.plays if e.plays else 0.0
    return out


def counter_rates(counts: npt.NDArray[np.float32], name: str) -> Floats:
    """A smoothed per-play rate over rows of counters."""
    count = counts[..., C[name]].astype(np.float64)
    return smoothed_rate(count, counts[..., C["plays"]].astype(np.float64), PRIORS[name])
