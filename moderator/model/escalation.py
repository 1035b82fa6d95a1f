"""Optional escalation tier: ask a generative vision-language model for a verdict.

For posts whose scores fall in a policy's uncertainty band, an instruction-tuned VLM (any
transformers image-text-to-text checkpoint with a chat template) is shown the post and the
policy's categories with their descriptions, in the Llama Guard / ShieldGemma style, and answers
``safe`` or ``unsafe`` plus the violated categories. Its answer is parsed defensively: models
ramble, change case, answer in JSON or with category codes, and random or broken models answer
garbage, which must come back as "no verdict" and never as "safe".

The policy engine decides when to call ``VlmEscalator.assess`` (see ``in_uncertainty_band``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoModelForImageTextToText, AutoProcessor
from transformers.utils import logging as hf_logging

from moderator.model.base import HeadSpec, ModelInfo, ModelInput
from moderator.model.device import inference_dtype, resolve_device
from moderator.model.versions import directory_digest

_MAX_POST_CHARS = 2000


@dataclass(frozen=True)
class VlmAnswer:
    """A parsed answer. ``unsafe`` is None when the answer could not be read."""

    unsafe: bool | None
    categories: tuple[str, ...]
    raw: str

    @property
    def parsed(self) -> bool:
        return self.unsafe is not None


def category_codes(spec: HeadSpec) -> dict[str, str]:
    """Llama Guard style codes: ``S1`` for the first category, and so on."""
    return {f"S{i}": c.name for i, c in enumerate(spec.categories, start=1)}


def build_prompt(spec: HeadSpec, text: str | None, *, has_image: bool) -> str:
    """The instruction: categories with descriptions, the post, and the required answer format."""
    lines = [
        (
            "Task: Check if there is unsafe content in the user's post according to our safety policy "
            "with the below categories."
        ),
        "<BEGIN UNSAFE CONTENT CATEGORIES>",
    ]
    for code, category in zip(category_codes(spec), spec.categories, strict=True):
        description = category.description or "; ".join(category.prompts)
        lines.append(f"{code}: {category.name}. {description}")
    lines += ["<END UNSAFE CONTENT CATEGORIES>", "<BEGIN POST>"]
    if has_image:
        lines.append("[the attached image]")
    if text:
        lines.append(f"Caption: {text[:_MAX_POST_CHARS]}")
    lines += [
        "<END POST>",
        "Provide your safety assessment for the post above:",
        "- The first line must read 'safe' or 'unsafe'.",
        "- If unsafe, a second line must list the violated categories, comma-separated.",
    ]
    return "\n".join(lines)


_WORD = re.compile(r"[a-z0-9_]+")


def _categories_in(text: str, spec: HeadSpec) -> tuple[str, ...]:
    codes = {code.lower(): name for code, name in category_codes(spec).items()}
    names = set(spec.names)
    found: list[str] = []
    for word in _WORD.findall(text.lower()):
        name = codes.get(word) or (word if word in names else None)
        if name and name not in found:
            found.append(name)
    return tuple(found)


def parse_verdict(output: str, spec: HeadSpec) -> VlmAnswer:
    """Read ``safe``/``unsafe`` and the violated categories from a model's answer.

    Accepts the plain two-line format, any case and surrounding chatter, category names or
    ``S<n>`` codes, and JSON objects with a ``verdict``/``safe``/``unsafe`` field. The first
    safe/unsafe word decides; an answer without one is unparsed (``unsafe is None``).
    """
    raw = output
    text = output.strip()
    match = re.search(r"\{.*\}", text, flags=re.DOTALL)
    if match:
        try:
            payload = json.loads(match.group(0))
        except ValueError:
            payload = None
        if isinstance(payload, Mapping):
            return _from_json(payload, spec, raw)
    first = re.search(r"\b(unsafe|safe)\b", text, flags=re.IGNORECASE)
    if first is None:
        return VlmAnswer(None, (), raw)
    unsafe = first.group(1).lower() == "unsafe"
    categories = _categories_in(text[first.end() :], spec) if unsafe else ()
    return VlmAnswer(unsafe, categories, raw)


def _from_json(payload: Mapping[str, object], spec: HeadSpec, raw: str) -> VlmAnswer:
    verdict = payload.get("verdict", payload.get("rating", payload.get("assessment")))
    if isinstance(verdict, str) and verdict.strip().lower() in {"safe", "unsafe"}:
        unsafe: bool | None = verdict.strip().lower() == "unsafe"
    elif isinstance(payload.get("unsafe"), bool):
        unsafe = bool(payload["unsafe"])
    elif isinstance(payload.get("safe"), bool):
        unsafe = not payload["safe"]
    else:
        return VlmAnswer(None, (), raw)
    listed = payload.get("categories", payload.get("violated_categories", []))
    text = " ".join(str(c) for c in listed) if isinstance(listed, list) else str(listed)
    return VlmAnswer(unsafe, _categories_in(text, spec) if unsafe else (), raw)


def in_uncertainty_band(scores: Mapping[str, float], low: float, high: float) -> list[str]:
    """Categories whose score lies in ``[low, high)``: where a second opinion is worth its cost."""
    return [name for name, score in scores.items() if low <= score < high]


class VlmEscalator:
    """Runs a transformers vision-language model on posts and parses its verdicts."""

    def __init__(self, source: str, spec: HeadSpec, *, device: str = "auto", max_new_tokens: int = 24) -> None:
        hf_logging.disable_progress_bar()
        self.spec = spec
        self.device = resolve_device(device)
        self.processor = AutoProcessor.from_pretrained(source)
        # Decoder-only generation continues from the right end: pad on the left.
        self.processor.tokenizer.padding_side = "left"
        self.model = (
            AutoModelForImageTextToText.from_pretrained(source, dtype=inference_dtype(self.device))
            .to(self.device)
            .eval()
        )
        self.max_new_tokens = max_new_tokens
        name = Path(source).name if Path(source).is_dir() else source
        weights = directory_digest(Path(source)) if Path(source).is_dir() else source
        self.info = ModelInfo(
            name=name,
            version=f"{weights}+{spec.fingerprint()}",
            components={"escalation_vlm": f"{type(self.model).__name__}:{name}@{weights}"},
        )

    def _messages(self, item: ModelInput) -> list[dict[str, object]]:
        content: list[dict[str, str]] = [{"type": "image"}] if item.image is not None else []
        content.append({"type": "text", "text": build_prompt(self.spec, item.text, has_image=item.image is not None)})
        return [{"role": "user", "content": content}]

    @torch.inference_mode()
    def _generate(self, items: Sequence[ModelInput]) -> list[str]:
        prompts = [self.processor.apply_chat_template(self._messages(i), add_generation_prompt=True) for i in items]
        images = [i.image for i in items if i.image is not None]
        inputs = self.processor(text=prompts, images=images or None, return_tensors="pt", padding=True)
        inputs = inputs.to(self.device)
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(self.model.dtype)
        out = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False)
        return self.processor.batch_decode(out[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)

    def assess(self, items: Sequence[ModelInput]) -> list[VlmAnswer]:
        """One verdict per post, in order. Posts with and without images run as separate batches."""
        answers: dict[int, str] = {}
        for with_image in (True, False):
            idx = [i for i, item in enumerate(items) if (item.image is not None) == with_image]
            if idx:
                answers.update(zip(idx, self._generate([items[i] for i in idx]), strict=True))
        return [parse_verdict(answers[i], self.spec) for i in range(len(items))]
