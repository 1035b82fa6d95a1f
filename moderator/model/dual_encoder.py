"""CLIP/SigLIP-style dual encoder with zero-shot heads built from policy prompts."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import torch
from transformers import AutoModel, AutoProcessor

from moderator.model.base import HeadSpec, ModelInfo, ModelInput
from moderator.model.device import inference_dtype, resolve_device


def _weights_digest(source: str) -> str:
    """Identify the weights: hash of a local directory's config and weight file sizes, else the hub name."""
    path = Path(source)
    digest = hashlib.sha256()
    if path.is_dir():
        for file in sorted(path.iterdir()):
            if file.suffix in {".json", ".safetensors", ".bin", ".txt", ".model"}:
                digest.update(file.name.encode())
                digest.update(file.read_bytes() if file.suffix == ".json" else str(file.stat().st_size).encode())
    else:
        digest.update(source.encode())
    return digest.hexdigest()[:10]


class DualEncoderClassifier:
    """Zero-shot scores from a transformers dual encoder.

    Each category's prompts are embedded once and averaged (a prompt ensemble). For CLIP, a
    category's probability is the softmax of the post's similarity to that category against its
    similarity to the neutral prompts; SigLIP models carry a learned bias and are used pairwise
    through their sigmoid. Image and text are scored separately and fused by taking the larger
    score: harm in either modality is harm.
    """

    def __init__(self, source: str, heads: HeadSpec, device: str = "auto") -> None:
        self.device = resolve_device(device)
        self.dtype = inference_dtype(self.device)
        self.processor = AutoProcessor.from_pretrained(source)
        self.model = AutoModel.from_pretrained(source, dtype=self.dtype).to(self.device).eval()
        self.heads = heads
        self._is_siglip = getattr(self.model, "logit_bias", None) is not None
        self._text_kwargs = {"padding": "max_length" if self._is_siglip else True, "truncation": True}
        self._category_emb = torch.stack([self._embed_prompts(list(c.prompts)) for c in heads.categories])
        self._neutral_emb = self._embed_prompts(list(heads.neutral_prompts))
        name = Path(source).name if Path(source).is_dir() else source
        weights = _weights_digest(source)
        self._info = ModelInfo(
            name=name,
            version=f"{weights}+zs.{heads.fingerprint()}",
            components={"encoder": f"{type(self.model).__name__}:{name}@{weights}", "heads": f"zero-shot@{heads.fingerprint()}"},
        )

    @property
    def info(self) -> ModelInfo:
        return self._info

    @torch.inference_mode()
    def _encode_text(self, texts: list[str]) -> torch.Tensor:
        batch = self.processor(text=texts, return_tensors="pt", **self._text_kwargs).to(self.device)
        out = self.model.get_text_features(**{k: v for k, v in batch.items() if k in {"input_ids", "attention_mask"}})
        features = out.pooler_output if hasattr(out, "pooler_output") else out
        return torch.nn.functional.normalize(features.float(), dim=-1)

    @torch.inference_mode()
    def _encode_images(self, images: list) -> torch.Tensor:
        batch = self.processor(images=images, return_tensors="pt")
        pixels = batch["pixel_values"].to(self.device, self.dtype)
        if self.device.type == "cuda":
            pixels = pixels.contiguous(memory_format=torch.channels_last)
        out = self.model.get_image_features(pixel_values=pixels)
        features = out.pooler_output if hasattr(out, "pooler_output") else out
        return torch.nn.functional.normalize(features.float(), dim=-1)

    def _embed_prompts(self, prompts: list[str]) -> torch.Tensor:
        return torch.nn.functional.normalize(self._encode_text(prompts).mean(dim=0), dim=-1)

    def _probabilities(self, emb: torch.Tensor) -> torch.Tensor:
        """(n, d) embeddings -> (n, categories) probabilities."""
        scale = self.model.logit_scale.float().exp()
        sim = emb @ self._category_emb.T
        if self._is_siglip:
            return torch.sigmoid(sim * scale + self.model.logit_bias.float())
        return torch.sigmoid(scale * (sim - (emb @ self._neutral_emb).unsqueeze(-1)))

    @torch.inference_mode()
    def score_batch(self, items: Sequence[ModelInput]) -> list[dict[str, float]]:
        """Score every input in one forward pass per modality."""
        probs = torch.zeros(len(items), len(self.heads.categories))
        text_idx = [i for i, item in enumerate(items) if item.text]
        image_idx = [i for i, item in enumerate(items) if item.image is not None]
        if text_idx:
            text_probs = self._probabilities(self._encode_text([items[i].text or "" for i in text_idx])).cpu()
            probs[text_idx] = torch.maximum(probs[text_idx], text_probs)
        if image_idx:
            image_probs = self._probabilities(self._encode_images([items[i].image for i in image_idx])).cpu()
            probs[image_idx] = torch.maximum(probs[image_idx], image_probs)
        names = self.heads.names
        return [{name: round(float(p), 6) for name, p in zip(names, row, strict=True)} for row in probs]
