import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec
import numpy as np
import pytest

from models.counting import count_events
from models.embeddings import mean_vector
from models.features.counts import packed_counts
from models.features.ranking import FEATURE_NAMES, ranking_features
from models.features.rates import rates, smoothed_rate
from models.features.session import SESSION_IDLE_S, Session, advance_session
from models.features.trending import trending_score
from models.features.weights import (
    FRACTION_STEP,
    C,
    affinity_weight,
    early_skip_ms,
    engagement_delta,
    engagement_matrix,
    engagement_weight,
    kind_codes,
)
from models.items import ItemTable, keys_of
from swipeloop.contracts import Engagement, Item, ItemFeatures, ReceivedEvent

NOW = datetime(2026, 11, 28, 12, tzinfo=UTC)


def test_a_play_counts_watch_time_completion_and_early_skips() -> None:
    watch = engagement_delta("watch", 5_000, 10_000)
    assert watch[C["plays"]] == 1 and watch[C["watch_ms"]] == 5_000
    assert watch[C["completion"]] == 0.5 and watch[C["early_skips"]] == 0
    over = engagement_delta("watch", 30_000, 10_000)
    assert over[C["completion"]] == 1.0  # capped: loops are counted apart
    skip = engagement_delta("skip", 1_500, 60_000)
    assert skip[C["skips"]] == 1 and skip[C["early_skips"]] == 1 and skip[C["plays"]] == 1
    loop = engagement_delta("loop", 10_000, 10_000)
    assert loop[C["loops"]] == 1 and loop[C["completion"]] == 1.0 and loop[C["plays"]] == 0
    assert engagement_delta("impression", 0, None)[C["impressions"]] == 1
    for kind in ("like", "share", "comment", "follow", "not_interested", "block"):
        row = engagement_delta(kind, 0, 10_000)
        assert sum(row) == 2 and row[C["events"]] == 1  # its own counter and `events`


def test_early_skip_is_length_corrected() -> None:
    assert early_skip_ms(600_000) == 2_000  # a long video is not held to 10 % (60 s)
    assert early_skip_ms(6_000) == 600  # a 6 s clip skipped after 1 s was not skipped early
    assert early_skip_ms(None) == 2_000
    assert engagement_delta("skip", 1_000, 6_000)[C["early_skips"]] == 0
    assert engagement_delta("skip", 1_000, 600_000)[C["early_skips"]] == 1


def test_unknown_duration_counts_the_play_but_not_completion() -> None:
    row = engagement_delta("watch", 5_000, None)
    assert row[C["plays"]] == 1 and row[C["completion"]] == 0


