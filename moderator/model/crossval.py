"""Thresholds that hold on phrasings never seen: out-of-fold scores and a joint post-level budget.

Thresholds picked on scores of posts a head was trained on, or on a small dev split, sit just above
the benign posts that happen to be there; unseen benign phrasings then score above them far more
often than the rate they were picked for. Here every score used to pick a threshold comes from a
head that never saw that post's phrasing (group k-fold), and the thresholds of all categories are
chosen together for the rate a policy pays: the share of benign posts that *any* category flags.
``nested_estimate`` measures how that choice holds on folds it did not see.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from moderator.evaldata import LabeledPost

# Scores of the folds' heads for the posts they did not see, from (train rows, score rows).
FoldScorer = Callable[[np.ndarray, np.ndarray], np.ndarray]


def phrasing_groups(examples: Sequence[LabeledPost]) -> list[str]:
    """The phrasing each post was built from (``metadata.phrasing``); a post without one is its own."""
    return [str(ex.post.metadata.get("phrasing") or f"post:{ex.post.post_id}") for ex in examples]


def group_folds(examples: Sequence[LabeledPost], k: int) -> np.ndarray:
    """Fold index per post: whole phrasings per fold, each category's phrasings dealt round-robin."""
    groups = phrasing_groups(examples)
    family = {g: str(ex.post.metadata.get("group", "")) for g, ex in zip(groups, examples, strict=True)}
    ordered = sorted(set(groups), key=lambda g: (family[g], hashlib.sha256(g.encode()).hexdigest()))
    fold_of = {g: i % k for i, g in enumerate(ordered)}
    return np.array([fold_of[g] for g in groups])


def out_of_fold(folds: np.ndarray, score: FoldScorer) -> np.ndarray:
    """Every post scored by a head trained on the other folds."""
    parts: dict[int, np.ndarray] = {}
    for fold in np.unique(folds):
        held = np.flatnonzero(folds == fold)
        parts[int(fold)] = score(np.flatnonzero(folds != fold), held)
    first = next(iter(parts.values()))
    out = np.zeros((len(folds), first.shape[1]), dtype=first.dtype)
    for fold, scores in parts.items():
        out[folds == fold] = scores
    return out


def _levels(benign_scores: np.ndarray) -> np.ndarray:
    """Candidate thresholds of one category, strictest first: just above each distinct benign score."""
    distinct = np.unique(benign_scores)[::-1]
    return np.nextafter(distinct, np.inf)


# How the post-level budget is shared between categories (``joint_thresholds``).
ALLOCATIONS = ("maximin", "total")


def _best_step(scores: np.ndarray, benign: np.ndarray, state: tuple[np.ndarray, list[int]],
               levels: Sequence[np.ndarray], budget: int,
               candidates: Sequence[tuple[int, np.ndarray]]) -> tuple[float, int, int] | None:
    """Among ``candidates`` (a column and the posts whose flagging counts as its gain), the step down
    (up to the remaining budget, so a step that only pays off two levels down is seen) that buys the
    most counted posts per benign post it adds to the union: (value, column, level); None when no
    step gains within the budget."""
    thresholds, chosen = state
    current = (scores >= thresholds).any(axis=1)
    base_fp = int(current[benign].sum())
    best: tuple[float, int, int] | None = None
    for j, gaining in candidates:
        base_tp = int(current[gaining].sum())
        for step in range(1, budget - base_fp + 2):
            if chosen[j] + step >= len(levels[j]):
                break
            trial = thresholds.copy()
            trial[j] = levels[j][chosen[j] + step]
            hits = (scores >= trial).any(axis=1)
            cost, gain = int(hits[benign].sum()) - base_fp, int(hits[gaining].sum()) - base_tp
            if base_fp + cost > budget:
                break
            value = gain / max(cost, 0.5)
            if gain > 0 and (best is None or value > best[0]):
                best = (value, j, chosen[j] + step)
    return best


def joint_thresholds(scores: np.ndarray, harmful: np.ndarray, members: np.ndarray, fpr: float,
                     allocation: str = "maximin") -> np.ndarray:
    """Per-category thresholds flagging at most ``fpr`` of the benign posts in all (the union).

    ``members[i, j]``: post i is labeled with category j; a column without members stays above
    every benign post. Starting above every benign score, one category's threshold is lowered at a
    time, by the step that buys the most harmful posts (under ``maximin``, posts labeled with that
    category) per benign post added to the union, until no step fits the budget. ``total`` lowers whichever category buys the most harmful posts overall
    (the budget goes where recall is cheap, and a category whose look-alikes score high gets
    none); ``maximin`` lowers the category whose own recall (posts labeled with it, flagged by any
    rule) is lowest, while it can still gain, so every category gets a share.
    """
    if allocation not in ALLOCATIONS:
        raise ValueError(f"allocation {allocation!r}: one of {', '.join(ALLOCATIONS)}")
    benign = ~harmful
    positive = members.any(axis=0)
    budget = int(math.floor(fpr * benign.sum() + 1e-9))
    levels = [_levels(scores[benign, j]) if positive[j] else np.array([np.inf]) for j in range(scores.shape[1])]
    chosen = [0] * scores.shape[1]
    thresholds = np.array([lv[0] for lv in levels], dtype=np.float64)
    open_columns = [j for j in range(scores.shape[1]) if positive[j]]
    sizes = np.maximum(members.sum(axis=0), 1)
    while open_columns:
        if allocation == "total":
            best = _best_step(scores, benign, (thresholds, chosen), levels, budget,
                              [(j, harmful) for j in open_columns])
            if best is None:
                break
        else:
            flagged = (scores >= thresholds).any(axis=1)
            lowest = min(open_columns, key=lambda j: (members[flagged, j].sum() / sizes[j], j))
            best = _best_step(scores, benign, (thresholds, chosen), levels, budget, [(lowest, members[:, lowest])])
            if best is None:
                open_columns.remove(lowest)
                continue
        _, j, level = best
        chosen[j] = level
        thresholds[j] = levels[j][level]
    return thresholds


