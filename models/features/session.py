"""A person's session: when it starts and ends, and their run of early skips."""

from __future__ import annotations

from dataclasses import dataclass

from models.features.weights import PLAY_KINDS, POSITIVE_KINDS, early_skip_ms

SESSION_IDLE_S = 30 * 60  # a session with no event for this long is over


@dataclass
class Session:
    """A user's current session, as far as events tell: its span, its size, and how many
    plays in a row ended in an early skip (a user about to leave)."""

    session_id: str = ""
    started_s: float = 0.0
    last_s: float = 0.0
    events: int = 0
    plays: int = 0
    skip_streak: int = 0

    @property
    def length_s(self) -> float:
        """Seconds from the session's first event to its last."""
        return self.last_s - self.started_s


def advance_session(
    s: Session,
    session_id: str,
    ts_s: float,
    kind: str,
    watch_ms: int,
    duration_ms: int | None,
) -> Session:
    """Count one event into the user's session; a new session id (or a long pause) starts
    a new one. Events arriving out of order widen the span; the streak follows arrival."""
    if session_id != s.session_id or ts_s - s.last_s > SESSION_IDLE_S:
        s = Session(session_id=session_id, started_s=ts_s, last_s=ts_s)
    s.started_s = min(s.started_s, ts_s)
    s.last_s = max(s.last_s, ts_s)
    s.events += 1
    if kind in PLAY_KINDS:
        s.plays += 1
        s.skip_streak = s.skip_streak + 1 if watch_ms < early_skip_ms(duration_ms) else 0
    elif kind in POSITIVE_KINDS:
        s.skip_streak = 0
    return s
