"""Read text rendered into images with the PP-OCRv4 models packaged in ``rapidocr-onnxruntime``.

Kept cheap: images are downscaled to a capped side before detection, the text-direction
classifier is skipped (rendered captions are upright), recognition runs only on images where
detection found text, and the crops of a whole batch are recognised together.

Deterministic: an image reads the same alone or in any batch. The recogniser attends across the
whole padded line, so rapidocr's own batching, which pads every crop to the widest in its batch,
made the spacing it reads ("good dog" / "gooddog") depend on the neighbours. Here each crop is
padded to a width of its own (the model's default, or its own aspect ratio when wider), and only
crops of the same width share a forward pass.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
from PIL import Image

from moderator.model.onnx_session import rebuilt
from moderator.model.versions import package_version

_DISTRIBUTION = "rapidocr-onnxruntime"
# Detection cost grows with pixels; 960 px keeps meme-sized text legible and costs ~60 ms.
MAX_SIDE = 960
_MIN_CONFIDENCE = 0.5
# Recognition gains nothing from large batches on CPU: per crop, a batch of 16 costs ~1.6x a batch
# of 1-4 (activations outgrow the caches), so crops of one width go through in chunks of 4.
_REC_BATCH = 4


class OcrReader:
    """Text found in each image of a batch, lines joined with spaces in reading order."""

    def __init__(self, *, use_cuda: bool = False) -> None:
        from rapidocr_onnxruntime import RapidOCR

        # rapidocr logs every call at INFO; the service's logs should not.
        logging.getLogger("RapidOCR").setLevel(logging.WARNING)
        self._engine = RapidOCR(
            det_limit_type="max",
            det_limit_side_len=MAX_SIDE,
            use_cls=False,
            rec_batch_num=_REC_BATCH,
            det_use_cuda=use_cuda,
            rec_use_cuda=use_cuda,
        )
        # rapidocr builds default sessions (spinning thread pools); it never enables the arena.
        for holder in (self._engine.text_det.infer, self._engine.text_rec.session):
            holder.session = rebuilt(holder.session, cpu_memory_arena=False)
        self.sessions = (self._engine.text_det.infer.session, self._engine.text_rec.session.session)
        self.version = (f"{_DISTRIBUTION} {package_version(_DISTRIBUTION)} "
                        f"(PP-OCRv4 det+rec, side<={MAX_SIDE}, rec padded per crop)")

    def _detect(self, image: Image.Image) -> list[np.ndarray]:
        """Crops of the text lines found in one image, top to bottom."""
        rgb = image if image.mode == "RGB" else image.convert("RGB")
        if max(rgb.size) > MAX_SIDE:
            rgb = rgb.copy()
            rgb.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.BILINEAR)
        bgr = np.ascontiguousarray(np.asarray(rgb)[:, :, ::-1])
        bgr, _, _ = self._engine.preprocess(bgr)
        bgr, _ = self._engine.maybe_add_letterbox(bgr, {})
        boxes, _ = self._engine.auto_text_det(bgr)
        if boxes is None:
            return []
        return list(self._engine.get_crop_img_list(bgr, boxes))

    def _recognise(self, crops: Sequence[np.ndarray]) -> list[tuple[str, float]]:
        """Text and confidence of each crop, each padded to its own width (see module docstring)."""
        rec = self._engine.text_rec
        _, height, default_width = rec.rec_image_shape
        ratios = [max(default_width / height, crop.shape[1] / crop.shape[0]) for crop in crops]
        by_width: dict[int, list[int]] = {}
        for i, ratio in enumerate(ratios):
            by_width.setdefault(int(height * ratio), []).append(i)  # the padded width resize_norm_img makes
        results: list[tuple[str, float]] = [("", 0.0)] * len(crops)
        for indices in by_width.values():
            for start in range(0, len(indices), _REC_BATCH):
                chunk = indices[start : start + _REC_BATCH]
                batch = np.stack([rec.resize_norm_img(crops[i], ratios[i]) for i in chunk]).astype(np.float32)
                for i, (text, score, *_) in zip(chunk, rec.postprocess_op(rec.session(batch)[0]), strict=True):
                    results[i] = (text, float(score))
        return results

    def read(self, images: Sequence[Image.Image]) -> list[str]:
        """One string per image; empty where no text was found."""
        crops_per_image = [self._detect(image) for image in images]
        all_crops = [crop for crops in crops_per_image for crop in crops]
        if not all_crops:
            return ["" for _ in images]
        recognised = self._recognise(all_crops)
        texts: list[str] = []
        position = 0
        for crops in crops_per_image:
            lines = [
                text.strip()
                for text, score in recognised[position : position + len(crops)]
                if score >= _MIN_CONFIDENCE and text.strip()
            ]
            position += len(crops)
            texts.append(" ".join(lines))
        return texts
