import uuid

import msgspec
import pytest

from swipeloop.contracts import EventBatch, Item, topic_for


def event(**overrides: object) -> dict[str, object]:
    base: dict[str, object] = {
        "event_id": str(uuid.uuid4()),
        "user_id": "u1",
        "item_id": "v1",
        "kind": "watch",
        "client_ts": "2026-11-28T10:00:00Z",
        "session_id": "s1",
        "seq": 3,
        "watch_ms": 4200,
    }
    base.update(overrides)
    return base


def decode(events: list[dict[str, object]]) -> EventBatch:
    return msgspec.json.decode(msgspec.json.encode({"events": events}), type=EventBatch)


def test_valid_batch_decodes() -> None:
    batch = decode([event(), event(kind="like", request_id="r1")])
    assert [e.kind for e in batch.events] == ["watch", "like"]
    assert batch.events[1].request_id == "r1"
    assert batch.events[0].client_ts.tzinfo is not None


@pytest.mark.parametrize(
    ("bad", "where"),
    [
        ({"kind": "teleport"}, "$.events[1].kind"),
        ({"watch_ms": -1}, "$.events[1].watch_ms"),
        ({"user_id": 42}, "$.events[1].user_id"),
        ({"client_ts": "2026-11-28T10:00:00"}, "$.events[1].client_ts"),
        ({"event_id": "not-a-uuid"}, "$.events[1].event_id"),
        ({"surprise": 1}, "$.events[1]"),
    ],
)
def test_invalid_field_names_field_and_index(bad: dict[str, object], where: str) -> None:
    with pytest.raises(msgspec.ValidationError) as exc:
        decode([event(), event(**bad)])
    assert where in str(exc.value)


def test_missing_field_is_named() -> None:
    broken = event()
    del broken["session_id"]
    with pytest.raises(msgspec.ValidationError, match=r"session_id.*\$\.events\[0\]"):
        decode([broken])


def test_actions_and_context_go_to_their_own_topics() -> None:
    assert topic_for("like") == "events.actions"
    assert topic_for("block") == "events.actions"
    assert topic_for("watch") == "events.context"
    assert topic_for("impression") == "events.context"


def test_item_requires_positive_duration() -> None:
    raw = b'{"item_id":"v1","creator_id":"c1","duration_ms":0,"created_at":"2026-01-01T00:00:00Z"}'
    with pytest.raises(msgspec.ValidationError, match="duration_ms"):
        msgspec.json.decode(raw, type=Item)
