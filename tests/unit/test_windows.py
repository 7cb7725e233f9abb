"""Sliding windows against brute force: random streams, out of order, late, hot keys."""

from __future__ import annotations

import random
from collections import defaultdict

import numpy as np
import pytest

from models.windows import SlidingCounts, WindowSpec

SPECS = (WindowSpec(60, 5), WindowSpec(300, 25))
LATENESS = 10


def stream(seed: int, n: int = 3000, keys: int = 20, hot: float = 0.0) -> list[tuple[str, int]]:
    """(key, second) in arrival order: time moves on, most events a little out of order,
    some beyond the lateness."""
    rng = random.Random(seed)
    out, now = [], 1_000_000
    for _ in range(n):
        now += rng.choice((0, 0, 0, 1))
        if rng.random() < 0.03:
            second = now - rng.randint(LATENESS + 1, 90)  # late
        else:
            second = now - rng.randint(0, LATENESS - 1)
        key = "hot" if rng.random() < hot else f"k{rng.randrange(keys)}"
        out.append((key, second))
    return out


def counts_of(key: str, second: int) -> list[float]:
    return [1.0, float(hash((key, second)) % 7), 1.0]  # last column: events


Emitted = dict[tuple[int, int, str], list[float]]  # (window_s, end_s, key) -> counts
Live = tuple[dict[str, list[np.ndarray]], list[int], set[tuple[str, int, int]]]


def run(
    events: list[tuple[str, int]], batch: int
) -> tuple[Emitted, list[Live], set[tuple[str, int, int]]]:
    """Feed in batches the way the flow does; return the last emission per window, the live
    snapshots taken, and the events accepted (not late)."""
    table = SlidingCounts(3, SPECS, slack_s=60, capacity=4)
    emitted: Emitted = {}
    lives: list[Live] = []
    accepted: set[tuple[str, int, int]] = set()
    newest = None
    for start in range(0, len(events), batch):
        keys, seconds, sums = [], [], []
        for i, (key, second) in enumerate(events[start : start + batch], start):
            if newest is not None and second < newest - LATENESS:
                continue  # late: the flow records it and does not count it
            newest = second if newest is None else max(newest, second)
            accepted.add((key, second, i))
            keys.append(key)
            seconds.append(second)
            sums.append(counts_of(key, second))
        table.add(keys, np.array(seconds, dtype=np.int64), np.array(sums).reshape(-1, 3))
        assert newest is not None
        for e in table.close(newest - LATENESS):
            for key, row in zip(e.keys, e.counts, strict=True):
                emitted[(e.window_s, e.end_s, key)] = list(row)
        live_keys, per_window, ends = table.live()
        lives.append(
            ({k: [w[i] for w in per_window] for i, k in enumerate(live_keys)}, ends, set(accepted))
        )
    for e in table.close(10**12):
        for key, row in zip(e.keys, e.counts, strict=True):
            emitted[(e.window_s, e.end_s, key)] = list(row)
    return emitted, lives, accepted


