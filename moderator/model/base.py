"""The contract between the pipeline and any classifier: lists in, lists of scores out."""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from PIL import Image
from pydantic import BaseModel, Field


@dataclass(frozen=True)
class ModelInput:
    """What a classifier sees of one post: its text and its decoded RGB image, either may be absent."""

    text: str | None
    image: Image.Image | None = field(default=None, compare=False)


@dataclass(frozen=True)
class CategorySpec:
    """One category to score, with the natural-language prompts that describe it (zero-shot heads)."""

    name: str
    prompts: tuple[str, ...]
    description: str = ""
    # Name of the trained head that must score this category; None lets any loaded head that
    # was trained on the category score it (zero-shot when none was).
    head: str | None = None


@dataclass(frozen=True)
class HeadSpec:
    """The categories a classifier scores, and the prompts describing benign content (the baseline)."""

    categories: tuple[CategorySpec, ...]
    neutral_prompts: tuple[str, ...]

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.categories]

    def fingerprint(self) -> str:
        """Short stable hash of the prompts: part of the model version, so a prompt edit re-scores.

        Thresholds are not part of it, so threshold-only policy edits keep the cache warm.
        """
        payload = {
            "categories": [[c.name, list(c.prompts)] for c in self.categories],
            "neutral": list(self.neutral_prompts),
        }
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:12]


class ModelInfo(BaseModel):
    """Name and version of the scoring model as written into decisions and cache keys."""

    name: str
    version: str
    components: dict[str, str] = Field(default_factory=dict)


class Classifier(Protocol):
    """Scores a batch of posts. Implementations are synchronous; the pipeline calls them off the event loop."""

    @property
    def info(self) -> ModelInfo: ...

    def score_batch(self, items: Sequence[ModelInput]) -> list[dict[str, float]]:
        """Return one ``{category: score in [0, 1]}`` per input, in order."""
        ...


class Prepared(Protocol):
    """What ``prepare`` makes of a batch: model-ready inputs, however a classifier lays them out."""

    def __len__(self) -> int: ...


@runtime_checkable
class StagedClassifier(Classifier, Protocol):
    """A classifier whose CPU preparation can run apart from, and ahead of, its forward pass.

    ``prepare`` is thread-safe and runs on a preparation pool (decode-side work: resize, crop,
    tokenise); ``infer`` runs on the model thread over one or more prepared parts, concatenated in
    order, and returns one score dict per post. ``score_batch(items)`` is ``infer([prepare(items)])``.
    """

    def min_decode_side(self) -> int | None:
        """The shortest image side the model needs, so a JPEG can be decoded at a reduced scale
        (None: decode at full size, e.g. for OCR)."""
        ...

    def prepare(self, items: Sequence[ModelInput]) -> Prepared: ...

    def infer(self, parts: Sequence[Prepared]) -> list[dict[str, float]]: ...


@dataclass(frozen=True)
class _Inputs:
    items: Sequence[ModelInput]

    def __len__(self) -> int:
        return len(self.items)


class WholeBatch:
    """A classifier without its own preparation step seen as a staged one: ``prepare`` keeps the
    inputs, ``infer`` scores them all in one ``score_batch`` call."""

    def __init__(self, classifier: Classifier) -> None:
        self.classifier = classifier

    @property
    def info(self) -> ModelInfo:
        return self.classifier.info

    def min_decode_side(self) -> int | None:
        return None

    def prepare(self, items: Sequence[ModelInput]) -> Prepared:
        return _Inputs(items)

    def infer(self, parts: Sequence[Prepared]) -> list[dict[str, float]]:
        items = [item for part in parts for item in part.items]  # type: ignore[attr-defined]
        return self.classifier.score_batch(items)

    def score_batch(self, items: Sequence[ModelInput]) -> list[dict[str, float]]:
        return self.classifier.score_batch(items)


def staged(classifier: Classifier) -> StagedClassifier:
    """``classifier`` itself when it splits preparation from inference, else a ``WholeBatch`` view of it."""
    return classifier if _splits_preparation(type(classifier)) else WholeBatch(classifier)  # type: ignore[return-value]


@functools.cache
def _splits_preparation(kind: type) -> bool:
    # Asked once per post: a runtime protocol check walks the protocol's members each time (~15 us),
    # and classifiers define these methods on their class, so the answer is one per class.
    return all(callable(getattr(kind, name, None)) for name in ("min_decode_side", "prepare", "infer", "score_batch"))
