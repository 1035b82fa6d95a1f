"""Every rule kind of the policy engine, policy selection by metadata, and shadow comparison (pure, no I/O)."""

from __future__ import annotations

from typing import Any

import pytest

from moderator.banks.schema import BankKind, BankMatch
from moderator.policy.engine import bank_verdict, evaluate
from moderator.policy.policyset import PolicySet
from moderator.policy.schema import Action, Policy
from moderator.policy.shadow import ShadowMonitor

CATEGORIES = [{"name": n, "prompts": [f"a {n} photo"]} for n in ("nudity", "violence", "scam")]


def policy(*rules: dict[str, Any], **fields: Any) -> Policy:
    return Policy.model_validate({"name": "p", "version": "1", "categories": CATEGORIES, "rules": list(rules),
                                  **fields})


def fired(p: Policy, scores: dict[str, float], metadata: dict[str, Any] | None = None,
          matches: list[BankMatch] | None = None) -> list[str]:
    return [r.rule for r in evaluate(p, scores, metadata or {}, matches or []).reasons]


def test_threshold_shorthand_fires_at_and_above_the_threshold() -> None:
    p = policy({"name": "scam-block", "category": "scam", "threshold": 0.8, "action": "block"})
    assert fired(p, {"scam": 0.8}) == ["scam-block"]
    assert fired(p, {"scam": 0.7999}) == []
    verdict = evaluate(p, {"scam": 0.9})
    assert verdict.action is Action.BLOCK
    reason = verdict.reasons[0]
    assert (reason.category, reason.score, reason.threshold, reason.label) == ("scam", 0.9, 0.8, "scam-block")


def test_score_condition_with_a_range_and_a_missing_category() -> None:
    p = policy({"name": "band", "when": {"score": "nudity", "gte": 0.4, "lt": 0.6}, "action": "review"})
    assert fired(p, {"nudity": 0.4}) == ["band"]
    assert fired(p, {"nudity": 0.6}) == []
    assert fired(p, {"nudity": 0.39}) == []
    assert fired(p, {}) == [], "a category without a score never satisfies a score test"


@pytest.mark.parametrize(("test", "metadata", "holds"), [
    ({"equals": "ads"}, {"surface": "ads"}, True),
    ({"equals": "ads"}, {"surface": "feed"}, False),
    ({"equals": "ads"}, {}, False),
    ({"in": ["ads", "shop"]}, {"surface": "shop"}, True),
    ({"in": ["ads", "shop"]}, {"surface": "feed"}, False),
    ({"not_in": ["ads"]}, {"surface": "feed"}, True),
    ({"not_in": ["ads"]}, {}, True),
    ({"not_in": ["ads"]}, {"surface": "ads"}, False),
    ({"exists": True}, {"surface": None}, False),
    ({"exists": False}, {}, True),
])
def test_metadata_tests_on_text_values(test: dict[str, Any], metadata: dict[str, Any], holds: bool) -> None:
    p = policy({"name": "m", "when": {"metadata": "surface", **test}, "action": "review"})
    assert fired(p, {}, metadata) == (["m"] if holds else [])


@pytest.mark.parametrize(("value", "holds"), [(3, True), (6.9, True), (7, False), ("3", False), (True, False),
                                              (None, False)])
def test_metadata_numeric_tests_need_numbers(value: object, holds: bool) -> None:
    p = policy({"name": "young", "when": {"metadata": "account_age_days", "lt": 7}, "action": "review"})
    assert fired(p, {}, {"account_age_days": value}) == (["young"] if holds else [])


def test_metadata_dotted_keys_reach_nested_objects() -> None:
    p = policy({"name": "trusted", "when": {"metadata": "user.trust", "gte": 0.9}, "action": "allow"})
    assert fired(p, {}, {"user": {"trust": 0.95}}) == ["trusted"]
    assert fired(p, {}, {"user": {"trust": 0.5}}) == []
    assert fired(p, {}, {"user": "not an object"}) == []


