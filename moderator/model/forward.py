"""The model stage of a dual encoder: prepared batches in, normalised text and image embeddings out.

Shared by ``DualEncoderClassifier`` and the GPU benchmark (``moderator.bench.gpu``), so the
benchmark measures the service's own forward path. Imports only torch, numpy and the preparation
module: it runs where only torch, transformers, numpy and Pillow are installed.

On CUDA: token ids and uint8 pixels go through pinned memory with non-blocking copies, pixels are
converted and normalised on the GPU, image batches are padded to bucketed sizes, and JPEGs the
preparation stage left undecoded are decoded by nvjpeg (``torchvision.io.decode_jpeg`` on the
device, batched), resized and cropped on the GPU, with a CPU decode for any the GPU refuses.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image

from moderator.model.prepare import ImageRecipe, PreparedBatch, Preparer, bucket, to_device_pixels

log = logging.getLogger(__name__)


def nvjpeg_available(device: torch.device) -> bool:
    """Whether JPEGs can be decoded on ``device``: CUDA with torchvision's nvjpeg bindings importable."""
    if device.type != "cuda":
        return False
    try:
        from torchvision.io import decode_jpeg  # noqa: F401
    except Exception:  # noqa: BLE001 - missing or broken torchvision: decode on the CPU
        return False
    return True


class DualEncoderForward:
    """Text and image towers of a CLIP/SigLIP model run on ``PreparedBatch`` es."""

    def __init__(self, model: Any, preparer: Preparer, device: torch.device, dtype: torch.dtype) -> None:
        self.model = model
        self.siglip = is_siglip(model)
        self.preparer = preparer
        self.device = device
        self.dtype = dtype
        recipe = preparer.recipe
        self.scale_shift = recipe.scale_shift(device) if recipe is not None else None
        # Padding batches to a few sizes only pays where kernels are picked per shape (CUDA).
        self.bucketed = device.type == "cuda"
        self.gpu_decode = recipe is not None and nvjpeg_available(device)
        text_config = getattr(model.config, "text_config", None)
        self.max_tokens = int(getattr(text_config, "max_position_embeddings", 0) or 0)

    @staticmethod
    def text_kwargs(model: Any) -> dict[str, Any]:
        """Tokenizer arguments: SigLIP was trained on max-length padding and its text tower expects it."""
        return {"padding": "max_length" if is_siglip(model) else True, "truncation": True}

    def _to_device(self, array: np.ndarray) -> torch.Tensor:
        tensor = torch.from_numpy(array)
        if self.device.type == "cuda":
            return tensor.pin_memory().to(self.device, non_blocking=True)
        return tensor

    @torch.inference_mode()
    def text_inputs(self, input_ids: np.ndarray,
                    attention_mask: np.ndarray) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Token ids and mask on the device: the text tower's host-to-device step.

        A batch without padding (every batch of one) goes without a mask and unbucketed:
        transformers reads a mask it is given back to the host to look for padding
        (``padding_mask.all()`` in its SDPA mask code), which on CUDA stalls the host until the
        copies before it are done, and padding added by bucketing would make it build a full mask,
        which keeps SDPA off its flash kernel. Padded batches have their length bucketed on CUDA (a
        few shapes, not every length).
        """
        if attention_mask.all():
            return self._to_device(input_ids), None
        extra = -input_ids.shape[1] % 8
        if self.bucketed and extra and input_ids.shape[1] + extra <= self.max_tokens:
            input_ids = np.pad(input_ids, ((0, 0), (0, extra)), constant_values=self.preparer.pad_id)
            attention_mask = np.pad(attention_mask, ((0, 0), (0, extra)))
        return self._to_device(input_ids), self._to_device(attention_mask)

    @torch.inference_mode()
    def text_forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        """(m, d) L2-normalised float32 embeddings of tokens already on the device."""
        out = self.model.get_text_features(input_ids=input_ids, attention_mask=attention_mask)
        features = out.pooler_output if hasattr(out, "pooler_output") else out
        return torch.nn.functional.normalize(features.float(), dim=-1)

    def text_features(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> torch.Tensor:
        """(m, d) L2-normalised float32 text embeddings."""
        return self.text_forward(*self.text_inputs(input_ids, attention_mask))

    @torch.inference_mode()
    def image_inputs(self, batch: PreparedBatch) -> tuple[list[int], torch.Tensor | None]:
        """The rows with an image and their normalised pixels on the device (batch bucketed on CUDA):
        the image tower's host-to-device step, with nvjpeg decoding where JPEGs were left to the GPU."""
        rows: list[int] = []
        pixels: list[torch.Tensor] = []
        if batch.pixels is not None and len(batch.pixels):
            assert self.scale_shift is not None
            rows += batch.image_rows
            pixels.append(to_device_pixels(batch.pixels, self.device, self.dtype, *self.scale_shift))
        elif batch.pixel_values is not None and len(batch.pixel_values):
            rows += batch.image_rows
            pixels.append(batch.pixel_values.to(self.device, self.dtype))
        if batch.jpegs:
            rows += batch.jpeg_rows
            pixels.append(self.decode_jpegs(batch.jpegs))
        if not rows:
            return rows, None
        x = torch.cat(pixels) if len(pixels) > 1 else pixels[0]
        k = len(rows)
        if self.bucketed and bucket(k) > k:
            x = torch.cat([x, x.new_zeros((bucket(k) - k, *x.shape[1:]))])
        if self.device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        return rows, x

    @torch.inference_mode()
    def image_forward(self, pixels: torch.Tensor, count: int) -> torch.Tensor:
        """(count, d) L2-normalised float32 embeddings of the first ``count`` images of ``pixels`` (the rest pad)."""
        out = self.model.get_image_features(pixel_values=pixels)
        features = out.pooler_output if hasattr(out, "pooler_output") else out
        return torch.nn.functional.normalize(features[:count].float(), dim=-1)

    def image_features(self, batch: PreparedBatch) -> tuple[list[int], torch.Tensor]:
        """The rows with an image and their (k, d) L2-normalised float32 embeddings, one forward pass."""
        rows, pixels = self.image_inputs(batch)
        if pixels is None:
            return rows, torch.empty(0)
        return rows, self.image_forward(pixels, len(rows))

    def zero_shot_logits(self, emb: torch.Tensor, categories: torch.Tensor, neutral: torch.Tensor) -> torch.Tensor:
        """(n, d) embeddings -> (n, c) zero-shot logits against (c, d) category prompt embeddings.

        CLIP: the scaled similarity to the category minus that to the neutral prompts (d,). SigLIP
        was trained with a sigmoid loss and a learned bias, so its pairwise logit is used as is.
        """
        scale = self.model.logit_scale.float().exp()
        sim = emb @ categories.T
        if self.siglip:
            return sim * scale + self.model.logit_bias.float()
        return scale * (sim - (emb @ neutral).unsqueeze(-1))

    def decode_jpegs(self, jpegs: Sequence[bytes]) -> torch.Tensor:
        """Normalised (j, 3, h, w) pixels of JPEGs decoded by nvjpeg, resized and cropped on the GPU.

        A batch the GPU refuses is retried image by image, and an image it refuses alone is decoded
        on the CPU (Pillow) and prepared the usual way: one odd file never fails the batch.
        """
        from torchvision.io import ImageReadMode, decode_jpeg

        recipe = self.preparer.recipe
        assert recipe is not None and self.scale_shift is not None
        data = [torch.frombuffer(bytearray(b), dtype=torch.uint8) for b in jpegs]
        try:
            decoded: list[torch.Tensor | None] = list(
                decode_jpeg(data, mode=ImageReadMode.RGB, device=self.device, apply_exif_orientation=True))
        except RuntimeError:
            decoded = []
            for one in data:
                try:
                    decoded.append(decode_jpeg(one, mode=ImageReadMode.RGB, device=self.device,
                                               apply_exif_orientation=True))
                except RuntimeError as exc:
                    log.info("nvjpeg refused an image (%s); decoding it on the CPU", exc)
                    decoded.append(None)
        out = []
        for raw, image in zip(jpegs, decoded, strict=True):
            out.append(resize_crop_on_device(image, recipe) if image is not None else self._cpu_pixels(raw, recipe))
        x = torch.stack(out).float()
        scale, shift = self.scale_shift
        return torch.addcmul(shift, x, scale).to(self.dtype)

    def _cpu_pixels(self, data: bytes, recipe: ImageRecipe) -> torch.Tensor:
        height, width = recipe.output_hw
        pixels = np.empty((height, width, 3), dtype=np.uint8)
        with Image.open(io.BytesIO(data)) as image:
            recipe.pixels_into(image.convert("RGB"), pixels)
        return torch.from_numpy(pixels).to(self.device).permute(2, 0, 1)


