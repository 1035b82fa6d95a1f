"""MiniLM's top transformer layers, fine-tuned on the labeled set, for the trained heads' features.

The offline stack runs MiniLM once per text; the zero-shot heads read its final layer as shipped,
and the trained heads read the same text through a fine-tuned copy of the top ``depth`` layers,
branched from the hidden states below them. The bottom layers are shared, so the text cost grows
by ``depth`` of six layers. Only the copy's biases and LayerNorm parameters are tuned (BitFit):
out of fold they generalised as well as tuning whole layers, and they store in a few KB. They are
kept next to the heads (``text-layers.safetensors``, fp16) and their digest is part of the encoder
id: heads trained on the frozen features do not load on the tuned ones, and the other way round.
"""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

TUNED_LAYERS_FILE = "text-layers.safetensors"


def is_tuned(parameter: str) -> bool:
    """Whether tuning changes a layer parameter: biases and LayerNorm (BitFit); weights stay shipped."""
    return parameter.endswith(".bias") or ".LayerNorm." in parameter


def mean_pooled(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over the real tokens, unit length (sentence-transformers' recipe for this model)."""
    weights = mask.unsqueeze(-1).float()
    pooled = (hidden.float() * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)
    return torch.nn.functional.normalize(pooled, dim=-1)


def run_layers(layers: torch.nn.ModuleList, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Transformer layers over ``(n, tokens, dim)`` hidden states with an additive padding mask."""
    additive = (1 - mask[:, None, None, :].to(hidden.dtype)) * torch.finfo(hidden.dtype).min
    for layer in layers:
        out = layer(hidden, attention_mask=additive)
        hidden = out[0] if isinstance(out, tuple) else out
    return hidden


class TunedLayers(torch.nn.Module):
    """A trainable copy of a BERT model's top ``depth`` layers."""

    def __init__(self, layers: torch.nn.ModuleList, base: str) -> None:
        super().__init__()
        self.layers = layers
        self.base = base  # the text encoder's version: these weights only fit that model

    @property
    def depth(self) -> int:
        return len(self.layers)

    @classmethod
    def branch(cls, model: torch.nn.Module, depth: int, base: str) -> TunedLayers:
        """Copies of ``model``'s top ``depth`` layers, in float32 (the starting point of tuning)."""
        top = model.encoder.layer[len(model.encoder.layer) - depth :]
        layers = copy.deepcopy(torch.nn.ModuleList(top)).float()
        for name, param in layers.named_parameters():
            param.requires_grad_(is_tuned(name))
        return cls(layers, base)

    def tuned_parameters(self) -> list[torch.nn.Parameter]:
        """The parameters tuning trains (and ``save`` stores)."""
        return [p for name, p in self.layers.named_parameters() if is_tuned(name)]

    def embed(self, below: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Unit-length sentence embeddings from the hidden states under the top ``depth`` layers."""
        dtype = next(self.layers.parameters()).dtype
        return mean_pooled(run_layers(self.layers, below.to(dtype), mask), mask)

    def _tensors(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().to(torch.float16).contiguous() for k, v in self.layers.named_parameters() if is_tuned(k)}

    @property
    def version(self) -> str:
        """Digest of the stored (fp16) weights, depth and base model."""
        digest = hashlib.sha256(json.dumps({"depth": self.depth, "base": self.base}, sort_keys=True).encode())
        for key, tensor in sorted(self._tensors().items()):
            digest.update(key.encode())
            digest.update(tensor.numpy().tobytes())
        return digest.hexdigest()[:10]

    def save(self, directory: Path) -> Path:
        """Write the tuned parameters as fp16 safetensors (the version is that of the stored weights)."""
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / TUNED_LAYERS_FILE
        meta = {"depth": str(self.depth), "base": self.base, "version": self.version}
        save_file(self._tensors(), path, metadata=meta)
        return path

    @classmethod
    def load(cls, path: Path, model: torch.nn.Module, base: str) -> TunedLayers:
        """Read parameters written by ``save`` onto a copy of ``model``'s top layers; refuses another base."""
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
        if meta.get("base") != base:
            raise ValueError(f"{path}: tuned for text encoder {meta.get('base')!r}, active is {base!r}")
        tuned = cls.branch(model, int(meta["depth"]), base)
        stored = load_file(str(path))
        expected = {name for name, _ in tuned.layers.named_parameters() if is_tuned(name)}
        if set(stored) != expected:
            raise ValueError(f"{path}: holds {len(stored)} tensors, not the {len(expected)} tuned parameters")
        tuned.layers.load_state_dict({k: v.float() for k, v in stored.items()}, strict=False)
        tuned.eval()
        if meta.get("version") and meta["version"] != tuned.version:
            raise ValueError(f"{path}: weights do not match version {meta['version']} (got {tuned.version})")
        return tuned
