"""What the ingest tests send: events as the API stamps them, and as a phone posts them."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from swipeloop.contracts import EventKind, ReceivedEvent


def event(user: str, seq: int, kind: EventKind = "watch") -> ReceivedEvent:
    """The `seq`th event of `user`'s session, received now, on one of 50 items."""
    now = datetime.now(UTC)
    return ReceivedEvent(
        event_id=uuid.uuid4(),
        user_id=user,
        item_id=f"i{seq % 50}",
        kind=kind,
        client_ts=now,
        session_id=f"s-{user}",
        seq=seq,
        watch_ms=1200,
        received_at=now,
    )


def api_event(user: str, seq: int, **extra: Any) -> dict[str, Any]:
    """The `seq`th watch of `user`'s session as a phone posts it to /v1/events; `extra` on top."""
    return {
        "event_id": str(uuid.uuid4()),
        "user_id": user,
        "item_id": f"i{seq}",
        "kind": "watch",
        "watch_ms": 3000,
        "client_ts": datetime.now(UTC).isoformat(),
        "session_id": f"s-{user}",
        "seq": seq,
        **extra,
    }