def brute(accepted: set[tuple[str, int, int]], key: str, length: int, end: int) -> list[float]:
    total = np.zeros(3)
    for k, second, _ in accepted:
        if k == key and end - length <= second < end:
            total += counts_of(k, second)
    return list(total)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_every_final_window_equals_brute_force_and_none_is_missing(seed: int) -> None:
    events = stream(seed)
    emitted, _, accepted = run(events, batch=97)
    for (length, end, key), row in emitted.items():
        assert row == pytest.approx(brute(accepted, key, length, end)), (length, end, key)
    # completeness: every window end of every key with events in it was emitted
    for spec in SPECS:
        for key, second, _ in accepted:
            end = (second // spec.hop_s + 1) * spec.hop_s
            for e in range(end, end + spec.length_s, spec.hop_s):
                assert (spec.length_s, e, key) in emitted


def test_live_windows_equal_brute_force() -> None:
    events = stream(4, n=1500)
    _, lives, _ = run(events, batch=50)
    checked = 0
    for snapshot, ends, accepted in lives[5:]:
        for key, rows in list(snapshot.items())[:5]:
            for spec, end, row in zip(SPECS, ends, rows, strict=True):
                assert list(row) == pytest.approx(brute(accepted, key, spec.length_s, end))
                checked += 1
    assert checked > 100


def test_batches_of_any_size_give_the_same_finals() -> None:
    events = stream(5, n=1200)
    one, _, _ = run(events, batch=1)
    many, _, _ = run(events, batch=400)
    assert one.keys() == many.keys()
    for k in one:
        assert one[k] == pytest.approx(many[k])


def test_pre_aggregated_hot_key_equals_unsalted() -> None:
    """Phase one sums a poll per (key, second) on each source partition (the salt); the
    windows then merge the partials. Same windows as counting every event on its own."""
    events = stream(6, n=2000, hot=0.5)
    plain, _, accepted = run(events, batch=100)
    table = SlidingCounts(3, SPECS, slack_s=60)
    salted: dict[tuple[int, int, str], list[float]] = {}
    order = sorted(accepted, key=lambda e: e[2])
    for start in range(0, len(order), 100):
        chunk = order[start : start + 100]
        partial: dict[tuple[int, str, int], np.ndarray] = defaultdict(lambda: np.zeros(3))
        for key, second, i in chunk:
            partial[(i % 4, key, second)] += counts_of(key, second)  # 4 salts
        keys = [k for _, k, _ in partial]
        seconds = np.array([s for _, _, s in partial], dtype=np.int64)
        table.add(keys, seconds, np.array(list(partial.values())))
        newest = max(s for _, s, _ in order[: start + 100])
        for e in table.close(newest - LATENESS):
            for key, row in zip(e.keys, e.counts, strict=True):
                salted[(e.window_s, e.end_s, key)] = list(row)
    for e in table.close(10**12):
        for key, row in zip(e.keys, e.counts, strict=True):
            salted[(e.window_s, e.end_s, key)] = list(row)
    assert salted.keys() == plain.keys()
    for k in plain:
        assert salted[k] == pytest.approx(plain[k])
    hot = [k for k in plain if k[2] == "hot"]
    assert len(hot) > 50


def test_idle_entities_are_evicted_and_rows_reused() -> None:
    table = SlidingCounts(3, SPECS, slack_s=60, capacity=2)
    table.add(["a", "b"], np.array([100, 100]), np.ones((2, 3)))
    table.close(100)
    table.add(["c"], np.array([2000]), np.ones((1, 3)))
    table.close(2000 - LATENESS)
    assert table.evict(2000 - LATENESS) == 2
    assert set(table.rows) == {"c"}
    size = len(table.keys)
    table.add(["d", "e"], np.array([2001, 2001]), np.ones((2, 3)))
    assert len(table.keys) == size  # the freed rows were reused
    assert {table.rows["d"], table.rows["e"]} <= {0, 1}


def test_a_snapshot_copy_is_independent_and_resumes_the_same() -> None:
    import copy

    events = stream(8, n=1500)
    table = SlidingCounts(3, SPECS, slack_s=60)
    for key, second in events[:700]:
        table.add([key], np.array([second]), np.array([counts_of(key, second)]))
    twin = copy.deepcopy(table)
    newest = max(s for _, s in events[:700])
    outputs = [feed_on(t, events[700:], newest) for t in (table, twin)]
    assert outputs[0] == outputs[1] and len(outputs[0]) > 100


def feed_on(table: SlidingCounts, events: list[tuple[str, int]], newest: int) -> Emitted:
    """Go on feeding events (skipping late ones) and closing as the flow does; what closed."""
    emitted = {}
    for key, second in events:
        if second < newest - LATENESS:
            continue
        newest = max(newest, second)
        table.add([key], np.array([second]), np.array([counts_of(key, second)]))
        for e in table.close(newest - LATENESS):
            for k, row in zip(e.keys, e.counts, strict=True):
                emitted[(e.window_s, e.end_s, k)] = list(row)
    return emitted


def test_a_late_row_never_re_emits_a_window_from_part_of_its_buckets() -> None:
    spec = WindowSpec(300, 25)
    table = SlidingCounts(3, (spec,), slack_s=60)
    for second in range(10_000, 11_000, 5):
        table.add(["k"], np.array([second]), np.array([[1.0, 1.0, 1.0]]))
    emitted = {e.end_s: e.counts[0][-1] for e in table.close(11_000)}
    assert emitted[10_300] == 60  # 300 s of one event per 5 s
    # 300 s behind: in 12 emitted windows (ends 10,725 to 11,000), but the buckets kept
    # start at 11,000 - 300 - 60 = 10,640 (bucket 10,625): only the windows starting there
    # or later can be recomputed whole
    table.add(["k"], np.array([10_700]), np.array([[1.0, 1.0, 1.0]]))
    fixed = {e.end_s: e.counts[0][-1] for e in table.close(11_000)}
    assert sorted(fixed) == [10_925, 10_950, 10_975, 11_000]
    assert all(fixed[end] == emitted[end] + 1 for end in fixed)
    assert table.dropped == 8  # the windows it could no longer correct are counted


def test_a_pickled_snapshot_resumes_the_same_without_its_totals() -> None:
    import copy
    import pickle

    events = stream(9, n=1500)
    table = SlidingCounts(3, SPECS, slack_s=60)
    newest = None
    for key, second in events[:700]:
        if newest is not None and second < newest - LATENESS:
            continue
        newest = second if newest is None else max(newest, second)
        table.add([key], np.array([second]), np.array([counts_of(key, second)]))
        table.close(newest - LATENESS)
    table.live()
    blob = pickle.dumps(table)
    totals = sum(w.live.nbytes + w.final.nbytes for w in table.windows)
    assert len(blob) < len(pickle.dumps(copy.deepcopy(table).__dict__)) - totals // 2
    twin = pickle.loads(blob)
    assert newest is not None
    outputs = []
    for t in (table, twin):
        emitted = feed_on(t, events[700:], newest)
        keys, per_window, _ = t.live()
        lives = {k: [list(w[i]) for w in per_window] for i, k in enumerate(keys)}
        outputs.append((emitted, lives))
    (emitted, lives), (resumed, resumed_lives) = outputs
    assert emitted.keys() == resumed.keys() and len(emitted) > 100
    for k, row in emitted.items():
        assert resumed[k] == pytest.approx(row), k
    for k, rows in lives.items():  # the resumed copy re-publishes every live row
        assert [list(r) for r in resumed_lives[k]] == [pytest.approx(r) for r in rows]


def test_a_bucket_sums_its_entries_per_entity() -> None:
    """One entry per batch would make every snapshot pickle thousands of small arrays."""
    from models.windows import SLOT_ENTRIES

    table = SlidingCounts(3, SPECS, slack_s=60)
    for k in range(400):
        key = f"k{k % 7}"
        table.add([key], np.array([10_000 + k // 50]), np.array([counts_of(key, k)]))
    for w in table.windows:
        for slot in w.slots.values():
            assert len(slot.rows) < SLOT_ENTRIES
            rows, _ = slot.entries(3)
            assert len(np.unique(rows)) == len(rows) <= 7
