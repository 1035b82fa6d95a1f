"""The preparation stage reproduces the checkpoint's image processor: same scores, off the model thread."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoProcessor

from moderator.bench.photos import PHOTO_SIZES, photo_jpeg
from moderator.ingest.errors import IngestError
from moderator.ingest.images import ImageLimits, decode_image
from moderator.ingest.validate import IngestLimits
from moderator.model.base import CategorySpec, HeadSpec, ModelInput, StagedClassifier, WholeBatch, staged
from moderator.model.dual_encoder import DualEncoderClassifier
from moderator.model.forward import resize_crop_on_device
from moderator.model.prepare import ImageRecipe, PreparedBatch, bucket, to_device_pixels
from moderator.pipeline.prepare import Prepare
from moderator.settings import Settings
from moderator.telemetry.instrument import Telemetry
from moderator.testing.tiny_models import build_tiny_clip, build_tiny_siglip

SPEC = HeadSpec(
    categories=(CategorySpec("scam", ("earn money from home",)), CategorySpec("drugs", ("buy illegal drugs",))),
    neutral_prompts=("an ordinary photo",),
)
LIMITS = ImageLimits(max_bytes=10_000_000, max_pixels=40_000_000, max_side=10_000)


@pytest.fixture(scope="module", params=["clip-32", "clip-224", "siglip-32", "siglip-96"])
def classifier(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> DualEncoderClassifier:
    kind, size = request.param.split("-")
    build = {"clip": build_tiny_clip, "siglip": build_tiny_siglip}[kind]
    directory = build(tmp_path_factory.mktemp("models") / request.param, image_size=int(size))
    return DualEncoderClassifier(str(directory), SPEC, device="cpu")


def _processor_path(classifier: DualEncoderClassifier, items: list[ModelInput]) -> list[dict[str, float]]:
    """Scores with pixels from the checkpoint's own image processor (the reference)."""
    prepared = classifier.prepare([ModelInput(item.text, None) for item in items])
    rows = [i for i, item in enumerate(items) if item.image is not None]
    processor = AutoProcessor.from_pretrained(classifier.source)
    values = processor(images=[items[i].image for i in rows], return_tensors="pt")["pixel_values"]
    reference = PreparedBatch(size=len(items), image_rows=rows, text_rows=prepared.text_rows,
                              pixel_values=values, input_ids=prepared.input_ids,
                              attention_mask=prepared.attention_mask)
    return classifier.infer([reference])


def _max_diff(a: list[dict[str, float]], b: list[dict[str, float]]) -> float:
    return max(abs(x[k] - y[k]) for x, y in zip(a, b, strict=True) for k in x)


def test_recipe_pixels_match_the_processor(classifier: DualEncoderClassifier) -> None:
    processor = AutoProcessor.from_pretrained(classifier.source)
    recipe = ImageRecipe.from_processor(processor.image_processor)
    assert recipe is not None
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, size=(h, w, 3), dtype=np.uint8)) for w, h in
              ((97, 61), (61, 97), (300, 300), (33, 40))]
    height, width = recipe.output_hw
    pixels = np.empty((len(images), height, width, 3), dtype=np.uint8)
    for k, image in enumerate(images):
        recipe.pixels_into(image, pixels[k])
    ours = to_device_pixels(pixels, torch.device("cpu"), torch.float32, *recipe.scale_shift(torch.device("cpu")))
    theirs = processor(images=images, return_tensors="pt")["pixel_values"]
    assert ours.shape == theirs.shape
    assert torch.allclose(ours, theirs, atol=1e-5)


