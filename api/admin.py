"""Admin routes of the one-process mode: chdb opens a data path from one process only, so
`swipeloop train` run beside `swipeloop up` asks the running process to train."""

from __future__ import annotations

import dataclasses
from typing import Any

from litestar import Controller, post
from litestar.datastructures import State

from api.errors import Conflict
from api.services import Services
from models.ranker import NotEnoughData, train
from swipeloop.clickhouse import connect


class AdminController(Controller):
    """Operations on the running stack (bound to loopback by `swipeloop up`)."""

    path = "/admin"
    tags = ["admin"]
    include_in_schema = False

    @post("/train", sync_to_thread=True, status_code=200)
    def train_now(self, state: State) -> dict[str, Any]:
        """Train a new model version now; the API picks it up within model_poll_s."""
        services: Services = state.services
        try:
            info = train(connect(services.settings), services.settings, say=lambda _m: None)
        except NotEnoughData as exc:
            raise Conflict(str(exc)) from exc
        services.feed.models.refresh()
        return dataclasses.asdict(info)
