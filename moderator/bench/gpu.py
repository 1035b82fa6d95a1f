"""`python -m moderator.bench.gpu` (also `moderator bench-gpu`): is the GPU kept fed? One command, one run.

Builds CLIP ViT-B/16- and SigLIP so400m/14-384-shaped dual encoders from transformers configs with
random weights (bf16 on CUDA; no download, the compute is real) and measures, side by side:

* the pure-forward limit: vision and text towers on random tensors, no data path at all;
* the bare model: the service's model stage (``DualEncoderForward``) on prepared photo posts;
* the pipeline on photo posts: the service's preparation (JPEG decoded at the model's scale,
  resized into uint8 on a thread pool sized to the cores), a micro-batcher that closes batches as
  the service's adaptive one does (``GreedyBatcher``; the service's own needs pydantic) and a model
  thread, with CPU decoding and, where torchvision is present, with nvjpeg decoding on the GPU;
* GPU busy % while the pipeline runs (NVML through pynvml, else ``nvidia-smi`` sampling, else n/a);
* K processes on the one GPU in two arrangements (``gpu_workers``): each with its own model
  (``serve --workers K``), and K feeder processes preparing into shared memory for ONE model process;
* batch-1 latency: both towers alone on inputs already on the device, the model stage, one post
  through preparation + forward, and that post's steps synchronised one by one (prepare, tokenise,
  host-to-device, forward, scores back to the host), which says where a batch's fixed cost goes;
* low-load latency: posts arriving one at a time, p50/p99 against max_wait + 2 x the batch-1 forward.

Kafka and Redis are not involved (they are measured by ``moderator bench``); this isolates whether
preparation keeps the model stage busy. Writes ``gpu-bench.json`` and ``gpu-bench.md``.
``--small`` runs tiny models on a few posts (the test suite runs it on CPU: numbers meaningless).

Only torch, transformers, numpy and Pillow are needed (torchvision and pynvml are optional): the
GPU machine has nothing else, so this module imports no pydantic, Kafka, Redis or web code.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from moderator.bench.photos import caption, photo_set
from moderator.model.forward import DualEncoderForward, nvjpeg_available, row_index
from moderator.model.prepare import ImageRecipe, PreparedBatch, Preparer, cpu_count

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
BICUBIC = int(Image.Resampling.BICUBIC)
SPLIT_STAGES = ("prepare", "tokenise", "h2d", "forward", "d2h_scores")
LOW_LOAD_RATE = 20.0  # posts per second arriving one at a time
PROMPTS = ("an ordinary photo", "earn money from home", "buy illegal drugs online", "a graphic photo of violence",
           "a sexually explicit photo", "hateful slurs")


@dataclass(frozen=True)
class Shape:
    """A dual encoder's architecture and its checkpoint's image processing, as saved with the real one."""

    name: str
    kind: str  # clip | siglip
    vision: dict[str, int]
    text: dict[str, int]
    recipe: ImageRecipe
    batch: int  # the pipeline's max_batch
    pipeline_posts: int
    projection_dim: int = 512


def shapes(small: bool) -> list[Shape]:
    """The two production shapes, or tiny ones with the same structure (``small``)."""
    clip_recipe = ImageRecipe(resample=BICUBIC, rescale=1 / 255, mean=CLIP_MEAN, std=CLIP_STD,
                              shortest_edge=224, crop=(224, 224))
    siglip_recipe = ImageRecipe(resample=BICUBIC, rescale=1 / 255, mean=(0.5,) * 3, std=(0.5,) * 3,
                                resize_to=(384, 384))
    if small:
        tiny = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2}
        return [
            Shape("tiny-clip", "clip", {**tiny, "image_size": 32, "patch_size": 8}, {**tiny, "max_position_embeddings": 77},
                  ImageRecipe(resample=BICUBIC, rescale=1 / 255, mean=CLIP_MEAN, std=CLIP_STD, shortest_edge=32,
                              crop=(32, 32)), batch=8, pipeline_posts=24, projection_dim=16),
            Shape("tiny-siglip", "siglip", {**tiny, "image_size": 32, "patch_size": 8},
                  {**tiny, "max_position_embeddings": 16},
                  ImageRecipe(resample=BICUBIC, rescale=1 / 255, mean=(0.5,) * 3, std=(0.5,) * 3, resize_to=(32, 32)),
                  batch=8, pipeline_posts=24),
        ]
    return [
        Shape("clip-vit-b16", "clip",
              {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12,
               "image_size": 224, "patch_size": 16},
              {"hidden_size": 512, "intermediate_size": 2048, "num_hidden_layers": 12, "num_attention_heads": 8,
               "max_position_embeddings": 77},
              clip_recipe, batch=256, pipeline_posts=6000),
        Shape("siglip-so400m-14-384", "siglip",
              {"hidden_size": 1152, "intermediate_size": 4304, "num_hidden_layers": 27, "num_attention_heads": 16,
               "image_size": 384, "patch_size": 14},
              {"hidden_size": 1152, "intermediate_size": 4304, "num_hidden_layers": 27, "num_attention_heads": 16,
               "max_position_embeddings": 64},
              siglip_recipe, batch=64, pipeline_posts=1500),
    ]


# ----- building a model and tokenizer without any download ------------------------------------


def build_tokenizer(shape: Shape, words: Sequence[str]) -> Any:
    """A word-level fast tokenizer over the captions' vocabulary: real token counts, no files."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    # <eos> is not id 2: CLIP's text tower reads id 2 as "legacy config" and pools at the largest id.
    specials = ["<pad>", "<bos>", "<unk>", "<eos>"]
    vocab = {token: i for i, token in enumerate([*specials, *sorted(set(words))])}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    if shape.kind == "clip":  # CLIP: <bos> text <eos>, padded with <eos>
        backend.post_processor = processors.TemplateProcessing(
            single="<bos> $A <eos>", special_tokens=[("<bos>", vocab["<bos>"]), ("<eos>", vocab["<eos>"])])
        pad = "<eos>"
    else:  # SigLIP: text <eos>, padded with <pad>
        backend.post_processor = processors.TemplateProcessing(single="$A <eos>",
                                                               special_tokens=[("<eos>", vocab["<eos>"])])
        pad = "<pad>"
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<bos>", eos_token="<eos>", unk_token="<unk>",
                                   pad_token=pad, model_max_length=shape.text["max_position_embeddings"])