def test_counters_add_and_subtract_to_the_same_bits_in_any_order() -> None:
    rng = np.random.default_rng(3)
    n = 5_000
    watch_ms = rng.integers(1, 60_000, n).astype(float)
    duration_ms = rng.integers(1_000, 90_000, n).astype(float)
    rows = engagement_matrix(kind_codes(["watch"] * n), watch_ms, duration_ms)
    assert len(np.unique(rows[:, C["completion"]])) > n // 2  # fractions, not whole numbers
    forward = rows.sum(axis=0)
    for order in (rng.permutation(n), rng.permutation(n)):
        total = np.zeros(rows.shape[1])
        for i in order:  # a sliding window: events come, and a quarter go and come back
            total += rows[i]
        for i in order[: n // 4]:
            total -= rows[i]
        for i in order[: n // 4][::-1]:
            total += rows[i]
        assert total.tobytes() == forward.tobytes()


def test_smoothed_rates_start_at_the_prior_and_follow_the_data() -> None:
    assert smoothed_rate(0, 0, 0.05) == 0.05
    assert smoothed_rate(1, 3, 0.05) < 0.1  # one like in three plays is not a 33 % like rate
    assert abs(smoothed_rate(300, 1000, 0.05) - 0.3) < 0.01
    r = rates(Engagement(plays=100, likes=50, watch_ms=500_000))
    assert 0.4 < r["likes_rate"] < 0.5 and r["watch_s_per_play"] == 5.0


def test_affinity_weights() -> None:
    assert affinity_weight("watch", 9_000, 10_000) == pytest.approx(0.9, abs=FRACTION_STEP)
    assert affinity_weight("skip", 500, 60_000) == -0.5
    assert affinity_weight("share", 0, None) > affinity_weight("like", 0, None) > 0
    assert affinity_weight("block", 0, None) < affinity_weight("not_interested", 0, None) < 0
    assert affinity_weight("impression", 0, None) == 0
    for done, undone in (("follow", "unfollow"), ("block", "unblock")):  # taken back whole
        assert affinity_weight(done, 0, None) + affinity_weight(undone, 0, None) == 0


class _Known:
    def __init__(self, creator: str, duration: int, tags: tuple[str, ...]) -> None:
        self.creator_id, self.duration_ms, self.tags = creator, duration, tags


class _Catalog(dict[str, _Known]):
    """A fixed catalog: nothing ever changes."""

    def changed(self, since: int) -> tuple[list[str], int]:
        return [], since


def _event(seq: int, ts: datetime, kind: str = "watch", item: str = "v1") -> ReceivedEvent:
    return ReceivedEvent(
        event_id=uuid.uuid4(),
        user_id="u1",
        item_id=item,
        kind=kind,  # type: ignore[arg-type]
        client_ts=ts,
        session_id="s",
        seq=seq,
        watch_ms=8_000,
        received_at=ts,
    )


def test_counting_splits_late_events_and_sums_per_entity_and_second() -> None:
    catalog = _Catalog({"v1": _Known("c1", 10_000, ("cats", "dogs"))})
    events = [
        (0, _event(0, NOW)),
        (1, _event(1, NOW + timedelta(milliseconds=300), "like")),
        (2, _event(2, NOW + timedelta(seconds=30))),
        (3, _event(3, NOW + timedelta(seconds=25))),  # out of order, within lateness
        (4, _event(4, NOW + timedelta(seconds=5))),  # late: 25 s behind the newest
        (5, _event(5, NOW + timedelta(seconds=29), item="new")),  # not in the catalog yet
    ]
    newest, counted = count_events(events, None, 10, ItemTable(catalog))
    assert newest == int(NOW.timestamp()) + 30
    assert [late.offset for late in counted.late] == [4]
    item = counted.tables["item"]
    # per (item, second), ordered by item then second; the first two events share a second
    assert list(zip(item.keys, item.seconds - int(NOW.timestamp()), strict=True)) == [
        ("v1", 0),
        ("v1", 25),
        ("v1", 30),
        ("new", 29),
    ]
    assert len(counted.tables["creator"].keys) == 3  # the new item has no creator yet
    first = item.sums[0]
    assert first[C["plays"]] == 1 and first[C["likes"]] == 1 and first[C["events"]] == 2
    tags = counted.tables["user_tag"]
    assert tags.targets is not None
    assert set(zip(tags.keys, tags.targets, strict=True)) == {("u1", "cats"), ("u1", "dogs")}
    assert tags.sums[:, 1].sum() == 2 * 4  # four on-time events of v1, each for both tags
    assert counted.watermark_s == newest - 10


def _features(plays: float, age: timedelta) -> ItemFeatures:
    counts = Engagement(plays=plays, likes=plays / 10, completion=plays / 2)
    lengths = [300, 3600, 86400]
    return ItemFeatures(
        item_id="v1",
        as_of=NOW - age,
        window_s=lengths,
        window_end=[NOW - age] * len(lengths),
        counts=packed_counts(np.array([msgspec.structs.astuple(counts)] * len(lengths))),
    )


def test_trending_decays_with_age_and_grows_with_plays() -> None:
    f = _features(50, timedelta(0))
    assert trending_score(f, NOW) > trending_score(f, NOW + timedelta(hours=5)) > 0
    assert trending_score(_features(500, timedelta(0)), NOW) > trending_score(f, NOW)
    assert trending_score(None, NOW) == 0


def test_engagement_weight_signs() -> None:
    assert engagement_weight("like", 0) > 0
    assert engagement_weight("watch", 12_000) > 0
    assert engagement_weight("watch", 1_000) == 0
    assert engagement_weight("skip", 500) < 0
    assert engagement_weight("not_interested", 0) < 0
    assert engagement_weight("impression", 0) == 0


def test_ranking_features_row_matches_names() -> None:
    item = Item(
        item_id="v1", creator_id="c1", duration_ms=20_000, created_at=NOW - timedelta(hours=2)
    )
    row = ranking_features(item, None, 0.5, "ann", NOW)
    assert len(row) == len(FEATURE_NAMES)
    named = dict(zip(FEATURE_NAMES, row, strict=True))
    assert named["ann_score"] == 0.5 and named["from_ann"] == 1.0 and named["from_fresh"] == 0.0
    assert named["age_hours"] == 2.0 and named["duration_s"] == 20.0


def test_mean_vector_is_unit_length() -> None:
    v = mean_vector([np.ones(4, np.float32), np.ones(4, np.float32) * 3])
    assert v is not None and abs(float(np.linalg.norm(v)) - 1.0) < 1e-6
    assert mean_vector([]) is None


def test_closed_rows_become_one_arrow_table() -> None:
    from dataflows.features import Closed, closed_rows
    from models.windows import Emitted

    counts = np.arange(2 * 2, dtype=float).reshape(2, 2)
    users, tags = keys_of(["u1", "u2"], 2), keys_of(["cats", "dogs"], 2)
    closed = Closed("user_tag", [Emitted(3600, 7200, users, counts, tags)])
    rows = closed_rows(closed, version=5)
    table = rows.arrow.to_pylist()
    assert rows.table == "user_affinity"
    assert table[1]["user_id"] == "u2" and table[1]["target"] == "dogs"
    assert table[1]["kind"] == "tag" and table[1]["weight"] == 2.0 and table[1]["events"] == 3.0
    assert table[0]["window_end"] == datetime(1970, 1, 1, 2, 0)


def test_a_session_tracks_its_span_size_and_skip_streak() -> None:
    s = Session()
    t0 = NOW.timestamp()
    for i, (kind, ms) in enumerate([("watch", 9_000), ("skip", 500), ("skip", 800), ("skip", 300)]):
        s = advance_session(s, "s1", t0 + 10 * i, kind, ms, 10_000)
    assert (s.events, s.plays, s.skip_streak, s.length_s) == (4, 4, 3, 30)
    s = advance_session(s, "s1", t0 + 5, "like", 0, 10_000)  # late arrival: span unchanged
    assert s.skip_streak == 0 and s.length_s == 30 and s.events == 5
    s = advance_session(s, "s2", t0 + 100, "watch", 2_500, 10_000)
    assert (s.session_id, s.events, s.length_s) == ("s2", 1, 0)
    s = advance_session(s, "s2", t0 + 100 + SESSION_IDLE_S + 1, "impression", 0, None)
    assert s.events == 1  # a long pause starts a new session


def test_the_watermark_waits_for_every_partition_but_not_for_quiet_ones() -> None:
    from dataflows.features import ShardState

    state = ShardState("0")
    parts = ["a:0", "a:1", "b:0"]
    state.sources = {"a:0": (100, None), "a:1": (90, None)}
    assert state.watermark(1000.0, 5.0, parts) is None  # b:0 not heard from in this run
    state.sources["b:0"] = (None, None)  # heard, nothing read yet, not known caught up
    assert state.watermark(1000.0, 5.0, parts) is None
    state.sources["b:0"] = (None, 998.0)  # caught up (empty) but quiet only 2 s
    assert state.watermark(1000.0, 5.0, parts) is None
    state.sources["b:0"] = (None, 990.0)  # quiet long enough: holds nothing back
    assert state.watermark(1000.0, 5.0, parts) == 90
    state.sources["a:1"] = (90, 999.0)  # a slow one is never skipped; a fresh quiet one neither
    assert state.watermark(1000.0, 5.0, parts) == 90
    state.sources = {p: (100, 990.0) for p in parts}  # all quiet: event time runs on
    assert state.watermark(1000.0, 5.0, parts) == 110


def test_snapshots_past_the_resume_epoch_are_dropped_before_a_restart(tmp_path: Path) -> None:
    import sqlite3

    from bytewax.recovery import init_db_dir

    from dataflows.runner import drop_uncommitted

    init_db_dir(tmp_path, 1)  # type: ignore[no-untyped-call]
    (db_file,) = tmp_path.glob("*.sqlite3")
    with sqlite3.connect(db_file) as db:
        db.execute("INSERT INTO exs (ex_num, worker_count, resume_epoch) VALUES (0, 1, 1)")
        db.execute("INSERT INTO fronts (ex_num, worker_index, worker_frontier) VALUES (0, 0, 5)")
        for key, epoch in (("a", 3), ("a", 5), ("b", 4), ("b", 7)):  # 5 and 7: not committed
            db.execute(
                "INSERT INTO snaps (step_id, state_key, snap_epoch, ser_change) "
                "VALUES ('s', ?, ?, x'00')",
                (key, epoch),
            )
    assert drop_uncommitted(tmp_path) == 2
    with sqlite3.connect(db_file) as db:
        left = sorted(db.execute("SELECT state_key, snap_epoch FROM snaps").fetchall())
    assert left == [("a", 3), ("b", 4)]
