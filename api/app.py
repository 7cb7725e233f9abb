"""create_app(settings): the Litestar application."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Literal

from litestar import Litestar
from litestar.datastructures import State
from litestar.logging import LoggingConfig
from litestar.openapi import OpenAPIConfig
from litestar.plugins.prometheus import PrometheusConfig, PrometheusController

from api.admin import AdminController
from api.console import Console
from api.errors import HANDLERS, QUIET, one_value_each
from api.openapi import StrictStructs
from api.routes import (
    EventsController,
    FeedController,
    HealthController,
    ItemsController,
    ModerationController,
    UsersController,
)
from api.security import COMPONENTS, Keys, admin_key, cors, rate_limit
from api.services import Services
from swipeloop.settings import Settings

Role = Literal["all", "ingest", "feed"]
ROLES: tuple[Role, ...] = ("all", "ingest", "feed")


class MetricsController(PrometheusController):
    """/metrics, for admin keys (or loopback callers when none is configured)."""

    guards = [admin_key]
    include_in_schema = False


def create_app(
    settings: Settings,
    extra_checks: Callable[[], dict[str, bool]] | None = None,
    role: Role = "all",
) -> Litestar:
    """The API, wired to the settings' broker, ClickHouse and model registry.

    `role` picks the routes: "ingest" (events and items in; stateless), "feed" (feeds out;
    follows the topics; with the admin routes and the console), or "all".
    """

    keys = Keys(settings)

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        keys.tokens.start()  # (JWKS keys, fetched in the background)
        services = Services(settings, extra_checks, serve_feed=role != "ingest")
        services.start()
        app.state.services = services
        # Everything built so far lives as long as the process: out of the collector's sight,
        # a full collection no longer walks it (it took 150-250 ms under load: the p99 tail).
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            services.stop()
            keys.tokens.stop()

    # requests and their latency per route (the path template, not the path), and at
    # /metrics everything this process's default registry holds: the feed's stage latencies,
    # candidates per source, drops per reason, the model serving (swipeloop.metrics)
    prometheus = PrometheusConfig(
        app_name="swipeloop", prefix="swipeloop_api", group_path=True, exclude=["/metrics"]
    )
    limits = rate_limit(settings)
    return Litestar(
        route_handlers=[
            *([EventsController, ItemsController] if role != "feed" else []),
            *(
                [FeedController, ModerationController, UsersController, AdminController]
                if role != "ingest"
                else []
            ),
            HealthController,
            MetricsController,
        ],
        # requests counted first (429s too), then limited per key
        middleware=[prometheus.middleware, *([limits.middleware] if limits else [])],
        cors_config=cors(settings),
        plugins=[StrictStructs(), *([Console()] if role != "ingest" else [])],  # (/console)
        state=State({"keys": keys}),  # (api.security reads them from here)
        lifespan=[lifespan],
        exception_handlers=HANDLERS,
        before_request=one_value_each,
        # (the litestar logger only: a host process keeps its own root logger and levels)
        logging_config=LoggingConfig(
            log_exceptions="always", disable_stack_trace=QUIET, configure_root_logger=False
        ),
        request_max_body_size=settings.max_body_bytes,
        openapi_config=OpenAPIConfig(
            title="swipeloop", version="0.1.0", path="/schema", components=COMPONENTS
        ),
    )


def app_from_env() -> Litestar:
    """App factory for `uvicorn --factory` worker processes: settings (and role) from the env."""
    settings = Settings.from_env()
    role = settings.api_role
    if role not in ROLES:
        raise ValueError(f"SWIPELOOP_API_ROLE={role!r}: one of {', '.join(ROLES)}")
    return create_app(settings, role=role)