def text_kwargs(shape: Shape) -> dict[str, Any]:
    """The tokenizer arguments ``DualEncoderForward.text_kwargs`` gives this shape's model."""
    return {"padding": "max_length" if shape.kind == "siglip" else True, "truncation": True}


def build_preparer(shape: Shape, posts: Sequence[Post]) -> Preparer:
    """The service's preparation for ``shape`` (tokenizer over the posts' words, the checkpoint's image
    recipe), without the model: what a feeder process of the shared-inference arrangement needs."""
    tokenizer = build_tokenizer(shape, [w for p in posts for w in p.text.split()] + " ".join(PROMPTS).split())
    return Preparer(tokenizer, shape.recipe, text_kwargs(shape))


def decode_at_scale(jpeg: bytes, side: int | None) -> Image.Image:
    """RGB pixels of ``jpeg`` decoded at the model's scale, as ``ingest.images.decode_image(min_side=...)``."""
    with Image.open(io.BytesIO(jpeg)) as image:
        if side is not None and min(image.size) >= 2 * side:
            image.draft("RGB", (side, side))
        return image.convert("RGB")


def build_model(shape: Shape, vocab_size: int, pad_id: int, eos_id: int, device: torch.device,
                dtype: torch.dtype) -> Any:
    """Random weights in ``shape``'s architecture, on ``device`` in ``dtype``, SDPA attention."""
    from transformers import CLIPConfig, CLIPModel, SiglipConfig, SiglipModel

    text = {**shape.text, "vocab_size": vocab_size, "pad_token_id": pad_id, "eos_token_id": eos_id}
    if shape.kind == "clip":
        config: Any = CLIPConfig(text_config={**text, "bos_token_id": 1}, vision_config=shape.vision,
                                 projection_dim=shape.projection_dim)
        cls: Any = CLIPModel
    else:
        config = SiglipConfig(text_config={**text, "bos_token_id": None}, vision_config=shape.vision)
        cls = SiglipModel
    torch.manual_seed(0)
    with torch.device(device):
        try:
            model = cls._from_config(config, attn_implementation="sdpa", dtype=dtype)
        except (TypeError, ValueError):  # transformers 4.x names it torch_dtype
            model = cls._from_config(config, attn_implementation="sdpa", torch_dtype=dtype)
    return model.to(device=device, dtype=dtype).eval()


