"""The nightly training on the embedded ClickHouse: labels only from inside the label window,
a run recorded in `model_runs`, the first model promoted, the API's holder following the
production pointer through a rollback, the skew check recomputing served features."""

import json
import uuid
from datetime import UTC, datetime, timedelta

import msgspec
import numpy as np
import pytest
from clickhouse_connect.driver.client import Client

from api.services import ModelHolder
from models.features.counts import RANK_WINDOWS
from models.features.ranking import FEATURE_NAMES, ranking_matrix
from models.features.weights import engagement_matrix, kind_codes
from swipeloop.clickhouse import connect
from swipeloop.migrations import migrate
from swipeloop.settings import Settings
from training import canary, registry
from training.ranker import train, training_set
from training.report import TrainingReport
from training.skew import HOPS, skew_check

pytestmark = pytest.mark.integration
N = len(FEATURE_NAMES)
IMPRESSION_COLUMNS = ["request_id", "user_id", "item_id", "position", "source", "model_version"]
EVENT_COLUMNS = [
    "event_id",
    "user_id",
    "item_id",
    "kind",
    "watch_ms",
    "client_ts",
    "received_at",
    "session_id",
    "seq",
]


def event(
    user: str,
    item: str,
    kind: str,
    at: datetime,
    watch_ms: int = 0,
    session: str = "s",
    seq: int = 0,
) -> list[object]:
    return [uuid.uuid4(), user, item, kind, watch_ms, at, at, session, seq]


def test_labels_come_only_from_the_label_window_and_sessions_without_gaps(
    settings: Settings,
) -> None:
    client = connect(settings)
    migrate(client)
    window = settings.label_window_s
    served = datetime.now(UTC) - timedelta(hours=3)
    later = served + timedelta(seconds=window + 60)  # planted: after the label window
    client.insert(
        "items",
        [[f"i{k}", "c", 10_000] for k in range(7)],
        column_names=["item_id", "creator_id", "duration_ms"],
    )
    client.insert(
        "impressions",
        [["r1", "u", f"i{k}", k, "ann", "v0", 0.0, [float(k)] * N, served] for k in range(7)],
        column_names=[*IMPRESSION_COLUMNS, "score", "features", "served_at"],
    )
    within = served + timedelta(seconds=30)
    client.insert(
        "events",
        [
            event("u", "i0", "watch", within, 9_000),  # completed (90 %): 2
            event("u", "i0", "like", later),  # too late: must not make it a 3
            event("u", "i1", "skip", within, 500),  # an early skip: 0
            event("u", "i1", "share", later),  # too late
            event("u", "i2", "watch", within, 6_000),  # half: 1
            event("u", "i2", "like", within),  # liked: 3
            event("u", "i3", "like", within),
            event("u", "i3", "not_interested", within),  # not interested wins: 0
            event("u", "i4", "like", later),  # only a late event: no outcome, no row
            event("u", "i4", "watch", served - timedelta(minutes=5), 10_000),  # before it
            # a skip in a session whose packet 1 was lost (it may have been a like): no row
            event("u", "i5", "skip", within, 300, session="lossy", seq=0),
            event("u", "i9", "watch", within, 8_000, session="lossy", seq=2),
            # a like in that session: nothing lost can raise a 3, so it stays
            event("u", "i6", "like", within, session="lossy", seq=3),
        ],
        column_names=EVENT_COLUMNS,
    )
    data = training_set(client, settings)
    by_item = {int(f[0]): int(r) for f, r in zip(data.features, data.relevance, strict=True)}
    assert by_item == {0: 2, 1: 0, 2: 3, 3: 0, 6: 3}
    assert data.groups.tolist() == [5]
    assert data.watch_s[data.features[:, 0] == 0].tolist() == [9.0]
    # the training window: served 3 hours ago, out of a window that ends 2 days from now
    later_on = datetime.now(UTC) + timedelta(days=settings.training_window_days, hours=-2)
    assert len(training_set(client, settings, now=later_on).relevance) == 0


