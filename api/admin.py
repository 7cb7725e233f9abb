"""Admin routes of the one-process mode: chdb opens a data path from one process only, so
`swipeloop train` and `swipeloop sql` run beside `swipeloop up` ask the running process."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, Request, get, post
from litestar.datastructures import State
from litestar.params import PathParameter

from api.errors import Conflict
from api.security import admin_key
from api.services import Services
from swipeloop import analysis
from swipeloop.clickhouse import connect
from training.ranker import NotEnoughData, train
from training.report import TrainingReport


class AdminController(Controller):
    """Operations on the running stack (admin keys; loopback callers when none is set)."""

    path = "/admin"
    tags = ["admin"]
    guards = [admin_key]
    include_in_schema = False

    @post("/train", sync_to_thread=True, status_code=200)
    def train_now(self, state: State) -> TrainingReport:
        """Train a candidate now and promote it if it beats production on the holdout; the
        API serves a promoted one within model_poll_s. Returns the run's report."""
        services: Services = state.services
        try:
            report = train(connect(services.settings), services.settings, say=lambda _m: None)
        except NotEnoughData as exc:
            raise Conflict(str(exc)) from exc
        services.feed.models.refresh()
        return report

    @get("/sql/{name:str}", sync_to_thread=True)
    def named_query(
        self, state: State, request: Request[Any, Any, Any], name: Annotated[str, PathParameter()]
    ) -> dict[str, Any]:
        """Run a named query of `sql/analysis/` with the query string as its parameters:
        {"columns": [...], "rows": [[...], ...]} (400 for an unknown name or a bad value)."""
        services: Services = state.services
        query = analysis.load(name)
        columns, rows = analysis.run(connect(services.settings), query, dict(request.query_params))
        return {"columns": columns, "rows": rows}