# ----- GPU busy sampling ---------------------------------------------------------------------------


class BusySampler:
    """Samples the GPU's utilisation (% of time a kernel ran) while a block runs: pynvml, else nvidia-smi."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.samples: list[float] = []
        self.source = "n/a"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._process: subprocess.Popen[str] | None = None

    def __enter__(self) -> BusySampler:
        if self.device.type != "cuda":
            return self
        index = self.device.index if self.device.index is not None else torch.cuda.current_device()
        try:
            import pynvml

            pynvml.nvmlInit()
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            self.source = "nvml"
            self._thread = threading.Thread(target=self._poll, args=(
                lambda: float(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu),), daemon=True)
            self._thread.start()
            return self
        except Exception:  # noqa: BLE001 - no pynvml or no NVML: try the command-line tool
            pass
        smi = shutil.which("nvidia-smi")
        if smi:
            self.source = "nvidia-smi"
            self._process = subprocess.Popen(
                [smi, "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits", "-i", str(index), "-lms", "200"],
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            self._thread = threading.Thread(target=self._read_smi, daemon=True)
            self._thread.start()
        return self

    def _poll(self, read: Callable[[], float]) -> None:
        while not self._stop.wait(0.1):
            self.samples.append(read())

    def _read_smi(self) -> None:
        assert self._process is not None and self._process.stdout is not None
        for line in self._process.stdout:
            if self._stop.is_set():
                break
            try:
                self.samples.append(float(line.strip()))
            except ValueError:
                continue

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._process is not None:
            self._process.terminate()
            self._process.wait(5)
        if self._thread is not None:
            self._thread.join(5)

    @property
    def mean(self) -> float | None:
        return round(statistics.fmean(self.samples), 1) if self.samples else None


# ----- the measurements ----------------------------------------------------------------------------


class GreedyBatcher:
    """The service's micro-batcher at its adaptive-wait limit, without its (pydantic) configuration.

    A batch closes at ``max_batch`` posts or as soon as nothing more is queued: under load posts queue
    up while the model runs the previous batch, so batches fill; at low load a lone post goes at once,
    as the adaptive batcher sends it when no other post is expected before its deadline.
    """

    def __init__(self, fn: Callable[[Sequence[PreparedBatch]], Any], max_batch: int) -> None:
        self.fn, self.max_batch = fn, max_batch
        self.sizes: list[int] = []
        self._queue: asyncio.Queue[tuple[PreparedBatch, asyncio.Future[Any]]] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None

    async def submit(self, item: PreparedBatch) -> Any:
        if self._worker is None:
            self._worker = asyncio.create_task(self._run())
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((item, future))
        return await future

    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self.max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            self.sizes.append(len(batch))
            try:
                results = await self.fn([item for item, _ in batch])
            except Exception as exc:  # noqa: BLE001 - delivered to every waiter of the batch
                for _, future in batch:
                    future.set_exception(exc)
                continue
            for (_, future), result in zip(batch, results, strict=True):
                future.set_result(result)

    async def close(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker


@dataclass
class Post:
    text: str
    jpeg: bytes


@dataclass
class ModelResult:
    """Everything measured for one shape."""

    name: str
    batch: int
    vision_images_per_s: float = 0.0
    text_per_s: float = 0.0
    limit_posts_per_s: float = 0.0  # image + caption per post, towers back to back
    bare_posts_per_s: float = 0.0
    pipeline_posts_per_s: float = 0.0  # CPU decode at the model's scale on the preparation pool
    pipeline_mean_batch: float = 0.0
    gpu_busy_pct: float | None = None
    gpu_busy_source: str = "n/a"
    nvjpeg_pipeline_posts_per_s: float | None = None
    nvjpeg_gpu_busy_pct: float | None = None
    batch1_forward_ms: dict[str, float] = field(default_factory=dict)
    batch1_post_ms: dict[str, float] = field(default_factory=dict)  # preparation + forward of one post
    batch1_pure_ms: dict[str, float] = field(default_factory=dict)  # both towers, inputs already on the device
    # One post through the service's steps, synchronised after each: prepare (decode at the model's
    # scale, resize to uint8), tokenise, h2d (copies, normalisation), forward (both towers), d2h_scores.
    batch1_split_ms: dict[str, float] = field(default_factory=dict)
    low_load_ms: dict[str, float] = field(default_factory=dict)
    low_load_bound_ms: float = 0.0
    prepare_workers: int = 0
    # K processes on one device at once, cores / K preparation threads each, in two arrangements:
    # "independent" (each its own model: `serve --workers K`) and "shared" (K feeder processes, one
    # model process): arrangement -> K -> posts_per_s, mean_batch, gpu_busy_pct, model_busy_pct.
    processes: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)

    @property
    def pipeline_vs_limit(self) -> float:
        return self.pipeline_posts_per_s / self.limit_posts_per_s if self.limit_posts_per_s else 0.0


def _percentiles(values: Sequence[float]) -> dict[str, float]:
    ordered = sorted(values)
    pick = (lambda q: ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))])
    return {"p50": round(pick(0.5), 2), "p99": round(pick(0.99), 2), "max": round(ordered[-1], 2)}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _rate(fn: Callable[[], object], items_per_call: int, device: torch.device, seconds: float) -> float:
    """Items per second of ``fn`` called repeatedly for about ``seconds`` (after one warm-up call)."""
    fn()
    _sync(device)
    calls, started = 0, time.perf_counter()
    while True:
        fn()
        calls += 1
        if time.perf_counter() - started >= seconds and calls >= 2:
            break
    _sync(device)
    return calls * items_per_call / (time.perf_counter() - started)


class Bench:
    """One shape's model, tokenizer and preparation, and the measurements on them."""

    def __init__(self, shape: Shape, device: torch.device, dtype: torch.dtype, posts: Sequence[Post],
                 seconds: float, repeats: int, workers: int) -> None:
        self.shape, self.device, self.dtype, self.posts, self.seconds = shape, device, dtype, posts, seconds
        self.repeats = repeats
        self.preparer = build_preparer(shape, posts)
        tokenizer = self.preparer.tokenizer
        self.model = build_model(shape, len(tokenizer), tokenizer.pad_token_id, tokenizer.eos_token_id, device, dtype)
        self.forward = DualEncoderForward(self.model, self.preparer, device, dtype)
        assert self.preparer.text_kwargs == DualEncoderForward.text_kwargs(self.model)
        self.workers = workers
        self.model_busy_s = 0.0  # time spent in ``infer``, for the model thread's busy share
        prompts = self.preparer(list(PROMPTS), [None] * len(PROMPTS))
        assert prompts.input_ids is not None and prompts.attention_mask is not None
        emb = self.forward.text_features(prompts.input_ids, prompts.attention_mask)
        self.categories, self.neutral = emb[1:], emb[0]

    def prepare_post(self, post: Post, gpu_decode: bool = False) -> PreparedBatch:
        """What the service's preparation pool does for one post (decode at the model's scale, prepare)."""
        if gpu_decode:
            return self.preparer([post.text], [None], [post.jpeg])
        return self.preparer([post.text], [decode_at_scale(post.jpeg, self.preparer.min_decode_side)])

    @torch.inference_mode()
    def infer(self, parts: Sequence[PreparedBatch]) -> np.ndarray:
        """The model stage: one forward per tower, zero-shot logits, scores back on the host."""
        started = time.perf_counter()
        batch = PreparedBatch.join(parts, self.preparer.pad_id)
        logits = torch.full((batch.size, len(self.categories)), -1e4, device=self.device)
        if batch.text_rows:
            assert batch.input_ids is not None and batch.attention_mask is not None
            emb = self.forward.text_features(batch.input_ids, batch.attention_mask)
            logits[row_index(batch.text_rows, batch.size, self.device)] = self.zero_shot(emb)
        rows, emb = self.forward.image_features(batch)
        if rows:
            index = row_index(rows, batch.size, self.device)
            logits[index] = torch.maximum(logits[index], self.zero_shot(emb))
        scores = torch.sigmoid(logits).cpu().numpy()
        self.model_busy_s += time.perf_counter() - started
        return scores

    def zero_shot(self, emb: torch.Tensor) -> torch.Tensor:
        return self.forward.zero_shot_logits(emb, self.categories, self.neutral)

    def pure_forward(self, result: ModelResult) -> None:
        b = self.shape.batch
        size = self.shape.recipe.output_hw
        pixels = torch.randn(b, 3, *size, device=self.device, dtype=self.dtype)
        if self.device.type == "cuda":
            pixels = pixels.contiguous(memory_format=torch.channels_last)
        texts = self.preparer([p.text for p in self.posts[:b]], [None] * min(b, len(self.posts)))
        assert texts.input_ids is not None
        length = texts.input_ids.shape[1]
        ids = torch.randint(4, 20, (b, length), device=self.device)
        with torch.inference_mode():
            result.vision_images_per_s = round(_rate(lambda: self.model.get_image_features(pixel_values=pixels), b,
                                                     self.device, self.seconds), 1)
            result.text_per_s = round(_rate(lambda: self.model.get_text_features(input_ids=ids),
                                            b, self.device, self.seconds), 1)
        result.limit_posts_per_s = round(1 / (1 / result.vision_images_per_s + 1 / result.text_per_s), 1)

    def bare(self, result: ModelResult) -> None:
        b = self.shape.batch
        parts = [self.prepare_post(self.posts[i % len(self.posts)]) for i in range(b)]
        result.bare_posts_per_s = round(_rate(lambda: self.infer(parts), b, self.device, self.seconds), 1)
        one = parts[:1]
        self.infer(one)
        result.batch1_forward_ms = _percentiles(_timed(lambda: self.infer(one), self.repeats))
        result.batch1_post_ms = _percentiles(_timed(lambda: self.infer([self.prepare_post(self.posts[0])]),
                                                    self.repeats))
        self.batch1_split(result)

    def batch1_split(self, result: ModelResult) -> None:
        """Where one post's time goes: the service's own steps run one after another, synchronised
        after each (p50 ms), beside both towers alone on tensors already on the device."""
        post, stages = self.posts[0], SPLIT_STAGES
        splits: dict[str, list[float]] = {stage: [] for stage in (*stages, "total")}
        pure: list[float] = []
        for _ in range(self.repeats + 1):  # the first round warms up
            marks = [time.perf_counter()]

            def mark() -> None:
                _sync(self.device)
                marks.append(time.perf_counter())

            with torch.inference_mode():
                image = self.preparer([None], [decode_at_scale(post.jpeg, self.preparer.min_decode_side)])
                mark()
                tokens = self.preparer([post.text], [None])
                mark()
                assert tokens.input_ids is not None and tokens.attention_mask is not None
                ids, mask = self.forward.text_inputs(tokens.input_ids, tokens.attention_mask)
                rows, pixels = self.forward.image_inputs(image)
                assert pixels is not None
                mark()
                text_emb = self.forward.text_forward(ids, mask)
                image_emb = self.forward.image_forward(pixels, len(rows))
                mark()
                logits = torch.maximum(self.zero_shot(text_emb), self.zero_shot(image_emb))
                torch.sigmoid(logits).cpu().numpy()
                mark()
                self.model.get_text_features(input_ids=ids, attention_mask=mask)
                self.model.get_image_features(pixel_values=pixels)
                mark()
            for stage, start, end in zip(stages, marks, marks[1:], strict=False):
                splits[stage].append(1000 * (end - start))
            splits["total"].append(1000 * (marks[5] - marks[0]))
            pure.append(1000 * (marks[6] - marks[5]))
        result.batch1_split_ms = {stage: round(statistics.median(v[1:]), 2) for stage, v in splits.items()}
        result.batch1_pure_ms = _percentiles(pure[1:])

    async def _through_pipeline(self, posts: Sequence[Post], gpu_decode: bool,
                                arrival_gap_s: float | None) -> tuple[float, list[float], list[int]]:
        """Posts through a preparation pool, a micro-batcher and a model thread, as in the service.

        Returns the wall time, each post's latency (ms, from its arrival) and the batch sizes.
        """
        loop = asyncio.get_running_loop()
        prepare_pool = ThreadPoolExecutor(self.workers, thread_name_prefix="prepare")
        model_pool = ThreadPoolExecutor(1, thread_name_prefix="model")

        async def model_stage(parts: Sequence[PreparedBatch]) -> list[np.ndarray]:
            scores = await loop.run_in_executor(model_pool, self.infer, parts)
            return list(scores)

        batcher = GreedyBatcher(model_stage, self.shape.batch)
        latencies: list[float] = []
        in_flight = asyncio.Semaphore(4 * self.shape.batch)  # the service's max_in_flight backpressure

        async def one(post: Post) -> None:
            arrived = time.perf_counter()
            prepared = await loop.run_in_executor(prepare_pool, self.prepare_post, post, gpu_decode)
            await batcher.submit(prepared)
            latencies.append(1000 * (time.perf_counter() - arrived))
            in_flight.release()

        started = time.perf_counter()
        tasks = []
        for post in posts:
            await in_flight.acquire()
            tasks.append(asyncio.create_task(one(post)))
            if arrival_gap_s is not None:
                await asyncio.sleep(arrival_gap_s)
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - started
        await batcher.close()
        prepare_pool.shutdown()
        model_pool.shutdown()
        return elapsed, latencies, batcher.sizes

    def pipeline(self, result: ModelResult, gpu_decode: bool) -> None:
        posts = [self.posts[i % len(self.posts)] for i in range(self.shape.pipeline_posts)]
        asyncio.run(self._through_pipeline(posts[: 2 * self.shape.batch], gpu_decode, None))  # warm-up
        with BusySampler(self.device) as busy:
            elapsed, _, sizes = asyncio.run(self._through_pipeline(posts, gpu_decode, None))
        rate = round(len(posts) / elapsed, 1)
        if gpu_decode:
            result.nvjpeg_pipeline_posts_per_s, result.nvjpeg_gpu_busy_pct = rate, busy.mean
        else:
            result.pipeline_posts_per_s, result.gpu_busy_pct, result.gpu_busy_source = rate, busy.mean, busy.source
            result.pipeline_mean_batch = round(statistics.fmean(sizes), 1)

    def low_load(self, result: ModelResult, count: int, rate_per_s: float, max_wait_ms: float) -> None:
        posts = [self.posts[i % len(self.posts)] for i in range(count + 1)]
        _, latencies, _ = asyncio.run(self._through_pipeline(posts, False, 1 / rate_per_s))
        result.low_load_ms = _percentiles(latencies[1:])  # the first post has no arrival rate to go by
        result.low_load_bound_ms = round(max_wait_ms + 2 * result.batch1_forward_ms["p50"], 2)


