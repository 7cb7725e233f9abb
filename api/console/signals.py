"""What the playground shows beside a feed, read from the replica's serving state as it is:
a user's live signals (affinities, session, follows and blocks) and the catalog's facts about
the items on a page. Reads only: no route here changes the state or builds a feed."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Annotated

import msgspec
import numpy as np
from litestar import Controller, get
from litestar.datastructures import State
from litestar.params import Parameter, PathParameter

from api.codes import Interner
from api.security import admin_key
from api.services import Services
from api.state import ServingState, UserState
from models.affinity import Affinity

TOP = 12  # affinities shown per kind: the strongest either way
RECENT = 20  # stored swipes shown

RECENT_SQL = """
SELECT kind, item_id, watch_ms, client_ts
FROM events
WHERE user_id = {user:String}
ORDER BY client_ts DESC, seq DESC
LIMIT {limit:UInt32}
"""
SEARCH_SQL = """
SELECT item_id, creator_id, tags, duration_ms, created_at, deleted
FROM items FINAL
WHERE item_id = {q:String} OR creator_id = {q:String} OR has(tags, {q:String})
    OR startsWith(item_id, {q:String})
ORDER BY created_at DESC
LIMIT {limit:UInt32}
"""


class Score(msgspec.Struct, frozen=True):
    """One tag's or creator's affinity now."""

    name: str
    score: float


class SessionNow(msgspec.Struct, frozen=True):
    """The user's current session as the replica tracks it."""

    session_id: str
    length_s: float
    events: int
    plays: int
    skip_streak: int


class Swipe(msgspec.Struct, frozen=True):
    """One stored event of the user (ClickHouse's `events`)."""

    kind: str
    item_id: str
    watch_ms: int
    client_ts: datetime


class UserSignals(msgspec.Struct, frozen=True, kw_only=True):
    """What this replica knows of a user now, and their last stored swipes."""

    user_id: str
    known: bool  # false: nothing yet (a cold start)
    tags: list[Score]
    creators: list[Score]
    session: SessionNow | None
    followed: list[str]
    blocked: list[str]
    hidden_items: int
    seen: int
    positives: list[str]  # the items their vector is made of until the flow learns one
    learned_vector: bool  # the embeddings flow published one (else: the mean of positives)
    network: str
    recent: list[Swipe]


class ItemCard(msgspec.Struct, frozen=True, kw_only=True):
    """An item's catalog entry, as a card shows it."""

    item_id: str
    creator_id: str
    tags: list[str]
    duration_ms: int
    created_at: datetime
    deleted: bool = False


def strongest(affinity: Affinity, names: Interner, now_s: float, top: int = TOP) -> list[Score]:
    """The `top` keys of an affinity with the largest scores either way, highest first."""
    keys = affinity.keys()
    if not len(keys):
        return []
    scores = affinity.lookup(keys, now_s)
    chosen = np.argsort(-np.abs(scores), kind="stable")[:top]
    chosen = chosen[np.argsort(-scores[chosen], kind="stable")]
    return [
        Score(name, round(float(score), 3))
        for name, score in zip(names.names(keys[chosen]), scores[chosen], strict=True)
    ]


def signals_of(state: ServingState, user: UserState | None, user_id: str) -> UserSignals:
    """A user's live signals (an unknown user: empty ones)."""
    if user is None:
        user = UserState(user_id)
    now = time.time()
    session = user.session
    return UserSignals(
        user_id=user_id,
        known=user_id in state.users,
        tags=strongest(user.tag_affinity, state.tags, now),
        creators=strongest(user.creator_affinity, state.creators, now),
        session=SessionNow(
            session.session_id,
            round(session.length_s, 1),
            session.events,
            session.plays,
            session.skip_streak,
        )
        if session.session_id
        else None,
        followed=sorted(state.creators.name(c) for c in list(user.followed)),
        blocked=sorted(state.creators.name(c) for c in list(user.blocked_creators)),
        hidden_items=len(user.hidden_items),
        seen=len(user.seen),
        positives=[state.items.name(c) for c in list(user.positives)][::-1],
        learned_vector=user_id in state.user_vectors,
        network=user.network,
        recent=[],
    )


def _state(state: State) -> ServingState:
    services: Services = state.services
    return services.feed.state


class SignalsController(Controller):
    """GET /console/api/...: users, a user's signals, items (admin key, as /admin)."""

    path = "/console/api"
    guards = [admin_key]
    include_in_schema = False

    @get("/users")
    async def users(
        self,
        state: State,
        prefix: Annotated[str, Parameter(max_length=128)] = "",
        limit: Annotated[int, Parameter(ge=1, le=500)] = 50,
    ) -> list[str]:
        """Users this replica holds state for, by id (those starting with `prefix`)."""
        known = sorted(u for u in list(_state(state).users) if u.startswith(prefix))
        return known[:limit]

    @get("/users/{user_id:str}/signals", sync_to_thread=True)
    def signals(
        self, state: State, user_id: Annotated[str, PathParameter(min_length=1, max_length=128)]
    ) -> UserSignals:
        """The user's affinities, session, follows, blocks and hidden items as this replica
        holds them now, and their last stored swipes."""
        services: Services = state.services
        serving = services.feed.state
        live = signals_of(serving, serving.users.get(user_id), user_id)
        with services.clickhouse() as client:
            rows = client.query(RECENT_SQL, parameters={"user": user_id, "limit": RECENT})
        recent = [Swipe(str(k), str(i), int(w), t) for k, i, w, t in rows.result_rows]
        return msgspec.structs.replace(live, recent=recent)

    @get("/items")
    async def items(
        self, state: State, ids: Annotated[str, Parameter(max_length=20_000)]
    ) -> list[ItemCard]:
        """The catalog entries of these items (comma-separated; ones not in it are left out)."""
        catalog = _state(state).catalog
        found = (catalog.get(item_id) for item_id in ids.split(",")[:200])
        return [
            ItemCard(
                item_id=it.item_id,
                creator_id=it.creator_id,
                tags=it.tags,
                duration_ms=it.duration_ms,
                created_at=it.created_at,
            )
            for it in found
            if it is not None
        ]

    @get("/items/search", sync_to_thread=True)
    def search(
        self,
        state: State,
        q: Annotated[str, Parameter(min_length=1, max_length=128)],
        limit: Annotated[int, Parameter(ge=1, le=200)] = 50,
    ) -> list[ItemCard]:
        """Items in ClickHouse's catalog with this id (or id prefix), creator or tag, newest
        first, taken-down ones included (marked)."""
        services: Services = state.services
        with services.clickhouse() as client:
            rows = client.query(SEARCH_SQL, parameters={"q": q, "limit": limit})
        return [
            ItemCard(
                item_id=i, creator_id=c, tags=list(t), duration_ms=d, created_at=at, deleted=gone
            )
            for i, c, t, d, at, gone in rows.result_rows
        ]
