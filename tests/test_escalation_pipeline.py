"""The escalation tier wired into the policy path: the adjustment rules, the policy block's validation,
lazy (re)building, and the running pipeline with a tiny random VLM (batched calls, cached verdicts)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from redis.asyncio import Redis

from moderator.cache.hashing import content_hash
from moderator.client import produce
from moderator.decisions.schema import Decision
from moderator.evaldata import CATEGORIES
from moderator.ingest.schema import Post
from moderator.ingest.validate import IngestLimits, ValidPost
from moderator.model.base import ModelInfo
from moderator.model.escalation import VlmAnswer
from moderator.pipeline.escalation import EscalationTier
from moderator.policy.engine import evaluate
from moderator.policy.escalation import adjust, escalated_categories
from moderator.policy.loader import PolicyError, load_candidate, load_policy_set, parse_policy
from moderator.policy.schema import Action, Policy
from moderator.settings import Settings
from moderator.testing.samples import records_for
from moderator.testing.tiny_models import build_tiny_vlm
from tests.conftest import ROOT, Servers, make_settings
from tests.pipeline_helpers import collect, running_service

EXAMPLE = ROOT / "docs" / "policy-examples" / "escalation.yaml"
SHIPPED = (ROOT / "policies" / "default.yaml").read_text(encoding="utf-8")
QUIET = {c: 0.1 for c in CATEGORIES}
UNSAFE = VlmAnswer(True, ("scam",), "unsafe\nS4")
SAFE = VlmAnswer(False, (), "safe")
GARBAGE = VlmAnswer(None, (), "\ufffd[lA;")


@pytest.fixture(scope="module")
def marketplace() -> Policy:
    """The documented example as it serves beside the shipped default (categories inherited)."""
    _, policy = load_candidate(EXAMPLE, ROOT / "policies")
    return policy


@pytest.fixture(scope="module")
def tiny_vlm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_vlm(tmp_path_factory.mktemp("models") / "tiny-vlm")


def with_block(block: str) -> str:
    """The shipped default policy with an escalation block (YAML flow mapping)."""
    return SHIPPED + f"escalation: {block}\n"


# ----- the adjustment: verdict + policy -> action --------------------------------------------------


def decide(policy: Policy, scores: dict[str, float], assessed: VlmAnswer | None) -> tuple[Action, Action, str]:
    """The policy's action, the action after escalation, and the escalation reason's label."""
    before = evaluate(policy, scores)
    banded = escalated_categories(policy, scores)
    after = adjust(policy, before, scores, banded, assessed)
    escalation = [r for r in after.reasons if r.rule == f"escalation:{policy.name}"]
    assert len(escalation) == 1 and after.reasons[:-1] == before.reasons
    return before.action, after.action, escalation[0].label or ""


def test_example_validates_and_keeps_its_block(marketplace: Policy) -> None:
    block = marketplace.escalation
    assert block is not None
    assert (block.band, block.categories, block.on_unsafe, block.on_safe) == ((0.4, 0.8), ["scam", "drugs"],
                                                                              "block", "allow")
    assert load_policy_set(ROOT / "policies").default_policy.escalation is None  # no weights ship


def test_only_escalated_categories_in_the_band_escalate(marketplace: Policy) -> None:
    assert escalated_categories(marketplace, {**QUIET, "scam": 0.5, "hate": 0.5}) == ["scam"]
    assert escalated_categories(marketplace, {**QUIET, "drugs": 0.4}) == ["drugs"]
    assert escalated_categories(marketplace, {**QUIET, "scam": 0.8, "drugs": 0.39}) == []
    assert escalated_categories(marketplace.model_copy(update={"escalation": None}), {**QUIET, "scam": 0.5}) == []


def test_unsafe_raises_to_on_unsafe_and_names_the_categories(marketplace: Policy) -> None:
    assert decide(marketplace, {**QUIET, "scam": 0.45}, UNSAFE) == (Action.ALLOW, Action.BLOCK,
                                                                     "escalation: unsafe (scam)")
    review_only = marketplace.model_copy(update={"escalation": marketplace.escalation.model_copy(  # type: ignore[union-attr]
        update={"on_unsafe": "review"})})
    # Never lowers: a block from a confident rule stays a block when on_unsafe is review.
    assert decide(review_only, {**QUIET, "scam": 0.6, "sexual": 0.9}, UNSAFE)[1] is Action.BLOCK
    assert decide(review_only, {**QUIET, "scam": 0.6}, UNSAFE)[1] is Action.REVIEW


def test_safe_clears_only_what_the_escalated_rules_flagged(marketplace: Policy) -> None:
    assert decide(marketplace, {**QUIET, "scam": 0.6}, SAFE) == (Action.REVIEW, Action.ALLOW, "escalation: safe")
    assert decide(marketplace, {**QUIET, "scam": 0.6, "drugs": 0.7}, SAFE)[1] is Action.ALLOW
    # A confident rule (sexual, or scam above the band) is not the VLM's to overturn.
    assert decide(marketplace, {**QUIET, "scam": 0.6, "sexual": 0.9}, SAFE)[1] is Action.BLOCK
    assert decide(marketplace, {**QUIET, "scam": 0.85, "drugs": 0.6}, SAFE)[1] is Action.BLOCK
    keep = marketplace.model_copy(update={"escalation": marketplace.escalation.model_copy(  # type: ignore[union-attr]
        update={"on_safe": "keep"})})
    assert decide(keep, {**QUIET, "scam": 0.6}, SAFE)[1] is Action.REVIEW


@pytest.mark.parametrize("assessed", [GARBAGE, None])
def test_no_verdict_never_loosens(marketplace: Policy, assessed: VlmAnswer | None) -> None:
    assert decide(marketplace, {**QUIET, "scam": 0.7}, assessed) == (Action.REVIEW, Action.REVIEW,
                                                                      "escalation: no verdict")


# ----- validation with file:line errors -------------------------------------------------------------


@pytest.mark.parametrize(
    ("block", "expected"),
    [
        ("{model: m, band: [0.8, 0.4]}", "escalation.band: the band needs low < high"),
        ("{model: m, band: [0.4, 1.5]}", "escalation.band[1]: Input should be less than or equal to 1"),
        ("{model: m, categories: [scam, drugz]}", "escalation.categories[1]: escalation uses unknown category 'drugz'"),
        ("{model: m, on_unsafe: allow}", "escalation.on_unsafe: Input should be 'review' or 'block'"),
        ("{model: m, on_safe: block}", "escalation.on_safe: Input should be 'allow' or 'keep'"),
        ("{model: m, batch: 4}", "escalation.batch: Extra inputs are not permitted"),
        ("{band: [0.4, 0.8]}", "escalation.model: Field required"),
    ],
)
def test_invalid_blocks_name_file_line_and_field(block: str, expected: str) -> None:
    text = with_block(block)
    with pytest.raises(PolicyError) as caught:
        parse_policy(text, "policies/default.yaml")
    line = len(text.splitlines())
    assert f"policies/default.yaml:{line}: {expected}" in str(caught.value)


def test_a_shadow_cannot_escalate() -> None:
    text = 'name: cand\nversion: "1"\nshadow_of: default\nescalation: {model: m}\n'
    with pytest.raises(PolicyError, match=r"cand.yaml:4: escalation: a shadow policy never acts"):
        parse_policy(text, "cand.yaml")


# ----- lazy building and rebuilding, with the real tiny VLM and Redis ------------------------------


async def test_escalator_is_built_once_and_rebuilt_only_when_its_inputs_change(
        servers: Servers, tiny_vlm: Path) -> None:
    settings = make_settings(servers, device="cpu")
    redis = Redis.from_url(servers.redis_url)
    tier = EscalationTier(settings, redis, IngestLimits.from_settings(settings),
                          namespace=f"test:escalation:{uuid.uuid4().hex[:8]}")
    text = "limited offer, message me"
    post = ValidPost(Post(post_id="e-1", user_id="u-1", text=text), None, content_hash(text, None))
    scores = {**QUIET, "scam": 0.5}
    info = ModelInfo(name="clip", version="v1", components={"clip": "tiny"})

    def policy(block: str) -> Policy:
        return parse_policy(with_block(block), "default.yaml")

    async def run(p: Policy) -> tuple[str, ModelInfo]:
        verdict, model_info = await tier.apply(p, evaluate(p, scores), scores, post, info)
        return verdict.reasons[-1].label or "", model_info

    try:
        first = policy(f"{{model: {tiny_vlm}, band: [0.3, 0.9], max_new_tokens: 4}}")
        label, model_info = await run(first)
        assert label.startswith("escalation: ")
        assert model_info.components["escalation_vlm"].startswith("LlavaForConditionalGeneration")
        assert model_info.version == info.version  # the score cache's version is the classifier's alone
        assert (tier.stats.builds, tier.stats.assessed, tier.stats.cache_hits) == (1, 1, 0)
        assert await run(first) == (label, model_info)
        assert (tier.stats.builds, tier.stats.assessed, tier.stats.cache_hits) == (1, 1, 1)
        # Band and batching are read per post: same escalator, same cached verdict, new batch size.
        await run(policy(f"{{model: {tiny_vlm}, band: [0.2, 0.9], max_new_tokens: 4, max_batch: 7}}"))
        assert (tier.stats.builds, tier.stats.assessed, tier.stats.cache_hits) == (1, 1, 2)
        assert tier.batcher("default") is not None and tier.batcher("default").max_batch == 7  # type: ignore[union-attr]
        # What shapes the answer (here its length) builds a new escalator with its own verdicts.
        await run(policy(f"{{model: {tiny_vlm}, band: [0.2, 0.9], max_new_tokens: 5}}"))
        assert (tier.stats.builds, tier.stats.assessed, tier.stats.cache_hits) == (2, 2, 2)
        # A model that cannot load keeps the policy's action and says so.
        broken = policy(f"{{model: {tiny_vlm.parent / 'missing'}, on_unsafe: block}}")
        label, model_info = await run(broken)
        assert label == "escalation: no verdict" and "escalation_vlm" not in model_info.components
        assert (tier.stats.builds, tier.stats.failures) == (3, 1)
        await run(broken)
        assert (tier.stats.builds, tier.stats.failures) == (3, 1)  # not retried on every post
    finally:
        await tier.close()
        await redis.aclose()


# ----- the running pipeline ------------------------------------------------------------------------

TEXTS = ["hello world", "earn money from home now", "buy pills here", "my cat", "send money to claim your prize",
         "great sunset today", "free crypto giveaway", "lunch with friends", "click to verify your bank",
         "new shoes", "I love this song", "meet me at the park"]
BAND = (0.5, 0.9)


def posts(round_: str) -> list[dict[str, object]]:
    return [{"post_id": f"{round_}-{i}", "user_id": "u-1", "text": text} for i, text in enumerate(TEXTS)]


def escalation_label(decision: Decision) -> str | None:
    return next((r.label for r in decision.reasons if r.rule == "escalation:default"), None)


async def decisions(settings: Settings, count: int) -> dict[str, Decision]:
    records = await collect(settings, settings.output_topic, count)
    return {d.post_id: d for d in (Decision.model_validate_json(r.value) for r in records)}


async def test_pipeline_escalates_in_band_posts_in_batches_and_reuses_cached_verdicts(
        settings: Settings, tiny_vlm: Path, tmp_path: Path) -> None:
    directory = tmp_path / "policies"
    directory.mkdir()
    block = (f"{{model: {tiny_vlm}, band: [{BAND[0]}, {BAND[1]}], categories: [scam], on_unsafe: block, "
             f"on_safe: allow, max_batch: 4, max_wait_ms: 50, max_new_tokens: 4}}")
    (directory / "default.yaml").write_text(with_block(block), encoding="utf-8")
    settings = settings.model_copy(update={"policy_dir": directory, "policy_watch": False, "device": "cpu"})
    policy = load_policy_set(directory).default_policy
    redis = Redis.from_url(settings.redis_url)
    for text in TEXTS:  # a reused Redis must not answer from an earlier run
        async for key in redis.scan_iter(match=f"moderator:escalation:*:{content_hash(text, None)}"):
            await redis.delete(key)
    try:
        async with running_service(settings) as service:
            await produce(settings, records_for(posts("a")))
            first = await decisions(settings, len(TEXTS))
            in_band = {i for i, d in first.items() if BAND[0] <= d.scores["scam"] < BAND[1]}
            assert in_band and len(in_band) < len(TEXTS), "the band must split the posts for this test to mean much"
            for post_id, decision in first.items():
                label = escalation_label(decision)
                assert (label is not None) is (post_id in in_band), (post_id, decision.scores)
                assert ("escalation_vlm" in decision.model.components) is (post_id in in_band)
                if label == "escalation: no verdict":  # what a random VLM answers: the policy's action stands
                    assert decision.action is evaluate(policy, decision.scores).action
            batcher = service.pipeline.decide.escalation.batcher("default")
            assert batcher is not None
            assert service.pipeline.decide.escalation.stats.assessed == batcher.stats.items == len(in_band)
            assert max(batcher.stats.sizes) > 1 and max(batcher.stats.sizes) <= 4  # batched, within max_batch

            # What a VLM would have answered for two of them, written where the service keeps verdicts.
            ordered = sorted(in_band, key=lambda i: (first[i].action.severity, i))
            unsafe_id, safe_id = ordered[0], ordered[-1]
            for post_id, value in ((unsafe_id, '{"unsafe": true, "categories": ["scam"]}'),
                                   (safe_id, '{"unsafe": false, "categories": []}')):
                text = TEXTS[int(post_id.split("-")[1])]
                keys = [k async for k in redis.scan_iter(match=f"moderator:escalation:*:{content_hash(text, None)}")]
                assert len(keys) == 1
                await redis.set(keys[0], value)

            await produce(settings, records_for(posts("b")))
            both = await decisions(settings, 2 * len(TEXTS))
            assert service.pipeline.decide.escalation.stats.assessed == len(in_band)  # reposts never reached the VLM
            assert service.pipeline.decide.escalation.stats.cache_hits == len(in_band)
        for i, old in first.items():
            new = both[i.replace("a-", "b-")]
            if i == unsafe_id:
                assert new.action is Action.BLOCK and escalation_label(new) == "escalation: unsafe (scam)"
            elif i == safe_id:
                policy_reasons = [r for r in old.reasons if r.rule != "escalation:default"]
                cleared = all(r.category == "scam" for r in policy_reasons)
                assert new.action is (Action.ALLOW if cleared else old.action)
                assert escalation_label(new) == "escalation: safe"
            else:  # the same content decides the same way: the cached verdict, not a new generation
                assert (new.action, new.reasons, new.scores) == (old.action, old.reasons, old.scores)
    finally:
        await redis.aclose()
