"""Admin routes of every feed-side API: the console's operations page calls them, and in the
one-process mode (chdb opens a data path from one process only) `swipeloop train`, `sql`
and `model` run beside `swipeloop up` ask the running process through them."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, get, post
from litestar.datastructures import State
from litestar.exceptions import NotFoundException, ValidationException
from litestar.params import JSONBody, Parameter, PathParameter

from api import experiments
from api.errors import Conflict
from api.security import admin_key
from api.services import Services
from swipeloop import analysis
from swipeloop.clickhouse import connect
from training import canary, registry
from training.ranker import NotEnoughData, train
from training.report import TrainingReport


class ExperimentStart(msgspec.Struct, frozen=True):
    """POST /admin/experiments."""

    name: str
    arms: str  # "realtime:90,batch:10": policy:share, shares in percent adding up to 100


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
            # (a client of its own: a training run takes minutes, the shared one is for reads)
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
        with services.clickhouse() as client:
            columns, rows = analysis.run(client, query, dict(request.query_params))
        return {"columns": columns, "rows": rows}

    @get("/experiments", sync_to_thread=True)
    def list_experiments(self, state: State) -> list[experiments.Experiment]:
        """Every experiment, newest first."""
        services: Services = state.services
        with services.clickhouse() as client:
            return experiments.listing(client)

    @post("/experiments", sync_to_thread=True, status_code=201)
    def start_experiment(
        self, state: State, data: JSONBody[ExperimentStart]
    ) -> experiments.Experiment:
        """Start an experiment: users split between its arms' feed policies by a hash of
        experiment and user (`arms`: "realtime:90,batch:10"); every replica serves it within
        model_poll_s, this one at once. 422 for bad arms, 409 while another one runs."""
        services: Services = state.services
        try:
            arms = experiments.parse_arms(data.arms)
            with services.clickhouse() as client:
                started = experiments.start(client, data.name, arms)
        except experiments.BadArms as exc:
            raise ValidationException(str(exc)) from exc
        except experiments.ExperimentError as exc:
            raise Conflict(str(exc)) from exc
        services.feed.experiments.refresh()
        return started

    @post("/experiments/{name:str}/stop", sync_to_thread=True, status_code=200)
    def stop_experiment(
        self, state: State, name: Annotated[str, PathParameter()]
    ) -> experiments.Experiment:
        """Stop an experiment: its users get the real-time feed again (404: no such name)."""
        services: Services = state.services
        try:
            with services.clickhouse() as client:
                stopped = experiments.stop(client, name)
        except experiments.NoSuchExperiment as exc:
            raise NotFoundException(str(exc)) from exc
        except experiments.ExperimentError as exc:
            raise Conflict(str(exc)) from exc
        services.feed.experiments.refresh()
        return stopped

    @get("/models", sync_to_thread=True)
    def models(self, state: State) -> registry.Listing:
        """Every model version and the one that serves."""
        services: Services = state.services
        with services.clickhouse() as client:
            return registry.listing(client)

    @post("/models/{version:str}/promote", sync_to_thread=True, status_code=200)
    def promote(
        self,
        state: State,
        version: Annotated[str, PathParameter()],
        reason: Annotated[str, Parameter(description="recorded in the history")] = "by hand",
    ) -> dict[str, str]:
        """Serve this version: here at once, on every other replica within model_poll_s."""
        services: Services = state.services
        try:
            with services.clickhouse() as client:
                registry.promote(client, version, reason)
        except registry.RegistryError as exc:
            raise Conflict(str(exc)) from exc
        services.feed.models.refresh()
        return {"serving": version}

    @get("/models/canaries", sync_to_thread=True)
    def canaries(self, state: State) -> list[canary.Canary]:
        """Every canary, oldest first, with its state and the verdict's reason."""
        services: Services = state.services
        with services.clickhouse() as client:
            return canary.listing(client)

    @post("/models/{version:str}/canary", sync_to_thread=True, status_code=200)
    def start_canary(
        self,
        state: State,
        version: Annotated[str, PathParameter()],
        share: Annotated[int, Parameter(ge=1, le=50, description="percent of users")] = 10,
        reason: Annotated[str, Parameter(description="recorded with it")] = "by hand",
    ) -> canary.Canary:
        """Serve this version to `share` % of users beside production until it is judged."""
        services: Services = state.services
        try:
            with services.clickhouse() as client:
                started = canary.start(client, version, share, reason)
        except registry.RegistryError as exc:
            raise Conflict(str(exc)) from exc
        services.feed.models.refresh()
        return started

    @post("/models/canary/judge", sync_to_thread=True, status_code=200)
    def judge_canary(self, state: State) -> canary.Verdict:
        """Judge the running canary now: promoted, dropped, or still waiting (409: none)."""
        services: Services = state.services
        with services.clickhouse() as client:
            verdict = canary.judge(client, services.settings)
        if verdict is None:
            raise Conflict("no canary is running")
        services.feed.models.refresh()
        return verdict

    @post("/models/rollback", sync_to_thread=True, status_code=200)
    def rollback(
        self,
        state: State,
        reason: Annotated[str, Parameter(description="recorded in the history")] = "rollback",
    ) -> dict[str, str]:
        """Serve again the version that served before the current one."""
        services: Services = state.services
        try:
            with services.clickhouse() as client:
                version = registry.rollback(client, reason)
        except registry.RegistryError as exc:
            raise Conflict(str(exc)) from exc
        services.feed.models.refresh()
        return {"serving": version}
