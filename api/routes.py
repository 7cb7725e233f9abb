"""Controllers: events and items in, feeds out, health."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Annotated, Any

import msgspec
from clickhouse_connect.driver.exceptions import DatabaseError
from litestar import Controller, Request, delete, get, post
from litestar.datastructures import State
from litestar.exceptions import NotAuthorizedException, NotFoundException, PermissionDeniedException
from litestar.params import JSONBody, Parameter, PathParameter
from litestar.response import Response
from litestar.status_codes import HTTP_202_ACCEPTED

from api.errors import BrokerDown, StoreDown, TooLarge, documented
from api.experiments import assign
from api.feed import build_feed
from api.policies import Policy, baseline_feed
from api.security import (
    ADMIN,
    APP,
    USER,
    Keys,
    acting_for,
    admin_key,
    app_key,
    caller_of,
    user_token,
)
from api.services import Services
from swipeloop import erasure, topics
from swipeloop.clickhouse import connect, transient
from swipeloop.contracts import (
    Erasure,
    EventBatch,
    Feed,
    ItemBatch,
    Network,
    Stamper,
    topic_for,
)
from swipeloop.kafka import BrokerUnavailable


class Accepted(msgspec.Struct, frozen=True):
    """How many messages the broker now holds for this request."""

    accepted: int


def _services(state: State) -> Services:
    services: Services = state.services
    return services


def _within_limit(count: int, what: str, services: Services) -> None:
    limit = services.settings.max_batch_events
    if count > limit:
        raise TooLarge(f"batch of {count} {what} exceeds the limit of {limit}")


async def _deliver(services: Services, messages: list[tuple[str, bytes, bytes]]) -> None:
    """Produce every message and wait until the broker acknowledged all of them."""
    try:
        async with asyncio.timeout(services.settings.ack_timeout_s):  # no extra task per call
            await services.producer.produce_all(messages)
    except (TimeoutError, BrokerUnavailable, BufferError) as exc:
        raise BrokerDown(f"broker did not acknowledge: {str(exc) or 'timeout'}") from exc


_INGEST_ERRORS = documented(400, 401, 403, 413, 422, 429, 503)


class EventsController(Controller):
    """Phones report swipes; a batch is accepted whole or rejected whole."""

    path = "/v1"
    tags = ["ingest"]
    guards = [user_token]
    security = USER

    @post("/events", status_code=HTTP_202_ACCEPTED, responses=_INGEST_ERRORS)
    async def post_events(
        self, data: JSONBody[EventBatch], state: State, request: Request[Any, Any, Any]
    ) -> Accepted:
        """Accept a batch of events once the broker has every one (acks=all). With a user
        token, every event must be the token's user's (403 otherwise, and none is kept)."""
        services = _services(state)
        _within_limit(len(data.events), "events", services)
        caller = caller_of(request)
        if caller.subject is not None:  # a token: every event must be its user's (one pass)
            users = [ev.user_id for ev in data.events]
            if users.count(caller.subject) != len(users):
                at = next(at for at, user in enumerate(users) if user != caller.subject)
                acting_for(caller, users[at], f"$.events[{at}].user_id")
        stamper = Stamper(datetime.now(UTC))
        messages = [
            (topic_for(ev.kind), ev.user_id.encode(), stamper.json(ev)) for ev in data.events
        ]
        await _deliver(services, messages)
        return Accepted(len(messages))


class ItemsController(Controller):
    """The upload service registers videos (a server: app or admin keys, never a user token)."""

    path = "/v1"
    tags = ["ingest"]
    guards = [app_key]
    security = APP

    @post("/items", status_code=HTTP_202_ACCEPTED, responses=_INGEST_ERRORS)
    async def post_items(self, data: JSONBody[ItemBatch], state: State) -> Accepted:
        """Register uploads (or new versions of them) in the catalog."""
        services = _services(state)
        _within_limit(len(data.items), "items", services)
        await _deliver(
            services,
            [(topics.ITEMS, it.item_id.encode(), msgspec.json.encode(it)) for it in data.items],
        )
        return Accepted(len(data.items))


class FeedController(Controller):
    """The next page of videos for a user."""

    path = "/v1"
    tags = ["feed"]
    guards = [user_token]
    security = USER

    @get("/feed", sync_to_thread=True, responses=documented(401, 403, 422, 429))
    def get_feed(
        self,
        state: State,
        request: Request[Any, Any, Any],
        user_id: Annotated[str, Parameter(min_length=1, max_length=128)],
        n: Annotated[int | None, Parameter(ge=1, le=100)] = None,
        explain: Annotated[bool, Parameter(description="what each stage did")] = False,
        policy: Annotated[
            Policy | None,
            Parameter(
                description="the real-time feed or a baseline to compare (default: the arm of "
                "the running experiment, else realtime)"
            ),
        ] = None,
        network: Annotated[
            Network | None,
            Parameter(
                description="the phone's network now (default: the last one its events "
                "reported); the ranker weighs video length by how people watch on it"
            ),
        ] = None,
    ) -> Response[Feed]:
        """Up to n unseen items, ranked; every one is logged as an impression. With
        `explain=true`, what each stage did and why each item is there. `policy` serves a
        baseline instead (api.policies): batch, popularity or random; without it, a running
        experiment (api.experiments) picks the user's arm, and the impressions say which.
        `network` is the phone's context at the request. With a user token, only the
        token's user's feed (403 otherwise)."""
        acting_for(caller_of(request), user_id, "user_id")
        services = _services(state)
        serving = services.feed
        experiment = serving.experiments.current if policy is None else None
        if experiment is not None:
            policy = assign(experiment.name, user_id, experiment.arms)
        policy = policy or "realtime"
        started = time.perf_counter()
        with serving.slots:
            waited_ms = (time.perf_counter() - started) * 1000
            size = n or services.settings.feed_default_n
            if policy == "realtime":
                feed, impressions, stages = build_feed(
                    serving.state,
                    serving.models.ranker_for(user_id),
                    user_id,
                    size,
                    explain,
                    network=network,
                )
            else:
                feed, impressions = baseline_feed(
                    serving.state, serving.baselines, serving.models.current, user_id, size, policy
                )
                stages = {}
        if experiment is not None:
            impressions = [
                msgspec.structs.replace(i, experiment=experiment.name, arm=policy)
                for i in impressions
            ]
        services.feed.impressions.produce_nowait(
            topics.IMPRESSIONS, user_id.encode(), [msgspec.json.encode(i) for i in impressions]
        )
        spent_ms = (time.perf_counter() - started) * 1000
        timing = ", ".join(
            [
                f"feed;dur={spent_ms:.2f}",
                f"wait;dur={waited_ms:.2f}",  # for a slot (`SWIPELOOP_FEED_CONCURRENCY`)
                *(f"{k};dur={v:.2f}" for k, v in stages.items()),
            ]
        )
        return Response(feed, headers={"Server-Timing": timing})


class ModerationController(Controller):
    """Admin routes of the public API: take-downs and erasures (feed side: they need the
    catalog and ClickHouse)."""

    path = "/v1"
    tags = ["admin"]
    guards = [admin_key]
    security = ADMIN

    @delete(
        "/items/{item_id:str}",
        status_code=HTTP_202_ACCEPTED,
        responses=documented(401, 403, 404, 422, 429, 503),
    )
    async def delete_item(
        self, item_id: Annotated[str, PathParameter(min_length=1, max_length=128)], state: State
    ) -> Accepted:
        """Take a video down: its last version goes out again marked deleted, and every cache
        that follows the catalog drops it (feeds, features, the vector index, the embeddings
        flow). Needs the feed side's catalog (404 on an ingest-only API)."""
        services = _services(state)
        item = services.serving.state.catalog.get(item_id) if services.serving else None
        if item is None:
            raise NotFoundException(f"item {item_id!r} is not in this API's catalog")
        gone = msgspec.structs.replace(item, deleted=True)
        await _deliver(services, [(topics.ITEMS, item_id.encode(), msgspec.json.encode(gone))])
        return Accepted(1)

    @delete(
        "/users/{user_id:str}",
        status_code=HTTP_202_ACCEPTED,
        responses=documented(401, 403, 422, 429, 503),
    )
    async def erase_user(
        self, user_id: Annotated[str, PathParameter(min_length=1, max_length=128)], state: State
    ) -> Erasure:
        """Forget a user: their events, impressions, features, vector and dead letters leave
        ClickHouse now; flows and feed replicas drop what they hold within seconds; events
        that still carry the id are dropped from then on."""
        return await _erase(_services(state), user_id)


