"""Tiny randomly initialised CLIP/SigLIP checkpoints written to disk, loadable like real ones.

Used by the tests and benchmarks: no download, seconds to build, and they go through exactly the
same loading and scoring code as a real checkpoint.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer


def _bytes_to_unicode() -> dict[int, str]:
    """The byte-level BPE alphabet (GPT-2/CLIP): every byte maps to a printable character."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    codes = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            codes.append(256 + extra)
            extra += 1
    return dict(zip(printable, [chr(c) for c in codes], strict=True))


def _write_char_level_bpe(directory: Path) -> dict[str, int]:
    """A complete byte-level BPE vocabulary with no merges: every character is a token."""
    chars = list(_bytes_to_unicode().values())
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": len(chars) + i for i, c in enumerate(chars)})
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    (directory / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (directory / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
    return vocab


def build_tiny_clip(directory: Path, *, seed: int = 0, image_size: int = 32, hidden: int = 32) -> Path:
    """Save a tiny random CLIP model and its processor (tokenizer + image processor) to ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    vocab = _write_char_level_bpe(directory)
    eos = vocab["<|endoftext|>"]
    torch.manual_seed(seed)
    config = CLIPConfig(
        text_config={
            "vocab_size": len(vocab),
            "hidden_size": hidden,
            "intermediate_size": hidden * 2,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "max_position_embeddings": 77,
            "bos_token_id": vocab["<|startoftext|>"],
            "eos_token_id": eos,
            "pad_token_id": eos,
        },
        vision_config={
            "hidden_size": hidden,
            "intermediate_size": hidden * 2,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "image_size": image_size,
            "patch_size": 8,
        },
        projection_dim=16,
    )
    CLIPModel(config).save_pretrained(directory)
    tokenizer = CLIPTokenizer(str(directory / "vocab.json"), str(directory / "merges.txt"), model_max_length=77)
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
    )
    CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(directory)
    return directory
