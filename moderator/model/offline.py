"""The packaged offline stack: open_nsfw, OCR and MiniLM with zero-shot and trained heads.

Everything it needs ships inside pip packages, so ``moderator serve`` scores real posts with no
model settings and no network:

* image -> open_nsfw probability (the floor of any nudity category) and the text rendered in it;
* caption and OCR text -> disguises undone (leetspeak, spaced letters) -> MiniLM embeddings, also
  for a re-spaced variant (OCR drops spaces);
* zero-shot text heads: similarity to each category's prompt ensemble minus similarity to the
  closest neutral prompt, calibrated per category;
* trained heads (``MODERATOR_HEADS_DIR``, else the packaged ones) replace zero-shot heads for the
  categories they were trained on. Their features are the caption and OCR text embedded by MiniLM,
  through fine-tuned top layers when the heads directory ships them (``text-layers.safetensors``,
  branched from the shared lower layers in the same pass).
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime
import torch
from PIL import Image

from moderator.model.base import HeadSpec, ModelInfo, ModelInput
from moderator.model.device import resolve_device
from moderator.model.heads import PACKAGED_HEADS_DIR
from moderator.model.nsfw import NsfwScorer
from moderator.model.ocr import OcrReader
from moderator.model.scoring import Encoded, HeadStack, as_dicts
from moderator.model.text_encoder import MiniLMEncoder
from moderator.model.tuned_layers import TUNED_LAYERS_FILE, TunedLayers
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
# A text's two embeddings: MiniLM as shipped (zero-shot) and through the tuned top layers (features;
# None for a text no feature reads: the re-spaced caption, caption + OCR text).
Embedded = tuple[np.ndarray, np.ndarray | None]


@dataclass(frozen=True)
class PostText:
    """What the image models and the text clean-up make of a post, before any embedding: the
    caption and OCR text with disguises undone, the OCR text re-spaced, and open_nsfw's score."""

    caption: str
    ocr_text: str
    ocr_spaced: str
    nsfw: float
    has_image: bool


