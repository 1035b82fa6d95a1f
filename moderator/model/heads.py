"""Trained task heads: a linear layer or a small MLP on frozen encoder features.

One output per category. A head is stored as ``<name>.safetensors`` (weights, plus the input
standardisation) next to ``<name>.json`` (categories, encoder, kind, version, metrics). The
version is a digest of both, so retraining or editing a head changes the model version and with
it the score cache key.

Kinds: ``linear`` and ``mlp`` read the whole feature vector. ``shared`` reads only the embedding
slots (caption and image text for the offline stack; text and image for a dual encoder), applies
one linear layer to each slot present and keeps the larger logit per category. The same words thus
score the same whether they are the caption or rendered inside the image, and a neutral caption
("lol") over a harmful image cannot dilute the image's score; on held-out phrasings it generalises
better than a head with separate weights per slot.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from safetensors.torch import load_file, save_file

log = logging.getLogger(__name__)

# Heads trained on the shipped labeled set for the packaged offline stack; used when no heads
# directory is configured (``MODERATOR_HEADS_DIR``).
PACKAGED_HEADS_DIR = Path(__file__).resolve().parent / "packaged_heads"
HeadKind = Literal["linear", "mlp", "shared"]
HEAD_KINDS: tuple[HeadKind, ...] = ("linear", "mlp", "shared")
# Logit of an absent slot in a shared head: it never wins the max unless every slot is absent.
_ABSENT_LOGIT = -30.0


def _build_net(kind: HeadKind, in_dim: int, out_dim: int, hidden: int) -> torch.nn.Module:
    if kind in ("linear", "shared"):
        return torch.nn.Sequential(torch.nn.Linear(in_dim, out_dim))
    return torch.nn.Sequential(torch.nn.Linear(in_dim, hidden), torch.nn.GELU(), torch.nn.Linear(hidden, out_dim))


@dataclass
class TaskHead:
    """A trained head: standardise features, then a small network, then a sigmoid per category."""

    name: str
    kind: HeadKind
    categories: tuple[str, ...]
    encoder: str
    net: torch.nn.Module
    mean: torch.Tensor
    std: torch.Tensor
    hidden: int = 0
    metrics: dict[str, Any] = field(default_factory=dict)
    trained_at: str = ""
    # Shared heads: the ``[start, stop)`` column ranges of the embedding slots, and the width of
    # the whole feature vector they are cut from.
    slots: tuple[tuple[int, int], ...] = ()
    input_dim: int = 0

    @property
    def feature_dim(self) -> int:
        return self.input_dim or int(self.mean.shape[0])

    def _tensors(self) -> dict[str, torch.Tensor]:
        tensors = {f"net.{k}": v.detach().float().contiguous() for k, v in self.net.state_dict().items()}
        tensors["input.mean"] = self.mean.float().contiguous()
        tensors["input.std"] = self.std.float().contiguous()
        return tensors

    def _metadata(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "hidden": self.hidden,
            "categories": list(self.categories),
            "encoder": self.encoder,
            "feature_dim": self.feature_dim,
        } | ({"slots": [list(slot) for slot in self.slots]} if self.slots else {})

    @property
    def version(self) -> str:
        """Digest of weights and identity (not of metrics): same head, same version."""
        digest = hashlib.sha256(json.dumps(self._metadata(), sort_keys=True).encode())
        for key, tensor in sorted(self._tensors().items()):
            digest.update(key.encode())
            digest.update(tensor.numpy().tobytes())
        return digest.hexdigest()[:10]

    @torch.inference_mode()
    def predict(self, features: np.ndarray) -> np.ndarray:
        """``(n, feature_dim)`` features -> ``(n, len(categories))`` probabilities."""
        if features.shape[1] != self.feature_dim:
            raise ValueError(f"head {self.name!r} expects {self.feature_dim} features, got {features.shape[1]}")
        return torch.sigmoid(self.logits(torch.from_numpy(features).float())).numpy()

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        """``(n, feature_dim)`` -> ``(n, len(categories))`` logits (differentiable, for training)."""
        if not self.slots:
            return self.net((features - self.mean) / self.std)
        return _shared_logits(self.net, features, self.slots, self.mean, self.std)

    def save(self, directory: Path) -> Path:
        """Write ``<name>.safetensors`` and ``<name>.json`` into ``directory``; returns the JSON path."""
        directory.mkdir(parents=True, exist_ok=True)
        meta = self._metadata()
        save_file(
            self._tensors(), directory / f"{self.name}.safetensors", metadata={"moderator_head": json.dumps(meta)}
        )
        meta |= {"version": self.version, "trained_at": self.trained_at, "metrics": self.metrics}
        path = directory / f"{self.name}.json"
        path.write_text(json.dumps(meta, indent=2, sort_keys=True), encoding="utf-8")
        return path

    @classmethod
    def load(cls, json_path: Path) -> TaskHead:
        """Read a head written by ``save``; refuses weights that do not match the stated version."""
        meta = json.loads(json_path.read_text(encoding="utf-8"))
        tensors = load_file(json_path.with_suffix(".safetensors"))
        categories = tuple(meta["categories"])
        slots = tuple((int(a), int(b)) for a, b in meta.get("slots", ()))
        in_dim = slots[0][1] - slots[0][0] if slots else int(meta["feature_dim"])
        net = _build_net(meta["kind"], in_dim, len(categories), int(meta.get("hidden", 0)))
        net.load_state_dict({k.removeprefix("net."): v for k, v in tensors.items() if k.startswith("net.")})
        head = cls(
            name=meta["name"],
            kind=meta["kind"],
            categories=categories,
            encoder=meta["encoder"],
            net=net.eval(),
            mean=tensors["input.mean"],
            std=tensors["input.std"],
            hidden=int(meta.get("hidden", 0)),
            metrics=meta.get("metrics", {}),
            trained_at=meta.get("trained_at", ""),
            slots=slots,
            input_dim=int(meta["feature_dim"]) if slots else 0,
        )
        if meta.get("version") and meta["version"] != head.version:
            raise ValueError(f"{json_path}: weights do not match version {meta['version']} (got {head.version})")
        return head


def _shared_logits(net: torch.nn.Module, features: torch.Tensor, slots: Sequence[tuple[int, int]],
                   mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """The larger logit over the embedding slots a post has (an all-zero slot is absent)."""
    per_slot = []
    for start, stop in slots:
        x = features[:, start:stop]
        present = x.abs().sum(dim=1, keepdim=True) > 0
        per_slot.append(torch.where(present, net((x - mean) / std), torch.full_like(x[:, :1], _ABSENT_LOGIT)))
    return torch.stack(per_slot).amax(dim=0)


def _standardisation(x: torch.Tensor, slots: Sequence[tuple[int, int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and scale of the head's input: of each feature, or over every present slot of every post."""
    if slots:
        rows = torch.cat([x[:, a:b] for a, b in slots])
        rows = rows[rows.abs().sum(dim=1) > 0]
        mean, std = rows.mean(dim=0), rows.std(dim=0)
    else:
        mean, std = x.mean(dim=0), x.std(dim=0)
    # A feature constant in training (e.g. no post had an image) carries no signal: leave it unscaled.
    return mean, torch.where(std < 1e-6, torch.ones_like(std), std)


