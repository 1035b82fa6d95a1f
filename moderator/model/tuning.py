"""Fine-tune MiniLM's top layers jointly with a shared task head, on cached lower-layer states.

A head first fitted on the frozen embeddings (``train_head``) is the starting point; then the copy
of the top layers (their biases and LayerNorm, ``TunedLayers``) and the head's linear layer are
trained together with the head's own loss
(class-balanced BCE, benign posts weighted up, L2 on the head) by AdamW over mini-batches of posts.
The hidden states under the tuned layers never change, so they are computed once per distinct
text (``TextStates``) and an epoch costs only the top layers. Seeded, single process: the same
data and settings give the same weights.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from moderator.model.heads import TaskHead, loss_weights, train_head
from moderator.model.scoring import Encoded
from moderator.model.tuned_layers import TunedLayers

if TYPE_CHECKING:
    from moderator.model.offline import OfflineStackClassifier, PostText

# Logit of an absent slot (as in a shared head): it never wins the max over slots.
_ABSENT_LOGIT = -30.0


@dataclass(frozen=True)
class TuneSettings:
    """How long and how fast the top layers and the head are trained."""

    depth: int = 2
    epochs: int = 3
    lr: float = 1e-3
    head_lr: float = 1e-4
    batch: int = 32
    seed: int = 0


@dataclass(frozen=True)
class TextStates:
    """The distinct texts' hidden states under the tuned layers, and per post the index of its
    caption and of its image text among them (``slots``, ``(n, 2)``, -1 where absent)."""

    below: Sequence[torch.Tensor]
    slots: np.ndarray

    def padded(self, texts: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(len(texts), tokens, dim)`` states and their padding mask."""
        width = max(int(self.below[t].shape[0]) for t in texts)
        dim = int(self.below[texts[0]].shape[1])
        states = torch.zeros(len(texts), width, dim)
        mask = torch.zeros(len(texts), width, dtype=torch.long)
        for row, t in enumerate(texts):
            n = int(self.below[t].shape[0])
            states[row, :n] = self.below[t]
            mask[row, :n] = 1
        return states, mask


def _embedded(layers: TunedLayers, states: TextStates, texts: Sequence[int]) -> torch.Tensor:
    # Length-sorted chunks: padding does not change a text's embedding, it only costs time.
    order = sorted(texts, key=lambda t: int(states.below[t].shape[0]))
    chunks = [layers.embed(*states.padded(order[s : s + 64])) for s in range(0, len(order), 64)]
    by_text = dict(zip(order, torch.cat(chunks), strict=True))
    return torch.stack([by_text[t] for t in texts])


@torch.inference_mode()
def text_embeddings(layers: TunedLayers, states: TextStates) -> np.ndarray:
    """``(texts, dim)`` unit embeddings of every distinct text through ``layers``."""
    layers.eval()
    return _embedded(layers, states, list(range(len(states.below)))).numpy()


def with_embeddings(features: np.ndarray, states: TextStates, embeddings: np.ndarray) -> np.ndarray:
    """``features`` with the caption and image-text embedding columns replaced (zeros where absent)."""
    out = features.copy()
    dim = embeddings.shape[1]
    for slot in range(2):
        present = states.slots[:, slot] >= 0
        out[:, slot * dim : (slot + 1) * dim] = 0.0
        out[present, slot * dim : (slot + 1) * dim] = embeddings[states.slots[present, slot]]
    return out


def _post_features(layers: TunedLayers, states: TextStates, features: torch.Tensor, posts: np.ndarray) -> torch.Tensor:
    """Differentiable feature rows of ``posts``: tuned embeddings in the slots, the flags as they are."""
    slots = states.slots[posts]
    texts = sorted({int(t) for t in slots.ravel() if t >= 0})
    emb = _embedded(layers, states, texts)
    index = {t: i for i, t in enumerate(texts)}
    parts = []
    for slot in range(2):
        rows = emb[[index.get(int(t), 0) for t in slots[:, slot]]]
        parts.append(torch.where(torch.from_numpy(slots[:, slot] >= 0)[:, None], rows, torch.zeros_like(rows)))
    dim = emb.shape[1]
    return torch.cat([*parts, features[posts, 2 * dim :]], dim=1)


