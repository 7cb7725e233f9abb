"""The demo simulator's phones number their events as the contract says."""

import numpy as np

from swipeloop.catalog import demo_catalog
from swipeloop.simulator import population, swipe_events


def test_a_session_numbers_its_events_from_zero_without_holes() -> None:
    """seq runs 0, 1, 2, ... per session: a hole is what `session_gaps` reads as a lost packet
    (and the training set leaves that session's impressions out)."""
    user = population(1, seed=3)[0]
    rng = np.random.default_rng(4)
    seqs = []
    for item in demo_catalog(40, seed=3):
        events, _, _ = swipe_events(user, item, "r1", rng)
        seqs += [e["seq"] for e in events]
    assert seqs == list(range(len(seqs)))
    assert len(seqs) > 40  # some videos were looped or liked as well