def test_any_all_not_combinations() -> None:
    p = policy(
        {"name": "any", "when": {"any": [{"score": "scam", "gte": 0.9}, {"metadata": "locale", "equals": "xx"}]},
         "action": "review"},
        {"name": "all", "when": {"all": [{"score": "nudity", "gte": 0.3}, {"metadata": "surface", "equals": "kids"}]},
         "action": "block"},
        {"name": "not", "when": {"not": {"metadata": "locale", "in": ["en", "de"]}}, "action": "review"},
    )
    assert fired(p, {"scam": 0.95, "nudity": 0.0}, {"locale": "en"}) == ["any"]
    assert fired(p, {"scam": 0.0, "nudity": 0.0}, {"locale": "xx"}) == ["any", "not"]
    assert fired(p, {"nudity": 0.5}, {"surface": "kids", "locale": "de"}) == ["all"]
    assert fired(p, {"nudity": 0.5}, {"surface": "feed", "locale": "de"}) == []
    # The reason of a combination reports its score test, not the metadata test beside it.
    reason = evaluate(p, {"nudity": 0.5}, {"surface": "kids", "locale": "en"}).reasons[0]
    assert (reason.category, reason.score, reason.threshold) == ("nudity", 0.5, 0.3)
    reason = evaluate(p, {}, {"locale": "fr"}).reasons[0]
    assert (reason.rule, reason.category, reason.score, reason.threshold) == ("not", "rule", 1.0, 1.0)


def test_bank_condition_matches_within_the_rule_distance() -> None:
    p = policy({"name": "known", "when": {"bank": "csam-pdq", "max_distance": 20}, "action": "block",
                "reason": "known bad image"})

    def match(distance: int, bank: str = "csam-pdq") -> BankMatch:
        return BankMatch(bank=bank, kind=BankKind.PDQ, hash="0" * 64, distance=distance)

    assert fired(p, {}, {}, [match(20)]) == ["known"]
    assert fired(p, {}, {}, [match(21)]) == []
    assert fired(p, {}, {}, [match(0, bank="other")]) == []
    reason = evaluate(p, {}, {}, [match(8)]).reasons[0]
    assert reason.category == "bank:csam-pdq" and reason.label == "known bad image"
    assert reason.bank is not None and reason.bank.distance == 8
    assert reason.score == pytest.approx(1 - 8 / 256) and reason.threshold == pytest.approx(1 - 20 / 256)
    assert p.bank_limits == {"csam-pdq": 20}


def test_a_bank_verdict_decides_before_scores_only_when_a_bank_rule_fires() -> None:
    p = policy({"name": "surface-ads", "when": {"metadata": "surface", "equals": "ads"}, "action": "review"},
               {"name": "known", "when": {"bank": "b"}, "action": "block"})
    hit = BankMatch(bank="b", kind=BankKind.SHA256, hash="a" * 64, distance=0)
    verdict = bank_verdict(p, {"surface": "ads"}, [hit])
    assert verdict is not None and verdict.action is Action.BLOCK and verdict.from_bank
    assert bank_verdict(p, {"surface": "ads"}, []) is None, "no match: the model decides"
    assert bank_verdict(p, {}, [BankMatch(bank="other", kind=BankKind.SHA256, hash="a" * 64, distance=0)]) is None


def test_most_severe_fired_rule_wins_and_stop_ends_evaluation() -> None:
    rules = [
        {"name": "review", "category": "scam", "threshold": 0.5, "action": "review"},
        {"name": "block", "category": "scam", "threshold": 0.7, "action": "block"},
    ]
    assert evaluate(policy(*rules), {"scam": 0.8}).action is Action.BLOCK
    allow_first = {"name": "trusted", "when": {"metadata": "trust", "gte": 0.9}, "action": "allow", "stop": True}
    verdict = evaluate(policy(allow_first, *rules), {"scam": 0.8}, {"trust": 0.95})
    assert verdict.action is Action.ALLOW and [r.rule for r in verdict.reasons] == ["trusted"]
    assert verdict.deciding is not None and verdict.deciding.rule == "trusted"
    assert evaluate(policy(allow_first, *rules), {"scam": 0.8}, {"trust": 0.1}).action is Action.BLOCK


