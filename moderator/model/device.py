"""Pick the torch device and dtype: CUDA when present (half precision), CPU otherwise."""

from __future__ import annotations

import torch


def resolve_device(requested: str = "auto") -> torch.device:
    """``auto`` means CUDA when available, else CPU; an explicit ``cuda`` without a GPU is an error."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("MODERATOR_DEVICE=cuda but no CUDA device is available")
    return torch.device(requested)


def inference_dtype(device: torch.device) -> torch.dtype:
    """bf16 where the GPU supports it, fp16 on older GPUs, fp32 on CPU."""
    if device.type != "cuda":
        return torch.float32
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
