"""CLIP/SigLIP dual encoder (``MODERATOR_MODEL``) with zero-shot and trained heads.

Each category's prompts are embedded once and averaged (a prompt ensemble). For CLIP the
zero-shot logit is the scaled similarity to the category minus that to the neutral prompts;
SigLIP was trained with a sigmoid loss and a learned bias, so its pairwise logit is used as is.
Image and text are scored separately and fused by the larger logit (harm in either modality is
harm), then calibrated per category. Trained heads read the concatenated image and text
embeddings.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModel, AutoProcessor
from transformers.utils import logging as hf_logging

from moderator.model.base import HeadSpec, ModelInfo, ModelInput
from moderator.model.device import inference_dtype, resolve_device
from moderator.model.forward import DualEncoderForward, row_index
from moderator.model.prepare import PreparedBatch, Preparer
from moderator.model.scoring import Encoded, HeadStack, as_dicts
from moderator.model.versions import combined_version, directory_digest

# Logit of a missing modality: below anything a present one can score.
_ABSENT = -1e4
# sigmoid(logit): CLIP's logit scale (~100) and SigLIP's scale and bias are already calibrated
# for pairwise matching; fitted per-category parameters refine this.
DEFAULT_CALIBRATION = (1.0, 0.0)


class DualEncoderClassifier:
    """Zero-shot (and trained-head) scores from a transformers dual encoder."""

    def __init__(self, source: str, heads: HeadSpec, device: str = "auto", heads_dir: Path | None = None,
                 gpu_jpeg_decode: bool = True) -> None:
        hf_logging.disable_progress_bar()
        self.spec = heads
        self.source = source
        self.device = resolve_device(device)
        self.dtype = inference_dtype(self.device)
        self.processor = AutoProcessor.from_pretrained(source)
        self.model = AutoModel.from_pretrained(source, dtype=self.dtype).to(self.device).eval()
        self._prepare = Preparer.from_processor(self.processor, DualEncoderForward.text_kwargs(self.model))
        self.forward = DualEncoderForward(self.model, self._prepare, self.device, self.dtype)
        # JPEGs go to the GPU undecoded (nvjpeg) when it can decode them; the pool only checks headers.
        self.decodes_jpeg = gpu_jpeg_decode and self.forward.gpu_decode
        self._category_emb = torch.stack([self._embed_prompts(list(c.prompts)) for c in heads.categories])
        self._neutral_emb = self._embed_prompts(list(heads.neutral_prompts))
        self.embed_dim = int(self._category_emb.shape[1])
        name = Path(source).name if Path(source).is_dir() else source
        weights = directory_digest(Path(source)) if Path(source).is_dir() else source
        self.encoder_id = f"{type(self.model).__name__}:{name}@{weights}"
        self.default_calibration = DEFAULT_CALIBRATION
        self.stack = HeadStack.load(
            heads, encoder=self.encoder_id, default_calibration=DEFAULT_CALIBRATION, heads_dir=heads_dir
        )
        components = {"encoder": self.encoder_id, "zero_shot": f"prompts@{heads.fingerprint()}"}
        components |= self.stack.components()
        self._info = ModelInfo(name=name, version=combined_version(components), components=components)

    @property
    def info(self) -> ModelInfo:
        return self._info

    def _embed_prompts(self, prompts: list[str]) -> torch.Tensor:
        prepared = self._prepare(prompts, [None] * len(prompts))
        assert prepared.input_ids is not None and prepared.attention_mask is not None
        emb = self.forward.text_features(prepared.input_ids, prepared.attention_mask)
        return torch.nn.functional.normalize(emb.mean(dim=0), dim=-1)

    def _logits(self, emb: torch.Tensor) -> torch.Tensor:
        return self.forward.zero_shot_logits(emb, self._category_emb, self._neutral_emb)

    def min_decode_side(self) -> int | None:
        """JPEGs may be decoded at a reduced scale down to this short side (see ``prepare.DRAFT_MARGIN``)."""
        return self._prepare.min_decode_side

    def prepare(self, items: Sequence[ModelInput]) -> PreparedBatch:
        """Tokens and uint8 pixels for ``items`` (CPU, thread-safe): the preparation stage's work."""
        return self._prepare([item.text for item in items], [item.image for item in items])

    def prepare_texts(self, texts: Sequence[str | None]) -> list[PreparedBatch]:
        """``prepare`` of each text-only post, tokenised in one call (``Preparer.texts_each``)."""
        return self._prepare.texts_each(texts)

    def prepare_jpeg(self, text: str | None, jpeg: bytes) -> PreparedBatch:
        """Tokens for ``text`` and the JPEG kept for nvjpeg (only when ``decodes_jpeg``): the pool's
        work for a JPEG post when the GPU decodes."""
        return self._prepare([text], [None], [jpeg])

    @torch.inference_mode()
    def encode_prepared(self, parts: Sequence[PreparedBatch]) -> Encoded:
        """One forward pass per modality for the prepared parts, concatenated in order.

        Logits and features are assembled on the device and copied to the host once, at the end:
        no synchronisation between the towers, so the image tower's kernels are queued while the
        text tower still runs.
        """
        batch = PreparedBatch.join(parts, self._prepare.pad_id)
        n, d, dev = batch.size, self.embed_dim, self.device
        c = len(self.spec.categories)
        # Logits and features side by side in one tensor: one copy to the host, one synchronisation.
        out = torch.zeros(n, c + 2 * d + 2, device=dev)
        logits, features = out[:, :c], out[:, c:]
        logits.fill_(_ABSENT)
        if batch.text_rows:
            assert batch.input_ids is not None and batch.attention_mask is not None
            emb = self.forward.text_features(batch.input_ids, batch.attention_mask)
            rows = row_index(batch.text_rows, n, dev)
            logits[rows] = torch.maximum(logits[rows], self._logits(emb))
            features[rows, d : 2 * d] = emb
            features[rows, 2 * d + 1] = 1.0
        image_rows, emb = self.forward.image_features(batch)
        if image_rows:
            rows = row_index(image_rows, n, dev)
            logits[rows] = torch.maximum(logits[rows], self._logits(emb))
            features[rows, :d] = emb
            features[rows, 2 * d] = 1.0
        host = out.cpu().numpy()
        zero_shot = host[:, :c]
        return Encoded(features=host[:, c:], zero_shot=zero_shot, floor=np.zeros_like(zero_shot))

    def encode(self, items: Sequence[ModelInput]) -> Encoded:
        """Prepare and encode a batch in one call (training, evaluation, the bare-model benchmark)."""
        return self.encode_prepared([self.prepare(items)])

    def infer(self, parts: Sequence[PreparedBatch]) -> list[dict[str, float]]:
        """One ``{category: score}`` per post of the prepared parts, in order: the model stage's work."""
        if not parts or not sum(len(p) for p in parts):
            return []
        return as_dicts(self.spec.names, self.stack.scores(self.encode_prepared(parts)))

    def score_batch(self, items: Sequence[ModelInput]) -> list[dict[str, float]]:
        """One ``{category: score}`` per post, in order."""
        if not items:
            return []
        return self.infer([self.prepare(items)])