def simulated(client: object, settings: Settings, requests: int, seed: int) -> None:
    """Feeds of 10 whose first feature decides what the user did."""
    rng = np.random.default_rng(seed)
    start = datetime.now(UTC) - timedelta(days=1)
    impressions, events = [], []
    for r in range(requests):
        served = start + timedelta(seconds=60 * r)
        for k in range(10):
            signal = float(rng.random())
            item = f"s{seed}-{r}-{k}"
            features = [signal, *rng.random(N - 1).tolist()]
            impressions.append(
                [f"q{seed}-{r}", f"u{r % 7}", item, k, "ann", "v0", 0.0, features, served]
            )
            at = served + timedelta(seconds=5 + k)
            if signal > 0.8:
                events.append(event(f"u{r % 7}", item, "like", at))
            elif signal > 0.4:
                events.append(event(f"u{r % 7}", item, "watch", at, int(signal * 20_000)))
            else:
                events.append(event(f"u{r % 7}", item, "skip", at, 300))
    client.insert(  # type: ignore[attr-defined]
        "impressions",
        impressions,
        column_names=[*IMPRESSION_COLUMNS, "score", "features", "served_at"],
    )
    client.insert("events", events, column_names=EVENT_COLUMNS)  # type: ignore[attr-defined]


def test_a_run_is_recorded_promoted_first_and_rolled_back(settings: Settings) -> None:
    client = connect(settings)
    migrate(client)
    client.insert(
        "items",
        [[f"s{s}-{r}-{k}", "c", 20_000] for s in (1, 2) for r in range(150) for k in range(10)],
        column_names=["item_id", "creator_id", "duration_ms"],
    )
    simulated(client, settings, 150, seed=1)
    first = train(client, settings, say=lambda _m: None)
    assert first.promoted and first.reason == "no model in production"
    metrics = first.metrics
    assert metrics.candidate.ndcg_at_10 is not None
    assert metrics.popularity.ndcg_at_10 is not None
    assert metrics.candidate.ndcg_at_10 > metrics.popularity.ndcg_at_10
    assert json.loads(registry.report(client, first.version)) == msgspec.to_builtins(first)

    simulated(client, settings, 150, seed=2)
    second = train(client, settings, say=lambda _m: None)
    assert second.production_version == first.version
    runs = client.query(
        "SELECT version, promoted, production_version, ndcg_at_10 IS NOT NULL, skew_sampled "
        "FROM model_runs ORDER BY run_at"
    ).result_rows
    assert runs == [  # the skew check samples 2,000 of the 1,500, then 3,000 impressions
        (first.version, 1, "", True, 1_500),
        (second.version, int(second.promoted), first.version, True, 2_000),
    ]
    # these features are random numbers, not what the events say
    assert second.skew.mismatch_rate is not None and second.skew.mismatch_rate > 0.9

    holder = ModelHolder(settings)  # what every API replica runs
    holder.refresh()
    assert holder.current is not None
    assert holder.current.version == registry.production(client)
    if not second.promoted:
        registry.promote(client, second.version, "test")
        holder.refresh()
    assert holder.current.version == second.version
    registry.rollback(client)
    holder.refresh()
    assert holder.current.version == first.version


def damaged_production(client: Client, settings: Settings) -> TrainingReport:
    """A day of impressions, a first model promoted on it, then damaged: its stored text no
    longer matches its checksum, so it cannot score the next run's holdout."""
    migrate(client)
    client.insert(
        "items",
        [[f"s1-{r}-{k}", "c", 20_000] for r in range(150) for k in range(10)],
        column_names=["item_id", "creator_id", "duration_ms"],
    )
    simulated(client, settings, 150, seed=1)
    first = train(client, settings, say=lambda _m: None)
    registry.save(client, registry.Artefact(registry.info(client, first.version), "damaged"))
    return first


def test_a_production_model_that_cannot_score_does_not_stop_the_nightly_run(
    settings: Settings,
) -> None:
    client = connect(settings)
    first = damaged_production(client, settings)
    said: list[str] = []
    second = train(client, settings, say=said.append)
    assert second.promoted and second.production_version == first.version
    assert second.metrics.production is None
    assert any("cannot score" in line for line in said)
    assert registry.production(client) == second.version


