"""The console: a browser page on the running API to swipe through a user's live feed and to
run the system (models, experiments, pipeline health, take-downs, erasure, the named analyses).

It is served by the API itself (`Console`, a plugin the app mounts on its feed side): Jinja
templates rendered by Litestar and plain JavaScript that calls the API's own routes
(`/v1/...`, `/admin/...`) with the caller's admin key. Nothing here builds a feed or scores an
item; the few JSON routes it adds (`api.console.signals`, `api.console.pipeline`) only read
what the serving state, the metrics and ClickHouse already hold, off the feed path.
"""

from __future__ import annotations

from pathlib import Path

from litestar.config.app import AppConfig
from litestar.plugins import InitPlugin
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.static_files import create_static_files_router
from litestar.template.config import TemplateConfig

from api.console.access import LoginController
from api.console.pages import PagesController
from api.console.pipeline import PipelineController
from api.console.signals import SignalsController

HERE = Path(__file__).parent  # templates/ and static/ are package data beside this module
TEMPLATES = HERE / "templates"
STATIC = HERE / "static"


class Console(InitPlugin):
    """Mounts the console's pages, its JSON routes, its static files and its templates."""

    def on_app_init(self, app_config: AppConfig) -> AppConfig:
        app_config.route_handlers.extend(
            [
                LoginController,
                PagesController,
                SignalsController,
                PipelineController,
                create_static_files_router(
                    path="/console/static", directories=[STATIC], name="console-static"
                ),
            ]
        )
        app_config.template_config = TemplateConfig(directory=TEMPLATES, engine=JinjaTemplateEngine)
        return app_config