class UsersController(Controller):
    """What a person may do about themselves with their token."""

    path = "/v1"
    tags = ["users"]
    guards = [user_token]
    security = USER

    @delete("/users/me", status_code=HTTP_202_ACCEPTED, responses=documented(401, 403, 429, 503))
    async def erase_me(self, state: State, request: Request[Any, Any, Any]) -> Erasure:
        """Erase the token's user, as DELETE /v1/users/{user_id} does for an admin. Needs a
        user token: a key names no person."""
        caller = caller_of(request)
        if caller.subject is None:
            message = "this route erases the token's user: Authorization: Bearer <user token>"
            raise (
                PermissionDeniedException(message)
                if caller.roles
                else NotAuthorizedException(message)
            )
        return await _erase(_services(state), caller.subject)


async def _erase(services: Services, user_id: str) -> Erasure:
    now = datetime.now(UTC)

    def forget() -> int:
        settings = services.settings
        removed = erasure.erase(connect(settings), user_id, now, settings.clickhouse_cluster)
        services.feed.state.follow_erasures()  # this replica at once, the others follow
        return removed

    try:
        removed = await asyncio.to_thread(forget)
    except DatabaseError as exc:
        if not transient(exc):  # a refused statement is a bug: a 500, not a 503
            raise
        raise StoreDown(f"ClickHouse did not answer: {exc}") from exc
    return Erasure(user_id=user_id, erased_at=now, rows_deleted=removed)


class HealthController(Controller):
    """Liveness (the process answers) and readiness (its dependencies answer)."""

    path = "/health"
    tags = ["health"]

    @get("/live")
    async def live(self) -> dict[str, str]:
        """The process is up."""
        return {"status": "ok"}

    @get("/ready", sync_to_thread=True)
    def ready(self, state: State) -> Response[dict[str, Any]]:
        """200 when broker, ClickHouse and the flows answer; 503 with what is missing. A feed
        API adds how many items its catalog holds (none on a fresh install: still ready), which
        vector index answers and any build of a larger one in progress."""
        services = _services(state)
        checks = services.readiness()
        keys: Keys = state["keys"]
        if keys.tokens.on:  # a JWKS issuer's keys fetched (a shared secret is always ready)
            checks["tokens"] = keys.tokens.ready()
        ok = all(checks.values())
        body: dict[str, Any] = {"ready": ok, "checks": checks}
        if services.serving:
            body["catalog_items"] = len(services.serving.state.catalog)
            body["index"] = services.serving.state.index.describe()
        return Response(body, status_code=200 if ok else 503)
