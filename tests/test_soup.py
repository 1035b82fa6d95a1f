"""Fold models averaged into one (``moderator.model.soup``): heads and tuned text layers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import BertConfig, BertModel

from moderator.model.heads import TaskHead, train_head
from moderator.model.soup import averaged_head, averaged_layers
from moderator.model.tuned_layers import TunedLayers, is_tuned

CATEGORIES = ["scam", "drugs"]


def _data(seed: int, n: int = 80, dim: int = 6) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(loc=rng.normal(size=dim) * 3, scale=rng.uniform(0.5, 4, size=dim), size=(n, dim))
    labels = np.stack([(x[:, 0] > x[:, 0].mean()), (x[:, 1] + x[:, 2] > 0)], axis=1).astype(np.float64)
    return x.astype(np.float32), labels


def _head(seed: int, kind: str = "linear", slots: tuple[tuple[int, int], ...] = ()) -> TaskHead:
    x, labels = _data(seed)
    return train_head(x, labels, CATEGORIES, "enc", kind=kind, slots=slots, steps=50)  # type: ignore[arg-type]


def _logits(head: TaskHead, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return head.logits(torch.from_numpy(x)).numpy()


def test_a_soup_of_linear_heads_scores_the_mean_logit_though_each_standardised_its_own_rows() -> None:
    heads = [_head(seed) for seed in range(3)]
    assert not torch.allclose(heads[0].mean, heads[1].mean)  # each fold's own standardisation
    x, _ = _data(99)
    soup = averaged_head(heads)
    expected = np.mean([_logits(h, x) for h in heads], axis=0)
    np.testing.assert_allclose(_logits(soup, x), expected, rtol=1e-4, atol=1e-4)
    assert soup.categories == heads[0].categories and soup.kind == "linear"
    np.testing.assert_allclose(_logits(averaged_head(heads[:1]), x), _logits(heads[0], x), rtol=1e-5, atol=1e-5)


def test_a_soup_of_shared_heads_averages_each_slot_and_keeps_the_larger() -> None:
    slots = ((0, 3), (3, 6))
    heads = [_head(seed, "shared", slots) for seed in range(2)]
    x, _ = _data(7)
    soup = averaged_head(heads)
    assert soup.slots == slots and soup.feature_dim == 6
    only_first = x.copy()
    only_first[:, 3:] = 0.0  # the second slot absent: the first slot's logit, averaged
    expected = np.mean([_logits(h, only_first) for h in heads], axis=0)
    np.testing.assert_allclose(_logits(soup, only_first), expected, rtol=1e-4, atol=1e-4)
    both = _logits(soup, x)
    per_slot = [np.mean([_logits(h, np.where(np.arange(6) // 3 == s, x, 0.0).astype(np.float32)) for h in heads],
                        axis=0) for s in range(2)]
    np.testing.assert_allclose(both, np.maximum(*per_slot), rtol=1e-4, atol=1e-4)


def test_only_alike_linear_heads_average() -> None:
    x, labels = _data(0)
    mlp = train_head(x, labels, CATEGORIES, "enc", kind="mlp", steps=5)
    with pytest.raises(ValueError, match="only linear heads"):
        averaged_head([mlp, mlp])
    one_category = train_head(x, labels[:, :1], CATEGORIES[:1], "enc", steps=5)
    with pytest.raises(ValueError, match="differs"):
        averaged_head([_head(0), one_category])
    with pytest.raises(ValueError, match="no heads"):
        averaged_head([])


def _bert() -> BertModel:
    torch.manual_seed(0)
    return BertModel(BertConfig(hidden_size=16, num_hidden_layers=3, num_attention_heads=2, intermediate_size=32,
                                vocab_size=50)).eval()


def test_averaged_layers_take_the_mean_of_the_tuned_parameters_and_keep_the_shipped_weights() -> None:
    model = _bert()
    folds = [TunedLayers.branch(model, 2, "base@1") for _ in range(3)]
    with torch.no_grad():
        for i, layers in enumerate(folds):
            for name, param in layers.layers.named_parameters():
                if is_tuned(name):
                    param.add_(0.25 * (i + 1))
    soup = averaged_layers(folds)
    shipped = dict(TunedLayers.branch(model, 2, "base@1").layers.named_parameters())
    for name, param in soup.layers.named_parameters():
        if is_tuned(name):
            expected = (shipped[name] + 0.5).half().float()  # mean of +0.25, +0.5, +0.75; stored as fp16
            torch.testing.assert_close(param, expected)
        else:
            torch.testing.assert_close(param, shipped[name])
    assert soup.depth == 2 and soup.base == "base@1" and soup.version != folds[0].version
    with pytest.raises(ValueError, match="different depth"):
        averaged_layers([folds[0], TunedLayers.branch(model, 1, "base@1")])
