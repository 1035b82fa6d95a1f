"""Read text rendered into images with the PP-OCRv4 models packaged in ``rapidocr-onnxruntime``.

Kept cheap: images are downscaled to a capped side before detection, the text-direction
classifier is skipped (rendered captions are upright), recognition runs only on images where
detection found text, and the crops of a whole batch are recognised together.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
from PIL import Image

from moderator.model.versions import package_version

_DISTRIBUTION = "rapidocr-onnxruntime"
# Detection cost grows with pixels; 960 px keeps meme-sized text legible and costs ~60 ms.
MAX_SIDE = 960
_MIN_CONFIDENCE = 0.5
_REC_BATCH = 16


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
        self.version = f"{_DISTRIBUTION} {package_version(_DISTRIBUTION)} (PP-OCRv4 det+rec, side<={MAX_SIDE})"

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

    def read(self, images: Sequence[Image.Image]) -> list[str]:
        """One string per image; empty where no text was found."""
        crops_per_image = [self._detect(image) for image in images]
        all_crops = [crop for crops in crops_per_image for crop in crops]
        if not all_crops:
            return ["" for _ in images]
        recognised, _ = self._engine.text_rec(all_crops)
        texts: list[str] = []
        position = 0
        for crops in crops_per_image:
            lines = [
                text.strip()
                for text, score, *_ in recognised[position : position + len(crops)]
                if float(score) >= _MIN_CONFIDENCE and text.strip()
            ]
            position += len(crops)
            texts.append(" ".join(lines))
        return texts
