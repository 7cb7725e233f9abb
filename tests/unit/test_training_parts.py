"""Offline metrics and the promotion gate on real LightGBM models (the registry, on ClickHouse:
tests/integration/test_registry.py)."""

from datetime import UTC, datetime

import numpy as np
import numpy.typing as npt
import pytest

from models.features.ranking import FEATURE_NAMES
from training.evaluation import auc, ndcg_at_k, watch_at_k
from training.ranker import Impressions, Ranker, evaluate, fit, gate


def test_ndcg_of_a_hand_made_ranking() -> None:
    groups = np.array([3, 2])
    relevance = np.array([0.0, 2.0, 1.0, 0.0, 0.0])  # the second request has nothing relevant
    perfect = np.array([0.1, 0.9, 0.5, 0.3, 0.2])
    assert ndcg_at_k(groups, relevance, perfect) == pytest.approx(1.0)
    worst = -perfect
    # order 0, 2, 1: gains 0, 1, 3 at discounts 1, 1/log2(3), 1/2; ideal 3, 1, 0
    expected = (1 / np.log2(3) + 3 / 2) / (3 + 1 / np.log2(3))
    assert ndcg_at_k(groups, relevance, worst) == pytest.approx(expected)
    assert ndcg_at_k(np.array([2]), np.zeros(2), np.zeros(2)) is None


def test_watch_of_the_top_k_and_auc_with_ties() -> None:
    groups = np.array([3])
    watch = np.array([1.0, 10.0, 5.0])
    assert watch_at_k(groups, watch, np.array([0.0, 1.0, 0.5]), k=2) == 15.0
    labels = np.array([0, 1, 0, 1], dtype=np.int8)
    assert auc(labels, np.array([0.5, 0.5, 0.5, 0.5])) == 0.5  # all tied: a coin
    assert auc(labels, np.array([0.1, 0.9, 0.2, 0.8])) == 1.0


def impressions(seed: int, requests: int = 400, shuffle: bool = False) -> Impressions:
    """Feeds of 10 where the first feature decides how much was watched."""
    rng = np.random.default_rng(seed)
    rows = rng.random((requests * 10, len(FEATURE_NAMES))).astype(np.float32)
    relevance = np.digitize(rows[:, 0] + 0.2 * rng.random(len(rows)), [0.5, 0.8, 1.0])
    if shuffle:
        relevance = rng.permutation(relevance)
    now = datetime.now(UTC)
    return Impressions(
        rows,
        relevance.astype(np.int32),
        (relevance >= 2).astype(np.int8),
        (relevance * 10.0).astype(np.float64),
        np.full(requests, 10, dtype=np.int64),
        [now] * requests,
    )


def scores(training: Impressions, holdout: Impressions) -> npt.NDArray[np.float64]:
    """The holdout's scores by a model fitted on `training`."""
    return Ranker("test", fit(training)).predict(holdout.features)


def test_a_model_trained_on_shuffled_labels_is_not_promoted() -> None:
    holdout = impressions(seed=2, requests=200)
    production = evaluate(scores(impressions(seed=1), holdout), holdout)
    shuffled = evaluate(scores(impressions(seed=1, shuffle=True), holdout), holdout)
    honest = evaluate(scores(impressions(seed=3), holdout), holdout)
    assert gate(shuffled, production, margin=0.0)[0] is False
    assert gate(honest, production, margin=-0.01)[0] is True
    assert gate(honest, None, margin=0.0) == (True, "no model in production")
    assert production.ndcg_at_10 is not None and shuffled.ndcg_at_10 is not None
    assert production.ndcg_at_10 > shuffled.ndcg_at_10 + 0.1