def test_the_skew_check_recomputes_served_features_from_the_events(settings: Settings) -> None:
    """Rows logged as the flow's counters would have made them match their recomputation;
    a row whose plays were wrong is caught, on that feature only. Events after the serve,
    late events and events outside a window count nowhere."""
    client = connect(settings)
    migrate(client)
    served = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)
    created = served - timedelta(hours=30)
    client.insert(
        "items",
        [["i0", "c", 10_000, created], ["i1", "c", 20_000, created]],
        column_names=["item_id", "creator_id", "duration_ms", "created_at"],
    )
    before = [timedelta(seconds=10), timedelta(minutes=20), timedelta(hours=3)]
    counted = [
        event("u", item, kind, served - ago, watch)
        for item in ("i0", "i1")
        for ago in before
        for kind, watch in (("watch", 9_000), ("skip", 700), ("like", 0), ("impression", 0))
    ]
    late = event("u", "i0", "like", served - timedelta(seconds=5))
    ignored = [
        late,
        event("u", "i0", "watch", served + timedelta(seconds=5), 10_000),  # after the serve
        event("u", "i1", "like", served - timedelta(hours=30)),  # before every window
    ]
    client.insert("events", counted + ignored, column_names=EVENT_COLUMNS)
    client.insert(  # (with its time: late_events expires rows by it)
        "late_events", [late[:4] + late[5:6]], column_names=[*EVENT_COLUMNS[:4], "client_ts"]
    )

    def as_served(item: str, duration_ms: float) -> list[float]:
        """The ranking row the flow's counters make for `item` at `served`."""
        at = served.timestamp()
        mine = [e for e in counted if e[2] == item]
        rows = engagement_matrix(
            kind_codes([str(e[3]) for e in mine]),
            np.array([float(e[4]) for e in mine]),  # type: ignore[arg-type]
            np.full(len(mine), duration_ms),
        )
        seconds = np.array([e[5].timestamp() for e in mine])  # type: ignore[attr-defined]
        counts = []
        for length in RANK_WINDOWS:
            end = (at // HOPS[length] + 1) * HOPS[length]
            counts.append(rows[(seconds >= end - length) & (seconds < end)].sum(axis=0))
        row = ranking_matrix(
            np.array([counts], dtype=np.float32),
            np.array([at]),
            np.array([created.timestamp()]),
            np.array([duration_ms]),
            np.array([0.7]),
            np.array(["ann"]),
            at,
        )
        return [float(x) for x in row[0]]

    wrong = as_served("i0", 10_000)
    wrong[FEATURE_NAMES.index("plays_1h")] += 3
    client.insert(
        "impressions",
        [
            ["r1", "u", "i0", 0, "ann", "v0", 0.0, as_served("i0", 10_000), served],
            ["r1", "u", "i1", 1, "ann", "v0", 0.0, as_served("i1", 20_000), served],
            ["r2", "u", "i0", 0, "ann", "v0", 0.0, wrong, served],
        ],
        column_names=[*IMPRESSION_COLUMNS, "score", "features", "served_at"],
    )
    skew = skew_check(client)
    assert skew.sampled == 3
    assert skew.mismatch_rate == 1 / 3
    assert {name for name, rate in skew.by_feature.items() if rate} == {"plays_1h"}


def test_with_a_canary_share_a_model_that_passed_the_gate_serves_a_share_first(
    settings: Settings,
) -> None:
    client = connect(settings)
    # the first model had nothing to judge a canary against: promoted at once; damaged, it
    # cannot score the holdout, so the next one passes the gate
    first = damaged_production(client, settings.with_(canary_share=10))
    assert first.promoted and not first.canary
    second = train(client, settings.with_(canary_share=10), say=lambda _m: None)
    assert second.canary and not second.promoted
    assert second.reason.startswith("canary on 10 % of users: ")
    assert registry.production(client) == first.version
    running = canary.running(client)
    assert running is not None
    assert (running.version, running.production, running.share) == (
        second.version,
        first.version,
        10,
    )
    assert (
        client.command(
            "SELECT promoted FROM model_runs WHERE version = {v:String}",
            parameters={"v": second.version},
        )
        == 0
    )
    holder = ModelHolder(settings)  # (production, damaged, cannot load: the canary still can)
    holder.refresh()
    assert holder.canary is not None and holder.canary[0].version == second.version
    users = [f"u{k}" for k in range(1_000)]
    on_canary = [u for u in users if holder.ranker_for(u) is holder.canary[1]]
    assert 60 <= len(on_canary) <= 140  # 10 % of 1,000, by hash
    assert on_canary == [u for u in users if holder.ranker_for(u) is holder.canary[1]]  # sticky
