"""Hash banks: PDQ and sha256 matching on the real Redis, the `bank` CLI, and a banked image's
near-duplicate blocked in the running pipeline without a model call."""

from __future__ import annotations

import asyncio
import io
import logging
import shutil
import uuid
from collections.abc import Sequence
from pathlib import Path

import pytest
from PIL import Image
from redis.asyncio import Redis
from typer.testing import CliRunner

from moderator.banks.hashing import pdq_hex, sha256_hex
from moderator.banks.matcher import BankMatcher
from moderator.banks.schema import BankKind
from moderator.banks.store import BankStore
from moderator.cli import build_app
from moderator.client import produce
from moderator.decisions.schema import Decision
from moderator.ingest.images import ImageLimits, decode_image
from moderator.model.base import Classifier, ModelInput
from moderator.model.loader import load_classifier
from moderator.policy.loader import load_policy_set
from moderator.settings import Settings
from moderator.testing.samples import b64, records_for, render_image
from tests.conftest import ROOT, Servers
from tests.pipeline_helpers import WrappedClassifier, collect, running_service

LIMITS = ImageLimits(10_000_000, 40_000_000, 20_000)


def near_duplicate(png: bytes, scale: float = 0.75, quality: int = 70) -> bytes:
    """The same picture resized and re-encoded as JPEG: other bytes, same content."""
    image = Image.open(io.BytesIO(png)).convert("RGB")
    image = image.resize((int(image.width * scale), int(image.height * scale)), Image.Resampling.BICUBIC)
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=quality)
    return out.getvalue()


def pdq_of(data: bytes) -> str:
    return pdq_hex(decode_image(data, LIMITS))[0]


def decode(data: bytes) -> Image.Image:
    return decode_image(data, LIMITS)


def test_pdq_is_close_for_near_duplicates_and_far_for_other_images() -> None:
    from moderator.banks.hashing import hamming, hex_rows

    for seed in range(4):
        original = render_image("limited offer", seed)
        rows = hex_rows([pdq_of(original)])
        assert int(hamming(rows, pdq_of(near_duplicate(original)))[0]) <= 31
        assert int(hamming(rows, pdq_of(render_image("limited offer", seed + 50)))[0]) > 60


async def test_missing_bank_is_information_once_per_process_when_declared_and_a_warning_otherwise(
        servers: Servers, caplog: pytest.LogCaptureFixture) -> None:
    redis = Redis.from_url(servers.redis_url)
    store = BankStore(redis, namespace=f"test-banks-{uuid.uuid4().hex[:6]}")
    declared, typo = f"csam-{uuid.uuid4().hex[:6]}", f"cs4m-{uuid.uuid4().hex[:6]}"
    image = render_image("x", 1)
    caplog.set_level(logging.INFO, logger="moderator.banks.matcher")
    try:
        for _ in range(2):  # two services in one process (as in `moderator bench`)
            matcher = BankMatcher(store, refresh_s=0.0)
            for _ in range(2):
                assert await matcher.match(image, sha256_hex(image), {declared: 0, typo: 0}, decode,
                                           frozenset({declared})) == []
        about = [(r.levelno, r.getMessage()) for r in caplog.records]
        assert [level for level, message in about if declared in message] == [logging.INFO]
        assert [level for level, message in about if typo in message] == [logging.WARNING] * 2
    finally:
        await redis.aclose()


async def test_matcher_finds_exact_and_perceptual_entries_and_follows_bank_changes(servers: Servers) -> None:
    redis = Redis.from_url(servers.redis_url)
    store = BankStore(redis, namespace=f"test-banks-{uuid.uuid4().hex[:6]}")
    matcher = BankMatcher(store, refresh_s=0.05)
    original, other = render_image("x", 3), render_image("x", 4)
    copy = near_duplicate(original)
    try:
        await store.create("exact", BankKind.SHA256)
        await store.create("similar", BankKind.PDQ)
        await store.add("exact", [sha256_hex(original)], label="file")
        limits = {"exact": 0, "similar": 31}
        assert await matcher.match(copy, sha256_hex(copy), limits, decode) == []

        await store.add("similar", [pdq_of(original)], label="picture")
        await asyncio.sleep(0.06)
        exact = await matcher.match(original, sha256_hex(original), limits, decode)
        assert sorted((m.bank, m.distance == 0) for m in exact) == [("exact", True), ("similar", True)]
        near = await matcher.match(copy, sha256_hex(copy), limits, decode)
        assert [(m.bank, m.label) for m in near] == [("similar", "picture")] and 0 < near[0].distance <= 31
        assert await matcher.match(other, sha256_hex(other), limits, decode) == []
        assert await matcher.match(copy, sha256_hex(copy), {"similar": near[0].distance - 1}, decode) == []

        # Redis unreachable: the banks already loaded keep matching.
        offline = BankMatcher(BankStore(Redis.from_url("redis://127.0.0.1:9/0", socket_connect_timeout=0.2),
                                        namespace=store.namespace), refresh_s=0.0)
        offline.banks = dict(matcher.banks)
        assert [m.bank for m in await offline.match(copy, sha256_hex(copy), limits, decode)] == ["similar"]
        await offline.store.redis.aclose()

        assert await store.remove("similar", [pdq_of(original)]) == 1
        await asyncio.sleep(0.06)
        assert await matcher.match(copy, sha256_hex(copy), limits, decode) == []
        assert await matcher.match(copy, sha256_hex(copy), {"missing-bank": 31}, decode) == []
    finally:
        for name in ("exact", "similar"):
            await store.drop(name)
        await redis.aclose()


