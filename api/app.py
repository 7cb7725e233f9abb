"""create_app(settings): the Litestar application."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from litestar import Litestar
from litestar.logging import LoggingConfig
from litestar.openapi import OpenAPIConfig

from api.admin import AdminController
from api.errors import HANDLERS
from api.routes import EventsController, FeedController, HealthController
from api.services import Services
from swipeloop.settings import Settings


def create_app(
    settings: Settings,
    extra_checks: Callable[[], dict[str, bool]] | None = None,
    admin: bool = False,
) -> Litestar:
    """The API, wired to the settings' broker, ClickHouse and model registry."""

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        services = Services(settings, extra_checks)
        services.start()
        app.state.services = services
        try:
            yield
        finally:
            services.stop()

    return Litestar(
        route_handlers=[
            EventsController,
            FeedController,
            HealthController,
            *([AdminController] if admin else []),
        ],
        lifespan=[lifespan],
        exception_handlers=HANDLERS,
        logging_config=LoggingConfig(log_exceptions="always"),
        request_max_body_size=settings.max_body_bytes,
        openapi_config=OpenAPIConfig(title="swipeloop", version="0.1.0", path="/schema"),
    )