def resize_crop_on_device(image: torch.Tensor, recipe: ImageRecipe) -> torch.Tensor:
    """(3, h, w) uint8 on the GPU -> the recipe's resize (antialiased, as Pillow) and crop, uint8."""
    height, width = image.shape[-2:]
    new_w, new_h = recipe.resized_wh(int(width), int(height))
    mode = {Image.Resampling.BILINEAR: "bilinear", Image.Resampling.BICUBIC: "bicubic"}.get(recipe.resample, "bicubic")
    resized = torch.nn.functional.interpolate(image[None].float(), size=(new_h, new_w), mode=mode, antialias=True,
                                              align_corners=False)[0]
    if recipe.crop is not None:
        ch, cw = recipe.crop
        top, left = (new_h - ch) // 2, (new_w - cw) // 2
        resized = resized[:, top : top + ch, left : left + cw]
    return resized.round_().clamp_(0, 255).to(torch.uint8)


def is_siglip(model: Any) -> bool:
    """SigLIP scores pairs with a learned bias; CLIP has none."""
    return getattr(model, "logit_bias", None) is not None


def row_index(rows: list[int], count: int, device: torch.device) -> slice | torch.Tensor:
    """An index selecting ``rows`` (in that order) of a ``count``-row tensor on ``device``.

    All rows in order (every post has text; every photo post has an image) is a slice: no index
    tensor at all. Otherwise the index goes through pinned memory with a non-blocking copy: a
    Python list or a pageable tensor used as a CUDA index is copied synchronously, which stalls
    the host until the kernels queued before it (a whole tower) have run.
    """
    if rows == list(range(count)):
        return slice(None)
    index = torch.tensor(rows, dtype=torch.long)
    if device.type == "cuda":
        return index.pin_memory().to(device, non_blocking=True)
    return index
