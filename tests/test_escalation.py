"""The generative-VLM escalation tier: prompt, parser on malformed answers, tiny random VLM."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from moderator.model.base import CategorySpec, HeadSpec, ModelInput
from moderator.model.escalation import VlmEscalator, build_prompt, in_uncertainty_band, parse_verdict
from moderator.testing.tiny_models import build_tiny_vlm

SPEC = HeadSpec(
    categories=(
        CategorySpec("scam", ("earn money from home",), "Fraud and get-rich-quick schemes."),
        CategorySpec("drugs", ("buy drugs",), "Sale of illegal drugs."),
        CategorySpec("violence", ("a threat",)),
    ),
    neutral_prompts=("an ordinary photo",),
)


def test_prompt_lists_categories_with_descriptions_and_the_post() -> None:
    prompt = build_prompt(SPEC, "dm me for pills", has_image=True)
    assert "S1: scam. Fraud and get-rich-quick schemes." in prompt
    assert "S3: violence. a threat" in prompt  # no description: the prompts describe it
    assert "Caption: dm me for pills" in prompt and "[the attached image]" in prompt
    assert "'safe' or 'unsafe'" in prompt


@pytest.mark.parametrize(
    ("answer", "unsafe", "categories"),
    [
        ("safe", False, ()),
        ("unsafe\nS1,S2", True, ("scam", "drugs")),
        ("  UNSAFE\n s2 ", True, ("drugs",)),
        ("Unsafe: violence, scam", True, ("violence", "scam")),
        ("The post is unsafe.\nViolated categories: S3", True, ("violence",)),
        ("unsafe\nS9, weapons", True, ()),  # unknown codes and names are dropped, the verdict stays
        ('{"verdict": "unsafe", "categories": ["S1", "drugs"]}', True, ("scam", "drugs")),
        ('```json\n{"safe": true}\n```', False, ()),
        ('{"unsafe": true, "violated_categories": "S2"}', True, ("drugs",)),
        ("safe\nS1", False, ()),  # categories after a safe verdict mean nothing
        ("Safety: safe. Not unsafe.", False, ()),  # the first verdict word decides
    ],
)
def test_parser_reads_well_formed_and_chatty_answers(answer: str, unsafe: bool, categories: tuple[str, ...]) -> None:
    verdict = parse_verdict(answer, SPEC)
    assert verdict.parsed
    assert verdict.unsafe is unsafe
    assert verdict.categories == categories
    assert verdict.raw == answer


@pytest.mark.parametrize(
    "answer",
    [
        "",
        "   \n",
        "I cannot help with that.",
        "S1",
        "unsafety",
        '{"verdict": "maybe"}',
        "\x00\ufffd\ufffd garbage",
        '{"foo": 1}',
    ],
)
def test_parser_never_turns_malformed_output_into_safe(answer: str) -> None:
    verdict = parse_verdict(answer, SPEC)
    assert verdict.unsafe is None
    assert not verdict.parsed
    assert verdict.categories == ()


def test_broken_json_falls_back_to_text() -> None:
    assert parse_verdict('{"verdict": "unsafe", categories: [S1', SPEC).unsafe is True


def test_uncertainty_band() -> None:
    assert in_uncertainty_band({"scam": 0.5, "drugs": 0.9, "violence": 0.3}, 0.4, 0.85) == ["scam"]


@pytest.fixture(scope="module")
def tiny_vlm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_vlm(tmp_path_factory.mktemp("models") / "tiny-vlm")


def test_tiny_random_vlm_runs_end_to_end(tiny_vlm: Path) -> None:
    escalator = VlmEscalator(str(tiny_vlm), SPEC, device="cpu", max_new_tokens=8)
    items = [
        ModelInput("dm me for pills", Image.new("RGB", (48, 32), (200, 0, 0))),
        ModelInput("hello"),
        ModelInput(None, Image.new("RGB", (20, 60))),
    ]
    verdicts = escalator.assess(items)
    assert len(verdicts) == 3
    # Random weights answer noise: it must parse as "no verdict", never as a decision.
    for verdict in verdicts:
        assert verdict == parse_verdict(verdict.raw, SPEC)
    assert escalator.info.components["escalation_vlm"].startswith("LlavaForConditionalGeneration")
