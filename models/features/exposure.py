"""Staged exposure of new videos: each stage's audience decides whether the video is
shown to the next, ten times larger one.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from models.features.counts import DAY, window_counts
from models.features.rates import counter_rates
from models.features.weights import C
from swipeloop.arrays import Floats
from swipeloop.contracts import ItemFeatures

# A stage's reaction is good when its plays are finished and liked above the catalogue's prior
# (smoothed, so a handful of plays decides nothing).
EXPOSURE_STAGES: tuple[int, ...] = (200, 2_000, 20_000)  # impressions allowed per stage
PROMOTE_REACTION = 0.6  # completion rate + 5 x like rate at which a stage's audience promotes
FRESH_HOURS = 48.0  # how long an upload counts as new


def exposure_stages(day: npt.NDArray[np.float32]) -> npt.NDArray[np.int64]:
    """How far each new video has been promoted, from its last day's counters (rows of
    `COUNTERS`; 0: its first audience has not seen it yet)."""
    impressions = day[:, C["impressions"]]
    reaction = counter_rates(day, "completion") + 5.0 * counter_rates(day, "likes")
    stage = np.zeros(len(day), dtype=np.int64)
    promoted = np.ones(len(day), dtype=np.bool_)
    for cap in EXPOSURE_STAGES[:-1]:
        # a stage promotes once its audience has watched, and liked it enough
        promoted &= (impressions >= cap) & (reaction >= PROMOTE_REACTION)
        stage += promoted
    return stage


def exposure_rooms(day: npt.NDArray[np.float32]) -> Floats:
    """Impressions each new video may still get at its stage (<= 0: it waits, or is done)."""
    caps = np.asarray(EXPOSURE_STAGES, dtype=np.float64)
    return caps[exposure_stages(day)] - day[:, C["impressions"]]


def exposure_stage(features: ItemFeatures | None) -> int:
    """One video's `exposure_stages`."""
    return int(exposure_stages(window_counts(features)[None, DAY])[0])


def reaction_draws(day: npt.NDArray[np.float32], rng: np.random.Generator) -> Floats:
    """One Thompson draw per new video of how well its audience takes to it: from
    Beta(1 + completed, 1 + plays - completed), its plays' completion (loops included,
    capped at one per play) out of its plays, from its last day's counters (rows of
    `COUNTERS`). An untested video is drawn anywhere in [0, 1], one its first viewers
    finished mostly high, one they skipped mostly low: the fresh pool's order, so that
    exploration spends its slots where a new video is proving itself."""
    plays = day[:, C["plays"]].astype(np.float64)
    completed = np.clip(day[:, C["completion"]].astype(np.float64), 0.0, plays)
    draws: Floats = rng.beta(1.0 + completed, 1.0 + plays - completed)
    return draws


def exposure_room(features: ItemFeatures | None) -> float:
    """One video's `exposure_rooms`."""
    return float(exposure_rooms(window_counts(features)[None, DAY])[0])