def test_bank_cli_adds_lists_and_removes_entries(servers: Servers, tmp_path: Path) -> None:
    image = tmp_path / "bad.png"
    image.write_bytes(render_image("scam", 11))
    bank = f"cli-{uuid.uuid4().hex[:8]}"
    runner, app = CliRunner(), build_app()
    env = {"MODERATOR_REDIS_URL": servers.redis_url}

    def run(*args: str) -> str:
        result = runner.invoke(app, ["bank", *args], env=env)
        assert result.exit_code == 0, result.output
        return result.output

    assert "1 added" in run("add", bank, str(image), "--kind", "pdq", "--label", "scam creative")
    assert "0 added, 1 already banked" in run("add", bank, str(image))
    assert bank in run("list")
    assert pdq_of(image.read_bytes()) in run("list", bank)
    wrong_kind = runner.invoke(app, ["bank", "add", bank, str(image), "--kind", "sha256"], env=env)
    assert wrong_kind.exit_code == 2 and "exists with kind pdq" in wrong_kind.output
    assert "1 removed" in run("remove", bank, str(image))
    assert pdq_of(image.read_bytes()) not in run("list", bank)
    assert runner.invoke(app, ["bank", "list", "no-such-bank"], env=env).exit_code == 2


class CountingClassifier(WrappedClassifier):
    """A real classifier that remembers every input it was asked to score."""

    def __init__(self, inner: Classifier) -> None:
        super().__init__(inner)
        self.seen: list[ModelInput] = []

    def score_batch(self, items: Sequence[ModelInput]) -> list[dict[str, float]]:
        self.seen.extend(items)
        return self.inner.score_batch(items)


async def test_near_duplicate_of_banked_image_is_blocked_without_a_model_call(settings: Settings,
                                                                              tmp_path: Path) -> None:
    bank = f"known-bad-{uuid.uuid4().hex[:8]}"
    directory = tmp_path / "policies"
    shutil.copytree(ROOT / "policies", directory)
    with (directory / "default.yaml").open("a", encoding="utf-8") as policy:
        policy.write(f"  - {{name: known-bad-image, when: {{bank: {bank}}}, action: block, reason: known bad image}}\n")
    settings = settings.model_copy(update={"policy_dir": directory})
    original, control = render_image("known bad", 21), render_image("fine", 22)
    copy = near_duplicate(original, scale=0.6, quality=60)
    assert sha256_hex(copy) != sha256_hex(original)

    redis = Redis.from_url(settings.redis_url)
    store = BankStore(redis)
    await store.create(bank, BankKind.PDQ)
    await store.add(bank, [pdq_of(original)], label="test fixture")
    classifier = CountingClassifier(load_classifier(settings, load_policy_set(directory).head_spec()))
    posts: list[dict[str, object]] = [
        {"post_id": "banked-copy", "user_id": "u1", "text": "a caption never seen before",
         "image": {"data_b64": b64(copy)}},
        {"post_id": "control", "user_id": "u2", "image": {"data_b64": b64(control)}},
    ]
    try:
        async with running_service(settings, classifier=classifier) as service:
            await produce(settings, records_for(posts))
            decisions = {d.post_id: d for d in (Decision.model_validate_json(r.value)
                                                for r in await collect(settings, settings.output_topic, 2))}
    finally:
        await store.drop(bank)
        await redis.aclose()

    banked = decisions["banked-copy"]
    assert (banked.action, banked.source, banked.scores) == ("block", "bank", {})
    [reason] = banked.reasons
    assert reason.rule == "known-bad-image" and reason.label == "known bad image"
    assert reason.bank is not None and reason.bank.bank == bank and 0 < reason.bank.distance <= 31
    assert decisions["control"].source == "model"
    assert all(r.rule != "known-bad-image" for r in decisions["control"].reasons)
    # Only the control post reached the model: the banked copy was decided before scoring.
    assert len(classifier.seen) == 1 and classifier.seen[0].image is not None
    assert classifier.seen[0].image.size == Image.open(io.BytesIO(control)).size
    assert service.pipeline.infer.batcher.stats.items == 1 and service.counts.decisions["bank"] == 1
