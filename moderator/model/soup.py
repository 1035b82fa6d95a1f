"""One model from a cross-validation's fold models: their weights averaged (a "model soup").

Thresholds chosen on out-of-fold scores describe the fold models. A head refitted on all the data
trains longer on more posts and can score on another scale, so a threshold that flagged a share of
a category out of fold can flag far less on the refit (it did: scam, 0.53 -> 0.06 on test). The
fold models start from the same weights (the shipped MiniLM layers, a head fitted by the same
convex L-BFGS) and move little (BitFit biases and LayerNorm, one linear layer), so the average of
their weights stays between them and scores like their mean: the scale the thresholds were chosen
on. Only linear heads (``linear``, ``shared``) average: their input standardisation is folded into
the weights first, since each fold standardised with its own rows.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from datetime import UTC, datetime

import torch

from moderator.model.heads import TaskHead
from moderator.model.tuned_layers import TunedLayers, is_tuned


def _folded(head: TaskHead) -> tuple[torch.Tensor, torch.Tensor]:
    """The head's linear layer on raw features: ``W (x - mean) / std + b`` as ``W' x + b'``."""
    linear = head.net[0]
    weight = linear.weight.detach() / head.std[None, :]
    return weight, linear.bias.detach() - weight @ head.mean


def averaged_head(heads: Sequence[TaskHead]) -> TaskHead:
    """A linear head whose weights and bias are the mean of ``heads``' (standardisation folded in).

    The heads must share kind, categories and slots; the result names the first one's encoder
    (a caller whose heads read differently tuned features names the averaged features' encoder).
    """
    if not heads:
        raise ValueError("no heads to average")
    first = heads[0]
    if first.kind not in ("linear", "shared"):
        raise ValueError(f"only linear heads average, not {first.kind!r}")
    for head in heads[1:]:
        if (head.kind, head.categories, head.slots, head.feature_dim) != (first.kind, first.categories, first.slots,
                                                                           first.feature_dim):
            raise ValueError(f"head {head.name!r} differs from {first.name!r} in kind, categories or inputs")
    folded = [_folded(head) for head in heads]
    weight = torch.stack([w for w, _ in folded]).mean(dim=0)
    bias = torch.stack([b for _, b in folded]).mean(dim=0)
    linear = torch.nn.Linear(weight.shape[1], weight.shape[0])
    with torch.no_grad():
        linear.weight.copy_(weight)
        linear.bias.copy_(bias)
    return TaskHead(
        name=first.name, kind=first.kind, categories=first.categories, encoder=first.encoder,
        net=torch.nn.Sequential(linear).eval(), mean=torch.zeros(weight.shape[1]), std=torch.ones(weight.shape[1]),
        trained_at=datetime.now(UTC).isoformat(timespec="seconds"), slots=first.slots, input_dim=first.input_dim,
    )


def averaged_layers(layers: Sequence[TunedLayers]) -> TunedLayers:
    """A copy of the first tuned layers with every tuned parameter the mean of ``layers``' (fp16, as
    they ship); they must have one depth and base."""
    if not layers:
        raise ValueError("no tuned layers to average")
    first = layers[0]
    if any((other.depth, other.base) != (first.depth, first.base) for other in layers[1:]):
        raise ValueError("tuned layers of different depth or base model do not average")
    soup = copy.deepcopy(first)
    params = [dict(other.layers.named_parameters()) for other in layers]
    with torch.no_grad():
        for name, param in soup.layers.named_parameters():
            if is_tuned(name):
                param.copy_(torch.stack([p[name].detach() for p in params]).mean(dim=0).half().float())
    return soup.eval()
