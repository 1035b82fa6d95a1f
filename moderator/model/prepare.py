"""Model-input preparation as its own stage: image pixels and tokens ready before the model thread sees them.

The checkpoint's image processor is reproduced from its saved configuration (``ImageRecipe``):
the same PIL resize (mode and filter), the same center crop and the same rescale and mean/std,
so the fast path feeds the model what the processor would, to float rounding. The slow part of
the processor is moved off the model thread, and its float work onto the device: preparation
writes ``uint8`` pixels (channels last) into one batch array, and the model stage converts and
normalises them where the model runs (``normalise``).

Nothing here imports pydantic or the service: the GPU benchmark imports it on machines that only
have torch, transformers, numpy and Pillow.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from PIL import Image

# A JPEG is decoded at a reduced scale (DCT scaling, ``Image.draft``) only while the decoded image
# keeps this many times the pixels the resize needs along each side, so the resize filter still
# sees real detail: at 2x, scores stay within 1e-3 of a full decode (tests/test_prepare.py).
DRAFT_MARGIN = 2


def cpu_count() -> int:
    """The cores this process may run on (the affinity mask, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS
        return os.cpu_count() or 1


@dataclass(frozen=True)
class ImageRecipe:
    """What a checkpoint's image processor does to an RGB image, as data.

    ``shortest_edge`` (CLIP): resize so the short side has this length, keeping the aspect ratio
    (the long side truncated as the processor does), then center-crop to ``crop`` (height, width).
    ``resize_to`` (SigLIP): resize straight to (height, width), no crop. Then ``x * rescale``,
    minus ``mean``, over ``std``, per channel.
    """

    resample: int
    rescale: float
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    shortest_edge: int | None = None
    crop: tuple[int, int] | None = None
    resize_to: tuple[int, int] | None = None

    @classmethod
    def from_processor(cls, image_processor: Any) -> ImageRecipe | None:
        """The recipe of a transformers image processor, or None when its configuration is one this
        module does not reproduce (then the processor itself is used, still off the model thread)."""
        p = image_processor
        if not (getattr(p, "do_resize", False) and getattr(p, "do_rescale", False)
                and getattr(p, "do_normalize", False)) or getattr(p, "do_pad", False):
            return None
        size = p.size
        mean, std = _triple(p.image_mean), _triple(p.image_std)
        common = {"resample": int(p.resample), "rescale": float(p.rescale_factor), "mean": mean, "std": std}
        shortest = size.get("shortest_edge") if hasattr(size, "get") else getattr(size, "shortest_edge", None)
        height = size.get("height") if hasattr(size, "get") else getattr(size, "height", None)
        width = size.get("width") if hasattr(size, "get") else getattr(size, "width", None)
        longest = size.get("longest_edge") if hasattr(size, "get") else getattr(size, "longest_edge", None)
        if shortest and not longest and getattr(p, "do_center_crop", False):
            crop = p.crop_size
            crop_hw = (int(crop["height"]), int(crop["width"]))
            if max(crop_hw) > shortest:  # the processor pads in this case; not reproduced
                return None
            return cls(**common, shortest_edge=int(shortest), crop=crop_hw)
        if height and width and not getattr(p, "do_center_crop", False):
            return cls(**common, resize_to=(int(height), int(width)))
        return None

    @property
    def output_hw(self) -> tuple[int, int]:
        """(height, width) of the model's input."""
        if self.crop is not None:
            return self.crop
        assert self.resize_to is not None
        return self.resize_to

    @property
    def min_decode_side(self) -> int:
        """The shortest side a reduced decode may have: the resize still downsamples from a margin."""
        if self.shortest_edge is not None:
            return self.shortest_edge * DRAFT_MARGIN
        assert self.resize_to is not None
        return max(self.resize_to) * DRAFT_MARGIN

    def resized_wh(self, width: int, height: int) -> tuple[int, int]:
        """(width, height) after the processor's resize of a ``width`` x ``height`` image."""
        if self.resize_to is not None:
            return self.resize_to[1], self.resize_to[0]
        assert self.shortest_edge is not None
        short, long = (width, height) if width <= height else (height, width)
        new_long = int(self.shortest_edge * long / short)  # truncated, as transformers does
        return (self.shortest_edge, new_long) if width <= height else (new_long, self.shortest_edge)

    def pixels_into(self, image: Image.Image, out: np.ndarray) -> None:
        """Resize and crop an RGB image into ``out`` (height, width, 3) uint8, the processor's way."""
        resized = image.resize(self.resized_wh(*image.size), resample=self.resample)
        if self.crop is not None:
            ch, cw = self.crop
            top, left = (resized.height - ch) // 2, (resized.width - cw) // 2
            resized = resized.crop((left, top, left + cw, top + ch))
        out[...] = np.asarray(resized)

    def scale_shift(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """``x * scale + shift`` equals ``(x * rescale - mean) / std``: one fused op on the device."""
        std = torch.tensor(self.std, dtype=torch.float32)
        scale = (self.rescale / std).view(1, 3, 1, 1)
        shift = (-torch.tensor(self.mean, dtype=torch.float32) / std).view(1, 3, 1, 1)
        return scale.to(device), shift.to(device)


def _triple(values: float | Sequence[float]) -> tuple[float, float, float]:
    if isinstance(values, (int, float)):
        return (float(values),) * 3
    a, b, c = (float(v) for v in values)
    return a, b, c


@dataclass
class PreparedBatch:
    """A batch ready for the model: uint8 pixels of the posts with an image and tokens of those with text.

    ``pixels`` is ``(k, height, width, 3)`` uint8 for the posts at ``image_rows``; ``input_ids`` and
    ``attention_mask`` are ``(m, length)`` for the posts at ``text_rows``. ``pixel_values`` holds
    already normalised float pixels instead of ``pixels`` when the processor itself prepared them.
    """

    size: int
    image_rows: list[int]
    text_rows: list[int]
    pixels: np.ndarray | None = None
    pixel_values: torch.Tensor | None = None
    input_ids: np.ndarray | None = None
    attention_mask: np.ndarray | None = None
    # JPEGs left for the GPU to decode (nvjpeg), for the posts at ``jpeg_rows``.
    jpeg_rows: list[int] = field(default_factory=list)
    jpegs: list[bytes] = field(default_factory=list)

    def __len__(self) -> int:
        return self.size

    @staticmethod
    def join(parts: Sequence[PreparedBatch], pad_id: int) -> PreparedBatch:
        """One batch from several, in order; token rows are right-padded with ``pad_id`` to the longest."""
        if len(parts) == 1:
            return parts[0]
        image_rows, text_rows, jpeg_rows, jpegs, offset = [], [], [], [], 0
        for part in parts:
            image_rows += [offset + r for r in part.image_rows]
            text_rows += [offset + r for r in part.text_rows]
            jpeg_rows += [offset + r for r in part.jpeg_rows]
            jpegs += part.jpegs
            offset += part.size
        pixels = [p.pixels for p in parts if p.pixels is not None and len(p.pixels)]
        values = [p.pixel_values for p in parts if p.pixel_values is not None and len(p.pixel_values)]
        ids = [(p.input_ids, p.attention_mask) for p in parts if p.input_ids is not None and len(p.input_ids)]
        joined = PreparedBatch(size=offset, image_rows=image_rows, text_rows=text_rows, jpeg_rows=jpeg_rows,
                               jpegs=jpegs)
        if pixels:
            joined.pixels = np.concatenate(pixels)
        if values:
            joined.pixel_values = torch.cat(values)
        if ids:
            length = max(i.shape[1] for i, _ in ids)
            joined.input_ids = np.full((len(text_rows), length), pad_id, dtype=np.int64)
            joined.attention_mask = np.zeros((len(text_rows), length), dtype=np.int64)
            row = 0
            for i, m in ids:
                joined.input_ids[row : row + len(i), : i.shape[1]] = i
                joined.attention_mask[row : row + len(i), : m.shape[1]] = m
                row += len(i)
        return joined


class Preparer:
    """Turns (text, RGB image) pairs into a ``PreparedBatch`` for one checkpoint; safe to call from many threads.

    ``recipe`` None: the image ``processor`` itself prepares pixels (a configuration the recipe does
    not reproduce), still on the calling thread.
    """

    def __init__(self, tokenizer: Any, recipe: ImageRecipe | None, text_kwargs: dict[str, Any],
                 processor: Any = None) -> None:
        if recipe is None and processor is None:
            raise ValueError("a Preparer needs an image recipe or the processor to fall back on")
        self.processor = processor
        self.tokenizer = tokenizer
        self.recipe = recipe
        self.text_kwargs = text_kwargs
        self.pad_id = int(self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0)
        # Fast tokenizers mutate their padding/truncation state per call: concurrent calls from the
        # preparation pool would trip over each other ("Already borrowed"). A call takes microseconds.
        self._tokenizer_lock = threading.Lock()

    @classmethod
    def from_processor(cls, processor: Any, text_kwargs: dict[str, Any]) -> Preparer:
        """For a saved checkpoint's processor (tokenizer + image processor)."""
        return cls(processor.tokenizer, ImageRecipe.from_processor(processor.image_processor), text_kwargs, processor)

    @property
    def min_decode_side(self) -> int | None:
        """How small a JPEG may be decoded for this model (None: decode at full size)."""
        return self.recipe.min_decode_side if self.recipe is not None else None

    def __call__(self, texts: Sequence[str | None], images: Sequence[Image.Image | None],
                 jpegs: Sequence[bytes | None] = ()) -> PreparedBatch:
        """Tokens for ``texts``, pixels for ``images``; ``jpegs`` (where given) are kept for the GPU to decode."""
        image_rows = [i for i, image in enumerate(images) if image is not None]
        text_rows = [i for i, text in enumerate(texts) if text]
        jpeg_rows = [i for i, data in enumerate(jpegs) if data is not None]
        batch = PreparedBatch(size=len(texts), image_rows=image_rows, text_rows=text_rows, jpeg_rows=jpeg_rows,
                              jpegs=[jpegs[i] for i in jpeg_rows])  # type: ignore[misc]
        if text_rows:
            with self._tokenizer_lock:  # one call for the whole batch
                tokens = self.tokenizer([texts[i] for i in text_rows], return_tensors="np", **self.text_kwargs)
            batch.input_ids = tokens["input_ids"].astype(np.int64)
            batch.attention_mask = tokens["attention_mask"].astype(np.int64)
        if image_rows:
            present = [images[i] for i in image_rows]
            if self.recipe is None:
                batch.pixel_values = self.processor(images=present, return_tensors="pt")["pixel_values"]
            else:
                height, width = self.recipe.output_hw
                batch.pixels = np.empty((len(present), height, width, 3), dtype=np.uint8)
                for k, image in enumerate(present):
                    self.recipe.pixels_into(image, batch.pixels[k])
        return batch


    def texts_each(self, texts: Sequence[str | None]) -> list[PreparedBatch]:
        """What ``self([text], [None])`` gives each of ``texts``, from one tokenizer call for them all.

        Per call the fast tokenizer's Python wrapping costs more than the tokenising of a short
        post, so the preparation stage tokenises the text-only posts waiting together in one call
        and hands each post its own row: with dynamic padding only the row's unpadded tokens, so a
        post's ids and mask are the ones it would get alone.
        """
        parts = [PreparedBatch(size=1, image_rows=[], text_rows=[0] if text else []) for text in texts]
        rows = [i for i, text in enumerate(texts) if text]
        if not rows:
            return parts
        with self._tokenizer_lock:
            tokens = self.tokenizer([texts[i] for i in rows], return_tensors="np", **self.text_kwargs)
        ids, mask = tokens["input_ids"].astype(np.int64), tokens["attention_mask"].astype(np.int64)
        dynamic = self.text_kwargs.get("padding") is True
        for k, i in enumerate(rows):
            keep = mask[k] == 1 if dynamic else slice(None)
            parts[i].input_ids, parts[i].attention_mask = ids[k][keep][None], mask[k][keep][None]
        return parts


def bucket(n: int) -> int:
    """The batch size a CUDA batch is padded to: powers of two up to 32, then multiples of 32, so
    the allocator and the kernels see a few shapes again and again instead of every size."""
    if n <= 32:
        return 1 << max(0, (n - 1).bit_length())
    return (n + 31) // 32 * 32


def to_device_pixels(pixels: np.ndarray, device: torch.device, dtype: torch.dtype,
                     scale: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """uint8 (k, h, w, 3) on the host -> normalised (k', 3, h, w) ``dtype`` on ``device``.

    On CUDA the uint8 batch goes through pinned memory with a non-blocking copy (4x fewer bytes
    than float), and the conversion and mean/std run on the GPU in channels-last layout, the one
    convolutions prefer.
    """
    host = torch.from_numpy(pixels)
    if device.type == "cuda":
        host = host.pin_memory()
    x = host.to(device, non_blocking=True).permute(0, 3, 1, 2)  # NHWC storage = channels-last NCHW
    x = torch.addcmul(shift, x.float(), scale)
    fmt = torch.channels_last if device.type == "cuda" else torch.contiguous_format
    return x.to(dtype).contiguous(memory_format=fmt)