def test_default_action_applies_when_nothing_fires() -> None:
    p = policy({"name": "x", "category": "scam", "threshold": 0.9, "action": "block"}, default_action="review")
    verdict = evaluate(p, {"scam": 0.1})
    assert verdict.action is Action.REVIEW and verdict.reasons == [] and verdict.deciding is None


def _set(*policies: Policy) -> PolicySet:
    return PolicySet({p.name: p for p in policies}, "default", {p.name: "" for p in policies},
                     {p.name: f"{p.name}.yaml" for p in policies})


def test_policies_are_selected_by_metadata_with_one_default() -> None:
    default = policy(name="default", default=True)
    ads = policy(name="ads", applies_when={"metadata": "surface", "equals": "ads"})
    kids = policy(name="kids", applies_when={"all": [{"metadata": "surface", "in": ["feed", "ads"]},
                                                     {"metadata": "audience", "equals": "kids"}]})
    shadow = policy(name="candidate", shadow_of="default")
    policies = _set(default, ads, kids, shadow)
    assert policies.select({"surface": "ads"}).name == "ads"
    assert policies.select({"surface": "feed", "audience": "kids"}).name == "kids"
    assert policies.select({"surface": "ads", "audience": "kids"}).name == "ads", "first match in file order"
    assert policies.select({"surface": "feed"}).name == "default"
    assert policies.select({}).name == "default"
    assert [p.name for p in policies.shadows_of("default")] == ["candidate"]
    assert all(policies.select(m).name != "candidate" for m in ({}, {"surface": "ads"})), "shadows never decide"


def test_shadow_disagreements_are_counted_without_changing_the_live_verdict() -> None:
    live = policy({"name": "scam-block", "category": "scam", "threshold": 0.8, "action": "block"}, name="default")
    candidate = policy({"name": "scam-block", "category": "scam", "threshold": 0.5, "action": "block"},
                       name="candidate", shadow_of="default")
    monitor = ShadowMonitor()
    results = []
    for i, scam in enumerate([0.1, 0.6, 0.7, 0.9]):
        verdict = evaluate(live, {"scam": scam})
        results.append(verdict.action)
        found = monitor.compare([candidate], live, verdict, f"p{i}", {"scam": scam}, {}, [])
        assert len(found) == (1 if 0.5 <= scam < 0.8 else 0)
    assert results == [Action.ALLOW, Action.ALLOW, Action.ALLOW, Action.BLOCK]
    counts = monitor.counts["candidate"]
    assert (counts.evaluated, counts.disagreed, counts.transitions) == (4, 2, {"allow->block": 2})


def test_reasons_say_what_kind_of_test_held_and_its_name() -> None:
    p = policy({"name": "known", "when": {"bank": "scams"}, "action": "block"},
               {"name": "new-user", "when": {"metadata": "account.age_days", "lt": 7}, "action": "review"},
               {"name": "not-trusted", "when": {"not": {"metadata": "trusted", "equals": True}}, "action": "review"},
               {"name": "mixed", "when": {"all": [{"metadata": "account.age_days", "lt": 7},
                                                  {"score": "scam", "gte": 0.5}]}, "action": "review"})
    match = BankMatch(bank="scams", kind=BankKind.SHA256, hash="ab" * 32, distance=0)
    reasons = evaluate(p, {"scam": 0.6}, {"account": {"age_days": 2}}, [match]).reasons
    assert [(r.kind.value, r.name, r.category) for r in reasons] == [
        ("bank", "scams", "bank:scams"), ("metadata", "account.age_days", "metadata:account.age_days"),
        ("rule", None, "rule"), ("score", "scam", "scam")]