def tune(layers: TunedLayers, head: TaskHead, states: TextStates, features: np.ndarray, labels: np.ndarray,
         rows: np.ndarray, *, l2: float, benign_weight: float, settings: TuneSettings) -> None:
    """Train ``layers`` and ``head``'s linear layer in place on the posts ``rows`` of ``features``
    and ``labels`` (columns: the head's categories); the weights end rounded to fp16, as they ship."""
    torch.manual_seed(settings.seed)
    rng = np.random.default_rng(settings.seed)
    y, weight = loss_weights(labels[rows], benign_weight)
    x = torch.from_numpy(features).float()
    linear = head.net[0]
    optimiser = torch.optim.AdamW([
        {"params": layers.tuned_parameters(), "lr": settings.lr, "weight_decay": 0.01},
        {"params": linear.parameters(), "lr": settings.head_lr, "weight_decay": 0.0},
    ])
    n = len(rows)
    for _ in range(settings.epochs):
        layers.train()
        order = rng.permutation(n)
        for start in range(0, n, settings.batch):
            batch = order[start : start + settings.batch]
            logits = head.logits(_post_features(layers, states, x, rows[batch]))
            bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, y[batch], reduction="none")
            # The weights sum over the whole set: scale a batch's share up to a full-set estimate.
            loss = (bce * weight[batch]).sum() * (n / len(batch)) / y.shape[1] + l2 * (linear.weight**2).sum()
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    layers.eval()
    head.net.eval()
    with torch.no_grad():
        for param in layers.tuned_parameters():
            param.copy_(param.half().float())


def fit_tuned_head(classifier: OfflineStackClassifier, states: TextStates, encoded: Encoded, labels: np.ndarray,
                   rows: np.ndarray, *, name: str, steps: int, l2: float, benign_weight: float,
                   settings: TuneSettings) -> tuple[TaskHead, TunedLayers]:
    """A shared head fitted on the frozen features of ``rows``, then tuned with a copy of the top
    layers; the head names the encoder id of those layers. ``encoded`` holds frozen features."""
    names = classifier.spec.names
    dim = classifier.text.dim
    head = train_head(encoded.features[rows], labels[rows], names, classifier.encoder_id, name=name, kind="shared",
                      steps=steps, l2=l2, slots=((0, dim), (dim, 2 * dim)), benign_weight=benign_weight)
    layers = TunedLayers.branch(classifier.text.model, settings.depth, classifier.text.version)
    keep = [names.index(c) for c in head.categories]
    tune(layers, head, states, encoded.features, labels[:, keep], rows, l2=l2, benign_weight=benign_weight,
         settings=settings)
    head.encoder = classifier.tuned_encoder_id(layers)
    return head, layers


def tuned_encoded(layers: TunedLayers, states: TextStates, encoded: Encoded) -> Encoded:
    """``encoded`` with its text embeddings made through ``layers``."""
    features = with_embeddings(encoded.features, states, text_embeddings(layers, states))
    return Encoded(features, encoded.zero_shot, encoded.floor)


def text_states(classifier: OfflineStackClassifier, texts: Sequence[PostText], depth: int) -> TextStates:
    """Hidden states under the top ``depth`` layers of every distinct caption and OCR text, once."""
    distinct = list(dict.fromkeys(t for post in texts for t in (post.caption, post.ocr_spaced) if t))
    index = {t: i for i, t in enumerate(distinct)}
    slots = np.array([[index.get(post.caption, -1) if post.caption else -1,
                       index.get(post.ocr_spaced, -1) if post.ocr_spaced else -1] for post in texts], dtype=np.int64)
    return TextStates(below=classifier.text.hidden_below(distinct, depth), slots=slots.reshape(-1, 2))