@dataclass(frozen=True)
class HeldOut:
    """How thresholds chosen on some folds' out-of-fold scores do on the fold left out, summed;
    ``recall_by_category`` per column (posts labeled with it, flagged by any rule; None without
    any)."""

    recall: float
    false_positive_rate: float
    by_fold: list[tuple[float, float]]
    recall_by_category: list[float | None]

    @property
    def minimum_category_recall(self) -> float:
        """The lowest held-out recall of a category with positives."""
        return min((r for r in self.recall_by_category if r is not None), default=0.0)


def raised(limits: np.ndarray, margin: float) -> np.ndarray:
    """Thresholds moved up by ``margin`` in logit space (0 keeps them)."""
    if margin == 0:
        return limits
    clipped = np.clip(limits, 1e-7, 1 - 1e-7)
    moved = 1 / (1 + np.exp(-(np.log(clipped / (1 - clipped)) + margin)))
    return np.where(np.isfinite(limits), np.maximum(moved, limits), limits)


def nested_estimate(scores: np.ndarray, harmful: np.ndarray, members: np.ndarray, folds: np.ndarray,
                    fpr: float, margin: float = 0.0, allocation: str = "maximin") -> HeldOut:
    """Choose thresholds on all folds but one (raised by ``margin``), apply them to that one; pooled
    recall and FPR."""
    flagged = np.zeros(len(scores), dtype=bool)
    by_fold = []
    for fold in np.unique(folds):
        out = folds == fold
        limits = raised(joint_thresholds(scores[~out], harmful[~out], members[~out], fpr, allocation), margin)
        flagged[out] = hits = (scores[out] >= limits).any(axis=1)
        by_fold.append((float(hits[harmful[out]].mean()) if harmful[out].any() else 0.0,
                        float(hits[~harmful[out]].mean()) if (~harmful[out]).any() else 0.0))
    return HeldOut(
        recall=float(flagged[harmful].mean()) if harmful.any() else 0.0,
        false_positive_rate=float(flagged[~harmful].mean()) if (~harmful).any() else 0.0,
        by_fold=by_fold,
        recall_by_category=[float(flagged[members[:, j]].mean()) if members[:, j].any() else None
                            for j in range(members.shape[1])],
    )


@dataclass(frozen=True)
class CrossValidated:
    """One setting (L2, margin) under grouped k-fold: out-of-fold scores, thresholds chosen on them,
    and how thresholds chosen that way held on the fold left out (``nested_estimate``)."""

    l2: float
    margin: float
    scores: np.ndarray
    held_out: HeldOut
    thresholds: dict[str, float]


def policy_thresholds(names: Sequence[str], limits: np.ndarray, positive: np.ndarray, *,
                      digits: int = 4) -> dict[str, float]:
    """Thresholds of the categories with positives, rounded up to ``digits`` decimals."""
    scale = 10**digits
    return {name: min(1 - 1 / scale, math.ceil(float(limits[j]) * scale) / scale)
            for j, name in enumerate(names) if positive[j]}


def cross_validate(examples: Sequence[LabeledPost], labels: np.ndarray, names: Sequence[str], k: int, fpr: float,
                   strengths: Sequence[float], score: Callable[[float, np.ndarray, np.ndarray], np.ndarray], *,
                   margins: Sequence[float] = (0.0,), allocation: str = "maximin") -> list[CrossValidated]:
    """Grouped k-fold per L2 strength and margin; ``score(l2, train_rows, held_rows)`` trains and
    scores a fold. The thresholds are chosen on all out-of-fold scores (``joint_thresholds`` with
    ``allocation``), then raised by the margin."""
    folds = group_folds(examples, k)
    harmful = np.array([ex.harmful for ex in examples])
    members = labels == 1
    positive = members.any(axis=0)
    results = []
    for l2 in strengths:
        scores = out_of_fold(folds, lambda train, held, l2=l2: score(l2, train, held))
        limits = joint_thresholds(scores, harmful, members, fpr, allocation)
        results += [CrossValidated(l2, margin, scores,
                                   nested_estimate(scores, harmful, members, folds, fpr, margin, allocation),
                                   policy_thresholds(names, raised(limits, margin), positive)) for margin in margins]
    return results


def best_setting(results: Sequence[CrossValidated], fpr: float) -> CrossValidated:
    """The most held-out recall among settings whose held-out FPR stays within ``fpr``; when none
    does, the lowest held-out FPR. Ties go to the earlier setting."""
    within = [r for r in results if r.held_out.false_positive_rate <= fpr + 1e-9]
    if within:
        return max(within, key=lambda r: (r.held_out.recall, -results.index(r)))
    return min(results, key=lambda r: (r.held_out.false_positive_rate, results.index(r)))