class OfflineStackClassifier:
    """Scores posts for a policy's categories with the packaged models (see module docstring)."""

    def __init__(self, heads: HeadSpec, device: str = "auto", heads_dir: Path | None = None, *,
                 tuned_layers: bool = True) -> None:
        """``tuned_layers=False`` ignores fine-tuned text layers in the heads directory (the frozen
        features that tuning starts from)."""
        self.spec = heads
        self.stage_times = StageTimes()  # per-component time, for the benchmark's profile
        self.device = resolve_device(device)
        onnx_cuda = self.device.type == "cuda" and "CUDAExecutionProvider" in onnxruntime.get_available_providers()
        if self.device.type == "cpu":
            # The stack runs its models side by side on one thread each (``encode``); torch's
            # intra-op pool would contend with them. Process-wide: torch has no per-model setting.
            torch.set_num_threads(1)
        self.text = MiniLMEncoder(self.device)
        self.nsfw = NsfwScorer(use_cuda=onnx_cuda)
        self.ocr = OcrReader(use_cuda=onnx_cuda)
        # open_nsfw and the captions' embeddings run here while OCR runs on the calling thread:
        # onnxruntime and torch release the GIL while they compute (see ``encode``).
        self._side = ThreadPoolExecutor(max_workers=1, thread_name_prefix="offline-side")
        self.encoder_components = {
            "image_nsfw": self.nsfw.version,
            "ocr": self.ocr.version,
            "text_encoder": self.text.version,
            "features": FEATURES_VERSION,
        }
        directory = heads_dir if heads_dir is not None else PACKAGED_HEADS_DIR
        self.tuned = self._tuned_layers(directory) if tuned_layers else None
        self.encoder_id = self.tuned_encoder_id(self.tuned)
        self.default_calibration = DEFAULT_CALIBRATION
        self._category_emb = np.stack([self._prompt_ensemble(c.prompts) for c in heads.categories])
        self._neutral_emb = self.text.encode(list(heads.neutral_prompts))
        self._nsfw_columns = [j for j, name in enumerate(heads.names) if name in NSFW_CATEGORIES]
        self.stack = HeadStack.load(
            heads, encoder=self.encoder_id, default_calibration=DEFAULT_CALIBRATION, heads_dir=heads_dir
        )
        components = dict(self.encoder_components)
        if self.tuned is not None:
            components["text_layers"] = f"top{self.tuned.depth}@{self.tuned.version}"
        components["zero_shot"] = f"minilm-prompts@{heads.fingerprint()}"
        components |= self.stack.components()
        self._info = ModelInfo(name="offline-stack", version=combined_version(components), components=components)

    def _tuned_layers(self, directory: Path) -> TunedLayers | None:
        """The fine-tuned top layers shipped beside the heads, on the model's device; None without."""
        path = directory / TUNED_LAYERS_FILE
        if not path.is_file():
            return None
        tuned = TunedLayers.load(path, self.text.model, self.text.version)
        return tuned.to(device=self.device, dtype=next(self.text.model.parameters()).dtype)

    def tuned_encoder_id(self, tuned: TunedLayers | None) -> str:
        """The encoder id of features made through ``tuned`` top layers (frozen ones for None)."""
        components = dict(self.encoder_components)
        if tuned is not None:
            components["text_layers"] = f"top{tuned.depth}@{tuned.version}"
        return f"{FEATURES_VERSION}@{combined_version(components)}"

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

    def _variants(self, caption: str, caption_spaced: str, ocr_text: str, ocr_spaced: str) -> list[str]:
        """Texts whose best zero-shot match scores the post: each source, re-spaced, and combined."""
        variants = [caption, caption_spaced, ocr_text, ocr_spaced]
        if caption and ocr_text:
            variants.append(f"{caption} {ocr_spaced}")
        return list(dict.fromkeys(v for v in variants if v))

    def _timed_nsfw(self, images: Sequence[Image.Image]) -> np.ndarray:
        with self.stage_times.timed("model.nsfw"):
            return self.nsfw.score(images)

    def _embed(self, texts: Sequence[str], featured: set[str]) -> dict[str, Embedded]:
        """Each distinct non-empty text's embeddings, from one MiniLM pass: shipped, and tuned for
        the texts in ``featured`` (the tuned layers run only for those)."""
        unique = list(dict.fromkeys(text for text in texts if text))
        with self.stage_times.timed("model.text_encoder"):
            shipped, tuned = self.text.encode_with(unique, self.tuned, featured)
        return {text: (shipped[k], tuned[k] if text in featured else None) for k, text in enumerate(unique)}

    def encode(self, items: Sequence[ModelInput]) -> Encoded:
        """open_nsfw, then the captions' MiniLM embeddings, on the side thread; OCR, then the
        embeddings of the texts it read, on this one (one core each; see ``onnx_session``)."""
        n = len(items)
        image_idx = [i for i, item in enumerate(items) if item.image is not None]
        images = [item.image for item in items if item.image is not None]
        # Disguised spellings ("k1ll", "k i l l") undone before anything is embedded.
        captions = [self.text.deobfuscate((item.text or "").strip()) for item in items]
        captions_spaced = [self.text.resegmenter(caption) if caption else "" for caption in captions]
        nsfw_scores = self._side.submit(self._timed_nsfw, images) if images else None
        caption_emb = self._side.submit(self._embed, captions + captions_spaced, set(captions))
        ocr_texts = [""] * n
        if images:
            with self.stage_times.timed("model.ocr"):
                for i, text in zip(image_idx, self.ocr.read(images), strict=True):
                    ocr_texts[i] = self.text.deobfuscate(text)
        nsfw = np.zeros(n, dtype=np.float32)
        if nsfw_scores is not None:
            nsfw[image_idx] = nsfw_scores.result()
        posts = [PostText(captions[i], ocr_texts[i], self.text.resegmenter(ocr_texts[i]) if ocr_texts[i] else "",
                          float(nsfw[i]), items[i].image is not None) for i in range(n)]
        return self._assemble(posts, captions_spaced, caption_emb.result())

    def read(self, items: Sequence[ModelInput]) -> list[PostText]:
        """open_nsfw and OCR on the batch's images, disguises undone, OCR text re-spaced: what
        ``encode_read`` embeds (training caches it, so OCR runs once per labeled post)."""
        images = [item.image for item in items if item.image is not None]
        nsfw = iter(self.nsfw.score(images) if images else [])
        ocr = iter(self.ocr.read(images) if images else [])
        posts = []
        for item in items:
            ocr_text = self.text.deobfuscate(next(ocr)) if item.image is not None else ""
            posts.append(PostText(
                caption=self.text.deobfuscate((item.text or "").strip()),
                ocr_text=ocr_text,
                ocr_spaced=self.text.resegmenter(ocr_text) if ocr_text else "",
                nsfw=float(next(nsfw)) if item.image is not None else 0.0,
                has_image=item.image is not None,
            ))
        return posts

    def encode_read(self, posts: Sequence[PostText]) -> Encoded:
        """Features and zero-shot logits of posts already read (``read``)."""
        spaced = [self.text.resegmenter(post.caption) if post.caption else "" for post in posts]
        return self._assemble(posts, spaced, {})

    def _assemble(self, posts: Sequence[PostText], captions_spaced: Sequence[str],
                  emb: dict[str, Embedded]) -> Encoded:
        """Zero-shot logits from the shipped embeddings of every variant, features from the tuned
        ones of caption and OCR text; texts missing from ``emb`` are embedded here."""
        n = len(posts)
        variants = [self._variants(p.caption, captions_spaced[i], p.ocr_text, p.ocr_spaced) for i, p in enumerate(posts)]
        featured = {text for post in posts for text in (post.caption, post.ocr_spaced) if text}
        missing = [t for texts in variants for t in texts if t not in emb or (t in featured and emb[t][1] is None)]
        emb |= self._embed(missing, featured)
        zero_shot = np.full((n, len(self.spec.categories)), _NO_TEXT_LOGIT, dtype=np.float32)
        features = np.zeros((n, self.feature_dim), dtype=np.float32)
        dim = self.text.dim
        for i, post in enumerate(posts):
            if variants[i]:
                vecs = np.stack([emb[v][0] for v in variants[i]])
                margins = vecs @ self._category_emb.T - (vecs @ self._neutral_emb.T).max(axis=1, keepdims=True)
                zero_shot[i] = margins.max(axis=0)
            for slot, text in enumerate((post.caption, post.ocr_spaced)):
                tuned = emb[text][1] if text else None
                if tuned is not None:
                    features[i, slot * dim : (slot + 1) * dim] = tuned
            features[i, 2 * dim :] = [post.nsfw, bool(post.caption), post.has_image, bool(post.ocr_text)]
        nsfw = np.array([post.nsfw for post in posts], dtype=np.float32)
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
