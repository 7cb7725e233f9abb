"""The phone's context on an event: checked where it arrives, and completion by network type
and video length (a ranker feature)."""

import msgspec
import numpy as np
import pytest

from models.features.context import PRIOR_PLAYS, ContextCompletion, length_class
from swipeloop.contracts import EventBatch

EVENT = {
    "event_id": "6f1f5f4e-8a64-4a53-9f59-4b2f1a7f9e10",
    "user_id": "u",
    "item_id": "i",
    "kind": "watch",
    "client_ts": "2026-12-07T10:00:00+00:00",
    "session_id": "s",
    "seq": 0,
}


def test_a_context_is_optional_and_checked_field_by_field() -> None:
    plain = msgspec.json.decode(msgspec.json.encode({"events": [EVENT]}), type=EventBatch)
    assert plain.events[0].context is None
    context = {"network": "cellular", "bandwidth_kbps": 1200, "country": "DE"}
    given = {"events": [{**EVENT, "context": context}]}
    ev = msgspec.json.decode(msgspec.json.encode(given), type=EventBatch).events[0]
    assert ev.context is not None and ev.context.network == "cellular"
    assert ev.context.device_class is None
    for bad, says in (
        ({"network": "5g"}, "network"),
        ({"country": "Germany"}, "country"),
        ({"bandwidth_kbps": -1}, "bandwidth_kbps"),
        ({"screen": "big"}, "screen"),
    ):
        body = msgspec.json.encode({"events": [{**EVENT, "context": bad}]})
        with pytest.raises(
            msgspec.ValidationError,
            match=rf"\$\.events\[0\]\.context.*{says}|{says}.*\$\.events\[0\]\.context",
        ):
            msgspec.json.decode(body, type=EventBatch)


def test_completion_is_counted_per_network_and_length_class() -> None:
    assert length_class(np.array([5_000.0, 15_000.0, 45_000.0, 120_000.0, 600_000.0])).tolist() == [
        0, 1, 2, 3, 4,
    ]  # fmt: skip
    c = ContextCompletion()
    for _ in range(40):
        c.add("wifi", 300_000, 0.9)  # long videos on wifi: watched
        c.add("cellular", 300_000, 0.1)  # ... on a phone network: abandoned
    c.add("cellular", 10_000, 10.0, plays=10)  # short videos: watched to the end
    long, short = 300_000.0, 10_000.0
    wifi, cellular = c.rates("wifi", np.array([long])), c.rates("cellular", np.array([long, short]))
    assert wifi[0] > 0.7 and cellular[0] < 0.3  # (each pulled a little toward the mean)
    mean = (40 * 0.9 + 40 * 0.1 + 10) / 90
    assert cellular[1] == pytest.approx((10 + PRIOR_PLAYS * mean) / (10 + PRIOR_PLAYS))
    assert c.rates("", np.array([long])).tolist() == [0.0]  # the phone never said
    assert c.rates("ethernet", np.array([long])).tolist() == [
        pytest.approx(mean)
    ]  # no plays: the mean