def loss_weights(labels: np.ndarray, benign_weight: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Targets (NaN as 0) and per-entry BCE weights: each class half of each category's loss
    (harmful posts are the minority), posts labeled 0 everywhere ``benign_weight`` times the other
    negatives, unknown labels 0."""
    y_raw = torch.from_numpy(labels).float()
    known = (~torch.isnan(y_raw)).float()
    y = torch.nan_to_num(y_raw)
    benign = ((y * known).sum(dim=1, keepdim=True) == 0).float()
    emphasis = (1 + (benign_weight - 1) * benign) * known * (1 - y)
    positives = (y * known).sum(dim=0)
    weight = torch.where(y > 0.5, 0.5 / positives.clamp(min=1), 0.5 * emphasis / emphasis.sum(dim=0).clamp(min=1e-6))
    return y, weight * known


def train_head(
    features: np.ndarray,
    labels: np.ndarray,
    categories: Sequence[str],
    encoder: str,
    *,
    name: str = "task-head",
    kind: HeadKind = "linear",
    hidden: int = 64,
    steps: int = 200,
    l2: float = 1e-2,
    seed: int = 0,
    slots: Sequence[tuple[int, int]] = (),
    benign_weight: float = 1.0,
) -> TaskHead:
    """Fit a head with class-balanced binary cross-entropy.

    ``labels`` is ``(n, len(categories))`` with 0/1 and NaN where a post carries no label for a
    category. Categories without both classes are dropped: a head cannot learn them, and the
    zero-shot head keeps scoring them. A ``shared`` head needs ``slots``: the equal-width column
    ranges of the embeddings it reads. ``benign_weight`` weighs posts labeled 0 everywhere against
    the other negatives (harmful posts of other categories): false positives that matter to a
    policy are benign posts flagged, so hard benign look-alikes deserve more of the loss.
    """
    if (kind == "shared") != bool(slots):
        raise ValueError("a shared head needs embedding slots, and only a shared head takes them")
    if len({stop - start for start, stop in slots}) > 1:
        raise ValueError(f"embedding slots must have one width, got {list(slots)}")
    keep = [j for j in range(len(categories)) if len(set(labels[~np.isnan(labels[:, j]), j].tolist())) == 2]
    if not keep:
        raise ValueError("no category has both positive and negative labels")
    dropped = [categories[j] for j in range(len(categories)) if j not in keep]
    if dropped:
        log.warning("not training %s: labels lack a positive or a negative example", dropped)
    torch.manual_seed(seed)
    x = torch.from_numpy(features).float()
    y, weight = loss_weights(labels[:, keep], benign_weight)
    mean, std = _standardisation(x, slots)
    net = _build_net(kind, int(mean.shape[0]), len(keep), hidden)
    head = TaskHead(
        name=name,
        kind=kind,
        categories=tuple(categories[j] for j in keep),
        encoder=encoder,
        net=net,
        mean=mean,
        std=std,
        hidden=hidden if kind == "mlp" else 0,
        trained_at=datetime.now(UTC).isoformat(timespec="seconds"),
        slots=tuple(slots),
        input_dim=x.shape[1] if slots else 0,
    )
    weights = [p for n, p in net.named_parameters() if n.endswith("weight")]
    # Full-batch L-BFGS: the data sets are small, and it converges to the same optimum every run.
    optimiser = torch.optim.LBFGS(
        net.parameters(), lr=1.0, max_iter=steps, history_size=20, line_search_fn="strong_wolfe"
    )

    def closure() -> torch.Tensor:
        optimiser.zero_grad()
        bce = torch.nn.functional.binary_cross_entropy_with_logits(head.logits(x), y, reduction="none")
        loss = (bce * weight).sum() / len(keep) + l2 * torch.stack([(w**2).sum() for w in weights]).sum()
        loss.backward()
        return loss

    optimiser.step(closure)
    head.net.eval()
    return head


def load_heads(directory: Path, encoder: str, *, quiet: bool = False) -> list[TaskHead]:
    """Every head in ``directory`` trained on ``encoder``'s features; others are skipped with a log
    line (a warning, or with ``quiet`` a debug line: shipped heads never fit every encoder)."""
    heads: list[TaskHead] = []
    for json_path in sorted(directory.glob("*.json")):
        if not json_path.with_suffix(".safetensors").is_file():
            continue
        head = TaskHead.load(json_path)
        if head.encoder != encoder:
            log.log(logging.DEBUG if quiet else logging.WARNING, "skipping head %s: trained for encoder %s, active is %s",
                    json_path, head.encoder, encoder)
            continue
        heads.append(head)
    return heads
