"""Tiny randomly initialised checkpoints written to disk, loadable like real ones.

CLIP and SigLIP dual encoders and a LLaVA-style vision-to-text model, each saved with its
processor (tokenizer + image processor). Used by the tests and benchmarks: no download, seconds
to build, and they go through exactly the same loading and scoring code as a real checkpoint.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from transformers import (
    CLIPConfig,
    CLIPImageProcessorPil,
    CLIPModel,
    CLIPProcessor,
    CLIPTokenizer,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
    PreTrainedTokenizerFast,
    SiglipConfig,
    SiglipImageProcessorPil,
    SiglipModel,
    SiglipProcessor,
    SiglipTextConfig,
    SiglipVisionConfig,
)
from transformers.utils import logging as hf_logging

# Text the tiny SentencePiece model is trained on: enough distinct pieces for a real vocabulary.
_SPM_CORPUS = (
    "an ordinary everyday photo of food pets landscapes and friends",
    "a friendly harmless social media post about the weekend",
    "earn thousands of dollars a week from home click this link",
    "buy illegal drugs online cocaine and pills for sale",
    "a graphic photo of violence and blood a gun pointed at a person",
    "a sexually explicit photo hateful slurs against a group of people",
    "the quick brown fox jumps over the lazy dog 0123456789",
)


def _bytes_to_unicode() -> dict[int, str]:
    """The byte-level BPE alphabet (GPT-2/CLIP): every byte maps to a printable character."""
    printable = (
        list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    )
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
    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
    )
    CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(directory)
    return directory


@contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Silence transformers' warnings while building: SigLIP's default text config carries CLIP's
    special-token ids and warns about them every time, which is noise for a tiny test model."""
    previous = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(previous)


def _train_tiny_sentencepiece(directory: Path) -> Path:
    """A small unigram SentencePiece model trained offline on a fixed corpus (deterministic)."""
    import sentencepiece as spm

    prefix = directory / "spiece"
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(_SPM_CORPUS * 4),
        model_prefix=str(prefix),
        vocab_size=128,
        hard_vocab_limit=False,
        model_type="unigram",
        character_coverage=1.0,
        # SigLIP's layout: pad 0, eos 1, unk 2, no bos.
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        num_threads=1,
        minloglevel=2,
    )
    (directory / "spiece.vocab").unlink()
    return prefix.with_suffix(".model")


def build_tiny_siglip(directory: Path, *, seed: int = 0, image_size: int = 32, hidden: int = 32) -> Path:
    """Save a tiny random SigLIP model with a SentencePiece tokenizer and image processor."""
    from transformers import SiglipTokenizer

    directory.mkdir(parents=True, exist_ok=True)
    max_tokens = 16
    tokenizer = SiglipTokenizer(str(_train_tiny_sentencepiece(directory)), model_max_length=max_tokens)
    torch.manual_seed(seed)
    config = SiglipConfig(
        text_config=SiglipTextConfig(
            vocab_size=tokenizer.vocab_size,
            hidden_size=hidden,
            intermediate_size=hidden * 2,
            num_hidden_layers=2,
            num_attention_heads=2,
            max_position_embeddings=max_tokens,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
            bos_token_id=None,
        ),
        vision_config=SiglipVisionConfig(
            hidden_size=hidden,
            intermediate_size=hidden * 2,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=image_size,
            patch_size=8,
        ),
    )
    with _quiet_transformers():
        SiglipModel(config).save_pretrained(directory)
    image_processor = SiglipImageProcessorPil(size={"height": image_size, "width": image_size})
    SiglipProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(directory)
    return directory


# A plain chat template: role headers, images as the processor's image token, then the answer.
_CHAT_TEMPLATE = (
    "{% for m in messages %}<s>{{ m['role'] }}: "
    "{% for c in m['content'] %}{% if c['type'] == 'image' %}<image>{% else %}{{ c['text'] }}{% endif %}{% endfor %}"
    "</s>{% endfor %}{% if add_generation_prompt %}<s>assistant: {% endif %}"
)


def build_tiny_vlm(directory: Path, *, seed: int = 0, image_size: int = 32, hidden: int = 32) -> Path:
    """Save a tiny random LLaVA (CLIP vision tower + Llama decoder) with a byte-level tokenizer.

    Loadable with ``AutoProcessor`` and ``AutoModelForImageTextToText``, chat template included,
    like the instruction-tuned vision-language models the escalation tier runs in production.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    directory.mkdir(parents=True, exist_ok=True)
    specials = ["<pad>", "<s>", "</s>", "<image>"]
    vocab = {token: i for i, token in enumerate(specials)}
    for char in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab[char] = len(vocab)
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.add_special_tokens(specials)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        extra_special_tokens={"image_token": "<image>"},
    )
    patch = 8
    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
    )
    LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=patch,
        vision_feature_select_strategy="default",
        chat_template=_CHAT_TEMPLATE,
        image_token="<image>",
        num_additional_image_tokens=1,
    ).save_pretrained(directory)
    torch.manual_seed(seed)
    config = LlavaConfig(
        vision_config={
            "model_type": "clip_vision_model",
            "hidden_size": hidden,
            "intermediate_size": hidden * 2,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "image_size": image_size,
            "patch_size": patch,
        },
        text_config={
            "model_type": "llama",
            "vocab_size": len(tokenizer),
            "hidden_size": hidden,
            "intermediate_size": hidden * 2,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "num_key_value_heads": 2,
            "max_position_embeddings": 4096,
            "bos_token_id": vocab["<s>"],
            "eos_token_id": vocab["</s>"],
            "pad_token_id": vocab["<pad>"],
        },
        image_token_index=vocab["<image>"],
        vision_feature_select_strategy="default",
        vision_feature_layer=-1,
    )
    LlavaForConditionalGeneration(config).save_pretrained(directory)
    return directory
