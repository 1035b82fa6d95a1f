"""The packaged offline stack: open_nsfw, OCR and MiniLM with zero-shot and trained heads.

Everything it needs ships inside pip packages, so ``moderator serve`` scores real posts with no
model settings and no network:

* image -> open_nsfw probability (the floor of any nudity category) and the text rendered in it;
* caption and OCR text -> disguises undone (leetspeak, spaced letters) -> MiniLM embeddings, also
  for a re-spaced variant (OCR drops spaces);
* zero-shot text heads: similarity to each category's prompt ensemble minus similarity to the
  closest neutral prompt, calibrated per category;
* trained heads (``MODERATOR_HEADS_DIR``) on the same frozen features replace zero-shot heads for
  the categories they were trained on.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnxruntime

from moderator.model.base import HeadSpec, ModelInfo, ModelInput
from moderator.model.device import resolve_device
from moderator.model.nsfw import NsfwScorer
from moderator.model.ocr import OcrReader
from moderator.model.scoring import Encoded, HeadStack, as_dicts
from moderator.model.text_encoder import MiniLMEncoder
from moderator.model.versions import combined_version
from moderator.telemetry.stages import StageTimes

# Categories scored (also) by open_nsfw, by the names policies use for sexual content.
NSFW_CATEGORIES = frozenset({"nudity", "nsfw", "sexual", "sexual_content", "explicit", "porn", "pornography"})
# Bump when the feature layout or zero-shot recipe changes: trained heads and caches then reset.
FEATURES_VERSION = "offline-v2"
# MiniLM margins: unrelated text sits near 0 or below, on-topic text at 0.3-0.5. This maps a
# margin of 0.2 to 0.5 and spreads 0.05..0.35 over roughly 0.05..0.95.
DEFAULT_CALIBRATION = (0.05, -4.0)
# Logit for a post with no text at all (image without legible text): "nothing to match".
_NO_TEXT_LOGIT = -1.0


class OfflineStackClassifier:
    """Scores posts for a policy's categories with the packaged models (see module docstring)."""

    def __init__(self, heads: HeadSpec, device: str = "auto", heads_dir: Path | None = None) -> None:
        self.spec = heads
        self.stage_times = StageTimes()  # per-component time, for the benchmark's profile
        self.device = resolve_device(device)
        onnx_cuda = self.device.type == "cuda" and "CUDAExecutionProvider" in onnxruntime.get_available_providers()
        self.text = MiniLMEncoder(self.device)
        self.nsfw = NsfwScorer(use_cuda=onnx_cuda)
        self.ocr = OcrReader(use_cuda=onnx_cuda)
        self.encoder_components = {
            "image_nsfw": self.nsfw.version,
            "ocr": self.ocr.version,
            "text_encoder": self.text.version,
            "features": FEATURES_VERSION,
        }
        self.encoder_id = f"{FEATURES_VERSION}@{combined_version(self.encoder_components)}"
        self.default_calibration = DEFAULT_CALIBRATION
        self._category_emb = np.stack([self._prompt_ensemble(c.prompts) for c in heads.categories])
        self._neutral_emb = self.text.encode(list(heads.neutral_prompts))
        self._nsfw_columns = [j for j, name in enumerate(heads.names) if name in NSFW_CATEGORIES]
        self.stack = HeadStack.load(
            heads, encoder=self.encoder_id, default_calibration=DEFAULT_CALIBRATION, heads_dir=heads_dir
        )
        components = dict(self.encoder_components)
        components["zero_shot"] = f"minilm-prompts@{heads.fingerprint()}"
        components |= self.stack.components()
        self._info = ModelInfo(name="offline-stack", version=combined_version(components), components=components)

    def _prompt_ensemble(self, prompts: Sequence[str]) -> np.ndarray:
        mean = self.text.encode(list(prompts)).mean(axis=0)
        return mean / np.linalg.norm(mean)

    @property
    def info(self) -> ModelInfo:
        return self._info

    @property
    def feature_dim(self) -> int:
        """Caption embedding, OCR embedding, then nsfw, has_text, has_image, has_ocr."""
        return 2 * self.text.dim + 4

    def _variants(self, caption: str, ocr_text: str, ocr_spaced: str) -> list[str]:
        """Texts whose best zero-shot match scores the post: each source, re-spaced, and combined."""
        variants = [caption, self.text.resegmenter(caption) if caption else "", ocr_text, ocr_spaced]
        if caption and ocr_text:
            variants.append(f"{caption} {ocr_spaced}")
        return list(dict.fromkeys(v for v in variants if v))

    def encode(self, items: Sequence[ModelInput]) -> Encoded:
        """Run open_nsfw and OCR on the images and MiniLM on all texts of the batch at once."""
        n = len(items)
        image_idx = [i for i, item in enumerate(items) if item.image is not None]
        images = [item.image for item in items if item.image is not None]
        nsfw = np.zeros(n, dtype=np.float32)
        ocr_texts = [""] * n
        if images:
            with self.stage_times.timed("model.nsfw"):
                nsfw[image_idx] = self.nsfw.score(images)
            with self.stage_times.timed("model.ocr"):
                read = self.ocr.read(images)
            for i, text in zip(image_idx, read, strict=True):
                ocr_texts[i] = text
        # Disguised spellings ("k1ll", "k i l l") undone before anything is embedded.
        captions = [self.text.deobfuscate((item.text or "").strip()) for item in items]
        ocr_texts = [self.text.deobfuscate(text) for text in ocr_texts]
        ocr_spaced = [self.text.resegmenter(text) if text else "" for text in ocr_texts]
        variants = [self._variants(captions[i], ocr_texts[i], ocr_spaced[i]) for i in range(n)]
        # Every text embedded once per batch, in one call (captions and OCR text are variants too).
        unique = list(dict.fromkeys(text for texts in variants for text in texts))
        row = {text: k for k, text in enumerate(unique)}
        with self.stage_times.timed("model.text_encoder"):
            emb = self.text.encode(unique)

        zero_shot = np.full((n, len(self.spec.categories)), _NO_TEXT_LOGIT, dtype=np.float32)
        features = np.zeros((n, self.feature_dim), dtype=np.float32)
        dim = self.text.dim
        for i in range(n):
            if variants[i]:
                vecs = emb[[row[v] for v in variants[i]]]
                margins = vecs @ self._category_emb.T - (vecs @ self._neutral_emb.T).max(axis=1, keepdims=True)
                zero_shot[i] = margins.max(axis=0)
            if captions[i]:
                features[i, :dim] = emb[row[captions[i]]]
            if ocr_spaced[i]:
                features[i, dim : 2 * dim] = emb[row[ocr_spaced[i]]]
            features[i, 2 * dim :] = [nsfw[i], bool(captions[i]), items[i].image is not None, bool(ocr_texts[i])]
        floor = np.zeros_like(zero_shot)
        floor[:, self._nsfw_columns] = nsfw[:, None]
        return Encoded(features=features, zero_shot=zero_shot, floor=floor)

    def score_batch(self, items: Sequence[ModelInput]) -> list[dict[str, float]]:
        """One ``{category: score}`` per post, in order."""
        if not items:
            return []
        encoded = self.encode(items)
        with self.stage_times.timed("model.heads"):
            return as_dicts(self.spec.names, self.stack.scores(encoded))