def test_scores_on_photos_match_the_processor_path_within_1e_3(classifier: DualEncoderClassifier) -> None:
    """The whole fast path (reduced JPEG decode, recipe, uint8 batch) against a full decode + processor."""
    photos = [photo_jpeg(seed, PHOTO_SIZES[seed % len(PHOTO_SIZES)]) for seed in range(4)]
    side = classifier.min_decode_side()
    assert side is not None
    fast = [ModelInput(f"caption {i}", decode_image(p, LIMITS, min_side=side)) for i, p in enumerate(photos)]
    assert max(fast[0].image.size) < 1080  # type: ignore[union-attr]  # decoded at a reduced scale
    full = [ModelInput(f"caption {i}", decode_image(p, LIMITS)) for i, p in enumerate(photos)]
    items = [*full, ModelInput(None, Image.new("RGB", (50, 70), (9, 99, 199))), ModelInput("text only")]
    assert _max_diff(classifier.score_batch(items), _processor_path(classifier, items)) < 1e-5
    assert _max_diff(classifier.score_batch(fast), _processor_path(classifier, full)) < 1e-3


def test_prepared_posts_joined_score_as_one_batch(classifier: DualEncoderClassifier) -> None:
    """Per-post preparation (the service) and whole-batch preparation (the bench) give the same scores."""
    items = [ModelInput("short"), ModelInput(None, Image.new("RGB", (40, 30), (1, 2, 3))),
             ModelInput("a much longer caption with many more words in it", Image.new("RGB", (64, 64), (200, 0, 0)))]
    together = classifier.score_batch(items)
    apart = classifier.infer([classifier.prepare([item]) for item in items])
    assert _max_diff(together, apart) < 1e-5
    assert classifier.infer([]) == []


def test_staged_view_of_a_plain_classifier_scores_whole_batches() -> None:
    class Plain:
        info = None

        def score_batch(self, items: list[ModelInput]) -> list[dict[str, float]]:
            return [{"n": float(len(item.text or ""))} for item in items]

    view = staged(Plain())  # type: ignore[arg-type]
    assert isinstance(view, WholeBatch) and view.min_decode_side() is None
    parts = [view.prepare([ModelInput("ab")]), view.prepare([ModelInput("abc"), ModelInput("")])]
    assert view.infer(parts) == [{"n": 2.0}, {"n": 3.0}, {"n": 0.0}]


def test_text_posts_prepared_together_get_what_each_gets_alone(classifier: DualEncoderClassifier) -> None:
    texts = ["hi", None, "a caption far longer than the others, " * 12, "buy cheap pills now", "ok"]
    together = classifier.prepare_texts(texts)
    alone = [classifier.prepare([ModelInput(text, None)]) for text in texts]
    for part, single in zip(together, alone, strict=True):
        assert (part.size, part.text_rows, part.image_rows) == (single.size, single.text_rows, single.image_rows)
        for name in ("input_ids", "attention_mask"):
            mine, reference = getattr(part, name), getattr(single, name)
            assert (mine is None) == (reference is None)
            if reference is not None:
                np.testing.assert_array_equal(mine, reference)
    scored = [i for i, text in enumerate(texts) if text]
    assert classifier.infer([together[i] for i in scored]) == classifier.infer([alone[i] for i in scored])


def test_stage_prepares_text_posts_per_classifier_in_their_order(tmp_path: Path) -> None:
    """Posts for two classifiers (a reload mid-stream) in one batch: each gets its own model's tokens."""
    first = DualEncoderClassifier(str(build_tiny_clip(tmp_path / "a", image_size=32)), SPEC, device="cpu")
    second = DualEncoderClassifier(str(build_tiny_siglip(tmp_path / "b", image_size=32)), SPEC, device="cpu")
    pool = Prepare(IngestLimits.from_settings(Settings(_env_file=None)), Telemetry(["model"]), workers=1)  # type: ignore[call-arg]
    items = [(first, "one"), (second, "two words"), (first, "three whole words"), (second, None)]
    prepared = pool.texts_now(items)  # type: ignore[arg-type]
    for (model, text), part in zip(items, prepared, strict=True):
        expected = model.prepare([ModelInput(text, None)])
        assert part.text_rows == expected.text_rows  # type: ignore[attr-defined]
        if expected.input_ids is not None:
            np.testing.assert_array_equal(part.input_ids, expected.input_ids)  # type: ignore[attr-defined]
    asyncio.run(pool.close())


