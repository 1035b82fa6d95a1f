"""Grouped folds, out-of-fold scores and thresholds chosen jointly for a post-level false-positive rate."""

from __future__ import annotations

import numpy as np
import pytest

from moderator.evaldata import LabeledPost
from moderator.ingest.schema import Post
from moderator.model.crossval import (
    group_folds,
    joint_thresholds,
    nested_estimate,
    out_of_fold,
    policy_thresholds,
)


def _post(i: int, group: str, phrasing: str, harmful: bool) -> LabeledPost:
    post = Post(post_id=f"p{i}", user_id="u", text="x", metadata={"group": group, "phrasing": phrasing})
    return LabeledPost(post, {"scam": int(harmful)})


def test_folds_keep_a_phrasing_together_and_spread_every_group() -> None:
    examples = [_post(i, group, f"{group}-{i // 3}", group == "scam")
                for group in ("scam", "benign") for i in range(30)]
    folds = group_folds(examples, 5)
    by_phrasing: dict[str, set[int]] = {}
    for ex, fold in zip(examples, folds, strict=True):
        by_phrasing.setdefault(str(ex.post.metadata["phrasing"]), set()).add(int(fold))
    assert all(len(f) == 1 for f in by_phrasing.values())
    for group in ("scam", "benign"):
        assert {int(f) for ex, f in zip(examples, folds, strict=True) if ex.post.metadata["group"] == group} == set(
            range(5))
    assert (folds == group_folds(examples, 5)).all()  # deterministic
    seen: list[np.ndarray] = []

    def score(train: np.ndarray, held: np.ndarray) -> np.ndarray:
        assert not set(train) & set(held)
        seen.append(held)
        return held[:, None].astype(float)

    assert (out_of_fold(folds, score)[:, 0] == np.arange(60)).all() and len(seen) == 5


def test_joint_thresholds_hold_the_union_budget_and_spend_it_where_recall_is() -> None:
    rng = np.random.default_rng(0)
    benign = rng.random((200, 2)) * 0.6
    benign[:4, 0] = [0.95, 0.9, 0.85, 0.8]  # the top benign scores of column 0, below many harmful posts
    benign[4, 1] = 0.99  # column 1's top benign post is far above its harmful ones
    harmful_0 = np.column_stack([np.linspace(0.81, 0.99, 30), np.zeros(30)])
    harmful_1 = np.column_stack([np.zeros(10), np.linspace(0.61, 0.7, 10)])
    scores = np.vstack([benign, harmful_0, harmful_1])
    harmful = np.array([False] * 200 + [True] * 40)
    members = np.zeros((240, 2), dtype=bool)
    members[200:230, 0] = members[230:, 1] = True
    limits = joint_thresholds(scores, harmful, members, fpr=0.02, allocation="total")  # 4 benign posts allowed
    flagged = (scores >= limits).any(axis=1)
    assert flagged[~harmful].sum() <= 4
    assert flagged[200:230].all()  # column 0 lowered below 0.81: three benign posts buy 30 harmful ones
    assert limits[1] > 0.6 or flagged[200:].sum() == 40

    thresholds = policy_thresholds(["scam", "drugs"], limits, np.array([True, False]))
    assert list(thresholds) == ["scam"] and limits[0] <= thresholds["scam"] < limits[0] + 1e-4


def test_nested_estimate_scores_each_fold_with_thresholds_chosen_on_the_others() -> None:
    rng = np.random.default_rng(1)
    scores = rng.random((400, 1))
    harmful = np.arange(400) % 4 == 0
    scores[harmful] += 0.5
    folds = np.arange(400) % 5
    held = nested_estimate(scores, harmful, harmful[:, None], folds, fpr=0.02)
    assert len(held.by_fold) == 5 and 0.0 <= held.false_positive_rate <= 0.1 and held.recall > 0.3
    assert held.recall_by_category == [held.recall] and held.minimum_category_recall == held.recall


def test_maximin_gives_the_category_with_costly_look_alikes_a_share_that_total_recall_would_not() -> None:
    rng = np.random.default_rng(2)
    benign = rng.random((200, 2)) * 0.5
    benign[:4, 0] = [0.9, 0.8, 0.7, 0.6]  # column 0: each benign post given up buys 5 harmful ones
    benign[4:7, 1] = [0.9, 0.89, 0.88]  # column 1's look-alikes: three benign posts above all its harmful ones
    cheap = np.concatenate([np.linspace(0.91, 0.99, 20)] + [np.linspace(lo + 0.01, lo + 0.09, 5)
                                                             for lo in (0.8, 0.7, 0.6, 0.5)])
    scores = np.vstack([benign, np.column_stack([cheap, np.zeros(40)]),
                        np.column_stack([np.zeros(10), np.linspace(0.7, 0.85, 10)])])
    harmful = np.array([False] * 200 + [True] * 50)
    members = np.zeros((250, 2), dtype=bool)
    members[200:240, 0] = members[240:, 1] = True
    budget = 4  # 2% of 200
    for allocation in ("total", "maximin"):
        limits = joint_thresholds(scores, harmful, members, fpr=0.02, allocation=allocation)
        flagged = (scores >= limits).any(axis=1)
        assert flagged[~harmful].sum() <= budget and flagged[200:220].all()
        # total recall: four steps on column 0 (5 per benign post) beat column 1's 10 for 3
        assert flagged[200:240].sum() == (40 if allocation == "total" else 25)
        assert flagged[240:].sum() == (0 if allocation == "total" else 10)
    with pytest.raises(ValueError, match="allocation"):
        joint_thresholds(scores, harmful, members, fpr=0.02, allocation="fair")