def _timed(fn: Callable[[], object], repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        out.append(1000 * (time.perf_counter() - started))
    return out


# ----- the run and its report ----------------------------------------------------------------------


def _dtype(device: torch.device) -> torch.dtype:
    if device.type != "cuda":
        return torch.float32
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def _posts(small: bool) -> list[Post]:
    rng = random.Random(0)
    photos = photo_set(4 if small else 32, seed=3)
    return [Post(caption(rng), photos[i % len(photos)]) for i in range(64 if small else 512)]


def run(small: bool, output: Path, device_name: str | None = None, only: Sequence[str] = (),
        pipeline_posts: int | None = None, process_counts: Sequence[int] | None = None) -> dict[str, Any]:
    """Measure every shape (or those named in ``only``); write JSON and markdown to ``output``.

    ``pipeline_posts`` overrides each shape's post count for the pipeline runs (per process);
    ``process_counts`` the K of the several-process arrangements (default 2 and 4; 2 when small).
    """
    started = time.perf_counter()
    device = torch.device(device_name or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = _dtype(device)
    report: dict[str, Any] = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({platform.processor()})",
        "dtype": str(dtype).removeprefix("torch."), "cores": cpu_count(), "small": small,
        "torch": torch.__version__, "transformers": _version("transformers"), "torchvision": _version("torchvision"),
        "nvjpeg": nvjpeg_available(device), "load_average": _load_average(), "models": [],
    }
    counts = tuple(process_counts or ((2,) if small else (2, 4)))
    for shape in shapes(small):
        if only and shape.name not in only:
            continue
        if pipeline_posts:
            shape = replace(shape, pipeline_posts=pipeline_posts)
        # Small mode checks that the several-process arrangements run, on the first shape only:
        # each starts fresh interpreters, which is most of the smoke test's time.
        result = measure_shape(shape, small, device, bool(report["nvjpeg"]),
                               () if small and report["models"] else counts)
        report["models"].append({**asdict(result), "pipeline_vs_limit": round(result.pipeline_vs_limit, 3)})
    report["load_average_after"] = _load_average()
    report["seconds"] = round(time.perf_counter() - started, 1)
    output.mkdir(parents=True, exist_ok=True)
    (output / "gpu-bench.json").write_text(json.dumps(report, indent=2))
    (output / "gpu-bench.md").write_text(markdown(report))
    return report


def measure_shape(shape: Shape, small: bool, device: torch.device, nvjpeg: bool,
                  process_counts: Sequence[int]) -> ModelResult:
    """Every measurement of one shape: one process first, then K processes in both arrangements."""
    from moderator.bench import gpu_workers  # it imports this module

    posts = _posts(small)
    workers = cpu_count()
    bench = Bench(shape, device, _dtype(device), posts, 0.2 if small else 3.0, 5 if small else 50, workers)
    result = ModelResult(name=shape.name, batch=shape.batch, prepare_workers=workers)
    bench.pure_forward(result)
    bench.bare(result)
    bench.pipeline(result, gpu_decode=False)
    if nvjpeg:
        bench.pipeline(result, gpu_decode=True)
    bench.low_load(result, count=6 if small else 100, rate_per_s=LOW_LOAD_RATE, max_wait_ms=20.0)
    del bench
    if device.type == "cuda":
        torch.cuda.empty_cache()
    photo_posts = tuple((post.text, post.jpeg) for post in posts)
    for count in process_counts:
        # Twice the one-process run's posts in all, shared out: the run stays a few seconds per K.
        per_process = max(2 * shape.batch, 2 * shape.pipeline_posts // count)
        setup = gpu_workers.Setup(shape.name, small, per_process, photo_posts, str(device), count)
        for name, arrangement in (("independent", gpu_workers.independent), ("shared", gpu_workers.shared)):
            result.processes.setdefault(name, {})[str(count)] = asdict(arrangement(setup))
    return result


def _load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def _version(module: str) -> str | None:
    try:
        return __import__(module).__version__
    except Exception:  # noqa: BLE001 - optional dependency
        return None


def markdown(report: dict[str, Any]) -> str:
    """The report as a markdown table, one column per model."""
    models = report["models"]

    def row(label: str, fmt: Callable[[dict[str, Any]], str]) -> str:
        return f"| {label} | " + " | ".join(fmt(m) for m in models) + " |"

    def pct(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.0f}%"

    def arrangement(m: dict[str, Any], name: str) -> str:
        return ", ".join(f"K={k}: {a['posts_per_s']:,.0f} ({a['mean_batch']:.0f}, {a['model_busy_pct']:.0f}%, "
                         f"{pct(a['gpu_busy_pct'])})"
                         for k, a in m["processes"].get(name, {}).items()) or "n/a"

    lines = [
        f"{report['device']}, {report['dtype']}, {report['cores']} cores for preparation; torch {report['torch']}, "
        f"transformers {report['transformers']}, torchvision {report['torchvision'] or 'absent'}; "
        f"{report['seconds']} s{' (small mode: numbers meaningless)' if report['small'] else ''}; "
        f"load average before / after: {report['load_average']} / {report['load_average_after']}",
        "",
        "| | " + " | ".join(f"{m['name']} (batch {m['batch']})" for m in models) + " |",
        "|---|" + "---|" * len(models),
        row("pure-forward limit, posts/s (vision img/s, text/s)",
            lambda m: f"{m['limit_posts_per_s']:,.0f} ({m['vision_images_per_s']:,.0f}, {m['text_per_s']:,.0f})"),
        row("bare model stage on prepared photo posts, posts/s", lambda m: f"{m['bare_posts_per_s']:,.0f}"),
        row("pipeline on photo posts, CPU decode, posts/s (mean batch)",
            lambda m: f"{m['pipeline_posts_per_s']:,.0f} ({m['pipeline_mean_batch']:.0f})"),
        row("**pipeline / pure-forward limit**", lambda m: f"**{m['pipeline_vs_limit']:.0%}**"),
        row("GPU busy during the pipeline", lambda m: f"{pct(m['gpu_busy_pct'])} ({m['gpu_busy_source']})"),
        row("pipeline with nvjpeg decode, posts/s (GPU busy)",
            lambda m: "n/a" if m["nvjpeg_pipeline_posts_per_s"] is None
            else f"{m['nvjpeg_pipeline_posts_per_s']:,.0f} ({pct(m['nvjpeg_gpu_busy_pct'])})"),
        row("K processes, each with its own model (`serve --workers K`): "
            "total posts/s (mean batch, model thread busy, GPU busy)",
            lambda m: arrangement(m, "independent")),
        row("K feeder processes sharing one model process: total posts/s (mean batch, model thread busy, GPU busy)",
            lambda m: arrangement(m, "shared")),
        row("batch-1 pure forward (both towers, inputs on the device), p50 / p99 ms",
            lambda m: f"{m['batch1_pure_ms']['p50']:.1f} / {m['batch1_pure_ms']['p99']:.1f}"),
        row("batch-1 model stage (`infer` on a prepared post), p50 / p99 ms",
            lambda m: f"{m['batch1_forward_ms']['p50']:.1f} / {m['batch1_forward_ms']['p99']:.1f}"),
        row("one post's steps, each synchronised, p50 ms: prepare / tokenise / h2d / forward / d2h+scores = total",
            lambda m: " / ".join(f"{m['batch1_split_ms'][k]:.1f}" for k in SPLIT_STAGES)
            + f" = {m['batch1_split_ms']['total']:.1f}"),
        row("one post prepared + forward, p50 / p99 ms",
            lambda m: f"{m['batch1_post_ms']['p50']:.1f} / {m['batch1_post_ms']['p99']:.1f}"),
        row(f"low load ({LOW_LOAD_RATE:g} posts/s, max_wait 20 ms), p50 / p99 ms vs max_wait + 2 x forward",
            lambda m: f"{m['low_load_ms']['p50']:.1f} / {m['low_load_ms']['p99']:.1f} vs {m['low_load_bound_ms']:.1f}"),
    ]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(prog="python -m moderator.bench.gpu", description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", action="store_true", help="tiny models, a few posts (CPU smoke test)")
    parser.add_argument("--output", type=Path, default=Path("bench-results"), help="directory for JSON + markdown")
    parser.add_argument("--device", default=None, help="cuda, cuda:1, cpu (default: cuda when present)")
    parser.add_argument("--model", action="append", default=[], help="only this shape (repeatable)")
    parser.add_argument("--pipeline-posts", type=int, default=None, help="posts per pipeline run (per process)")
    parser.add_argument("--processes", type=int, action="append", default=None,
                        help="K for the several-process runs (repeatable; default 2 and 4, 2 with --small)")
    args = parser.parse_args(argv)
    report = run(args.small, args.output, args.device, args.model, args.pipeline_posts, args.processes)
    print(markdown(report))


if __name__ == "__main__":
    main()