def test_dual_encoder_is_staged(classifier: DualEncoderClassifier) -> None:
    assert isinstance(classifier, StagedClassifier)
    assert staged(classifier) is classifier


def test_bucket_sizes() -> None:
    assert [bucket(n) for n in (1, 2, 3, 5, 9, 31, 32, 33, 65, 128)] == [1, 2, 4, 8, 16, 32, 32, 64, 96, 128]


def test_unsupported_processor_configs_fall_back_to_the_processor(tmp_path: Path) -> None:
    processor = AutoProcessor.from_pretrained(build_tiny_clip(tmp_path / "clip"))
    processor.image_processor.do_center_crop = False
    assert ImageRecipe.from_processor(processor.image_processor) is None


def test_gpu_resize_and_crop_match_the_recipe_on_the_cpu() -> None:
    """The nvjpeg path's resize (torch, antialiased) lands within rounding of Pillow's (checked on CPU tensors)."""
    recipe = ImageRecipe(resample=3, rescale=1 / 255, mean=(0.5,) * 3, std=(0.5,) * 3, shortest_edge=64, crop=(64, 64))
    image = decode_image(photo_jpeg(5, (1440, 1080)), LIMITS)
    ours = np.empty((64, 64, 3), dtype=np.uint8)
    recipe.pixels_into(image, ours)
    gpu_way = resize_crop_on_device(torch.from_numpy(np.array(image)).permute(2, 0, 1), recipe).permute(1, 2, 0).numpy()
    diff = np.abs(ours.astype(int) - gpu_way.astype(int))
    assert diff.mean() < 1.0 and diff.max() <= 8


def test_pool_leaves_jpegs_to_a_gpu_decoder_after_checking_their_headers() -> None:
    class GpuDecoding:
        """Stands for a classifier whose model stage decodes JPEGs on the GPU."""

        decodes_jpeg = True
        info = None

        def __init__(self) -> None:
            self.jpegs: list[bytes] = []

        def min_decode_side(self) -> int | None:
            return 64

        def prepare_jpeg(self, text: str | None, jpeg: bytes) -> PreparedBatch:
            self.jpegs.append(jpeg)
            return PreparedBatch(size=1, image_rows=[], text_rows=[], jpeg_rows=[0], jpegs=[jpeg])

        def prepare(self, items: list[ModelInput]) -> PreparedBatch:
            assert all(item.image is not None for item in items)
            return PreparedBatch(size=len(items), image_rows=list(range(len(items))), text_rows=[])

        def infer(self, parts: list[PreparedBatch]) -> list[dict[str, float]]:
            return [{} for part in parts for _ in range(len(part))]

        def score_batch(self, items: list[ModelInput]) -> list[dict[str, float]]:
            return self.infer([self.prepare(items)])

    pool = Prepare(IngestLimits.from_settings(Settings(_env_file=None)), Telemetry(["model"]), workers=1)  # type: ignore[call-arg]
    classifier = GpuDecoding()
    assert staged(classifier) is classifier  # type: ignore[arg-type, comparison-overlap]
    photo = photo_jpeg(1, (1080, 1080))
    assert pool.prepare_now(classifier, "hi", photo).jpegs == [photo]  # type: ignore[arg-type, attr-defined]
    png = io.BytesIO()
    Image.new("RGB", (80, 80)).save(png, format="PNG")
    assert pool.prepare_now(classifier, None, png.getvalue()).image_rows == [0]  # type: ignore[arg-type, attr-defined]
    with pytest.raises(IngestError) as bomb:  # a JPEG header over the limits never reaches the GPU
        pool.prepare_now(classifier, None, _huge_jpeg_header())  # type: ignore[arg-type]
    assert bomb.value.reason.value == "image_too_large"
    assert classifier.jpegs == [photo]
    asyncio.run(pool.close())


def _huge_jpeg_header() -> bytes:
    """A JPEG whose header claims 60000x60000 pixels (the SOF0 dimensions patched in a small file)."""
    data = bytearray(photo_jpeg(3, (1080, 1080)))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = (60000).to_bytes(2, "big") * 2
    return bytes(data)
