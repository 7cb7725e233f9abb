"""The embeddings flow killed -9 ten times mid-stream loses no vector and counts every event
once: the ids it admits equal those of a run that was never interrupted (one learner), whether
it runs as one learner or as a user and an item shard on each of two workers; and split over
the two processes of a cluster, it admits the same ids as one learner."""

from __future__ import annotations

import random
from datetime import timedelta
from pathlib import Path

import pytest

from swipeloop.contracts import ReceivedEvent
from swipeloop.settings import Settings
from tests.conftest import drain, json_of, produce, role_env, swipeloop_process
from tests.support.embedding_stream import READ_IDS, START, catalog, event
from tests.support.flow_cluster import cluster_envs, drain_cluster
from tests.support.flow_processes import kill_9_mid_stream

pytestmark = [pytest.mark.integration, pytest.mark.faults]


def _own_ids(env: dict[str, str]) -> dict[str, list[str]]:
    return dict(json_of(READ_IDS, env))


def _role(live: Settings, data_dir: Path, database: str, workers: int = 1) -> dict[str, str]:
    return role_env(live, data_dir, database, embedding_dim="16", flow_workers=str(workers))


def _swipes(rng: random.Random, n: int, users: int, items: int) -> list[ReceivedEvent]:
    """`n` swipes of random users on random items, 20 ms apart in event time."""
    return [
        event(
            f"u{rng.randrange(users)}",
            f"i{rng.randrange(items)}",
            rng.choice(["impression", "impression", "watch", "like", "skip"]),
            START + timedelta(milliseconds=20 * k),
            rng.choice([500, 9_000]),
        )
        for k in range(n)
    ]


@pytest.mark.parametrize("workers", [1, 2], ids=["one_learner", "two_workers_sharded"])
def test_kill_9_mid_stream_resumes_learning_and_loses_no_vector(
    live: Settings, tmp_path: Path, workers: int
) -> None:
    rng = random.Random(17)
    # many ids near the admission count (5): a lost or twice-counted event changes who has a
    # vector, so the admitted sets of both runs are equal only if each event counted once
    events = _swipes(rng, 40_000, users=3_000, items=4_000)
    calm = _role(live, tmp_path / "calm", "calm")
    killed = _role(live, tmp_path / "killed", "killed", workers)
    had: set[str] = set()

    def nothing_lost() -> None:
        now = set(_own_ids(killed)["item_embeddings"])
        assert had <= now, f"vectors lost after a kill: {sorted(had - now)[:5]}"
        had.update(now)

    roles = (calm, killed)
    kill_9_mid_stream(live, "embeddings", roles, catalog(4_000), events, rng, nothing_lost)

    expected, got = _own_ids(calm), _own_ids(killed)
    assert len(expected["item_embeddings"]) > 1_000 and len(expected["user_embeddings"]) > 1_000
    assert had <= set(got["item_embeddings"])
    assert got == expected  # the same ids admitted: every event counted once


def test_a_cluster_of_two_processes_admits_the_ids_one_learner_admits(
    live: Settings, tmp_path: Path
) -> None:
    """The user and item shards in two processes exchange their batches, pairs and mirror
    copies over Bytewax's network; what they store (each process its own chdb path, so the
    cluster's tables are the union of theirs) is each id once, and the ids one learner's."""
    rng = random.Random(23)
    events = _swipes(rng, 15_000, users=1_500, items=2_000)
    one = _role(live, tmp_path / "one", "one")
    envs = cluster_envs(live, tmp_path / "cluster", "cluster", embedding_dim="16")
    for env in (one, *envs):
        assert swipeloop_process("migrate", env=env).wait(60) == 0
    produce(live, catalog(2_000), events)
    drain("embeddings", one)
    drain_cluster("embeddings", envs)
    parts = [_own_ids(env) for env in envs]
    expected = _own_ids(one)
    for table in ("item_embeddings", "user_embeddings"):
        union = [i for part in parts for i in part[table]]
        assert len(union) == len(set(union)), f"{table}: an id stored by both processes"
        assert sorted(union) == expected[table] and len(union) > 500
