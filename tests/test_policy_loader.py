"""Policy files: invalid edits are rejected with file:line:field messages; `policy validate` exits non-zero;
the JSON Schema shipped for editors is the one the model exports and accepts the shipped policies."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import jsonschema
import pytest
import yaml
from typer.testing import CliRunner

from moderator.cli import build_app
from moderator.evaldata import CATEGORIES
from moderator.policy.loader import PolicyError, load_candidate, load_policy_set, parse_policy
from moderator.policy.schema import policy_json_schema

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = (ROOT / "policies" / "default.yaml").read_text(encoding="utf-8")
EXAMPLES = sorted((ROOT / "docs" / "policy-examples").glob("*.yaml"))


def line_containing(text: str, needle: str) -> int:
    """1-based number of the only line containing ``needle`` (the tests' own way to find it)."""
    found = [i for i, line in enumerate(text.splitlines(), 1) if needle in line]
    assert len(found) == 1, f"{needle!r} is on lines {found}"
    return found[0]


def rule_line(name: str) -> str:
    """The shipped default policy's line of rule ``name`` (thresholds move when heads are retrained)."""
    return DEFAULT.splitlines()[line_containing(DEFAULT, f"name: {name},") - 1]


DRUGS_RULE = rule_line("drugs-review")


def edited(old: str, new: str) -> str:
    assert DEFAULT.count(old) == 1
    return DEFAULT.replace(old, new)


def rejection(text: str, source: str = "policies/default.yaml") -> str:
    with pytest.raises(PolicyError) as caught:
        parse_policy(text, source)
    return str(caught.value)


def test_shipped_policy_is_valid_and_keeps_its_categories() -> None:
    policies = load_policy_set(ROOT / "policies")
    default = policies.default_policy
    assert default.name == "default" and policies.default == "default"
    assert [c.name for c in default.categories] == list(CATEGORIES)
    assert default.provider_mappings["harassment_threatening"].openai == ("harassment/threatening", "violence")
    assert all(c.threshold_fpr == 0.02 for c in default.categories if c.name != "sexual_minors")


def test_yaml_syntax_error_names_file_and_line() -> None:
    assert DRUGS_RULE.endswith("}")
    text = edited(DRUGS_RULE, DRUGS_RULE[:-1])
    message = rejection(text)
    assert message.startswith("policies/default.yaml:")
    assert "invalid YAML" in message
    line = int(message.split(":")[1])
    assert abs(line - line_containing(text, "name: drugs-review")) <= 1, message


def test_unknown_category_names_the_rule_line_and_field() -> None:
    text = edited(DRUGS_RULE, DRUGS_RULE.replace("category: drugs,", "category: drugz,"))
    message = rejection(text)
    assert message == (f"policies/default.yaml:{line_containing(text, 'drugz')}: rules[10].category: rule "
                       "'drugs-review' uses unknown category 'drugz' (known: drugs, harassment, harassment_threatening, hate, hate_threatening, scam, self_harm, sexual, sexual_minors, violence, violence_graphic, weapons)")


def test_unknown_category_inside_a_condition_is_located() -> None:
    text = DEFAULT + ("  - name: combo\n    when:\n      all:\n        - {metadata: surface, equals: kids}\n"
                      "        - {score: violense, gte: 0.2}\n    action: block\n")
    message = rejection(text)
    assert message.startswith(f"policies/default.yaml:{line_containing(text, 'violense')}: rules[21].when.all[1]: ")
    assert "unknown category 'violense'" in message


@pytest.mark.parametrize("threshold", ["1.5", "-0.1"])
def test_threshold_outside_0_1_is_rejected_with_its_line(threshold: str) -> None:
    rule = rule_line("scam-block")
    text = edited(rule, re.sub(r"threshold: [0-9.]+,", f"threshold: {threshold},", rule))
    message = rejection(text)
    assert message.startswith(f"policies/default.yaml:{line_containing(text, 'scam-block')}: rules[20].threshold: ")


def test_threshold_outside_0_1_in_a_condition_is_rejected_with_its_line() -> None:
    text = DEFAULT + "  - name: deep\n    when:\n      any:\n        - score: scam\n          gte: 2\n"
    text += "    action: block\n"
    message = rejection(text)
    assert message.startswith(f"policies/default.yaml:{line_containing(text, 'gte: 2')}: rules[21].when.any[0].gte: ")


def test_duplicate_rule_and_category_names_are_rejected() -> None:
    text = edited("{name: hate-block,", "{name: hate-review,")
    second = [i for i, line in enumerate(text.splitlines(), 1) if "name: hate-review" in line][-1]
    assert rejection(text) == f"policies/default.yaml:{second}: rules[14].name: duplicate rule name 'hate-review'"
    text = edited("  - name: hate\n", "  - name: scam\n")
    message = rejection(text)
    lines = [i for i, line in enumerate(text.splitlines(), 1) if line == "  - name: scam"]
    assert f"policies/default.yaml:{lines[1]}: categories[11].name: duplicate category name 'scam'" in message


def test_duplicate_yaml_keys_are_rejected() -> None:
    text = edited('version: "2"\n', 'version: "2"\nversion: "3"\n')
    line = line_containing(text, 'version: "3"')
    assert rejection(text) == f"policies/default.yaml:{line}: version: duplicate key"


def test_unknown_fields_and_malformed_conditions_are_located() -> None:
    text = DEFAULT + "  - name: typo\n    when: {metadata: surface, equal: ads}\n    action: block\n"
    assert f"policies/default.yaml:{line_containing(text, 'equal: ads')}: rules[21].when.equal: " in rejection(text)
    text = DEFAULT + "  - name: bad\n    when: {scor: nudity}\n    action: block\n"
    assert "a condition needs one of the keys: score, metadata, bank, any, all, not" in rejection(text)
    text = DEFAULT + "  - {name: both, category: scam, threshold: 0.5, when: {score: scam, gte: 0.5}, action: block}\n"
    assert "give either category + threshold or when, not both" in rejection(text)


def _policy_dir(tmp_path: Path, **files: str) -> Path:
    directory = tmp_path / "policies"
    directory.mkdir(parents=True)
    (directory / "default.yaml").write_text(DEFAULT, encoding="utf-8")
    for name, text in files.items():
        (directory / f"{name}.yaml").write_text(text, encoding="utf-8")
    return directory


def test_directory_rules_duplicate_policy_names_inheritance_and_shadows(tmp_path: Path) -> None:
    other = "name: default\nversion: 2\nrules: []\n"
    directory = _policy_dir(tmp_path, other=other)
    with pytest.raises(PolicyError) as caught:
        load_policy_set(directory)
    assert str(caught.value).startswith(f"{directory}/other.yaml:1: name: policy 'default' is also defined in ")

    ads = ("name: ads\nversion: 1\napplies_when: {metadata: surface, equals: ads}\n"
           "rules:\n  - {name: x, category: sexuall, threshold: 0.5, action: block}\n"
           "  - {name: y, category: sexual_minors, threshold: 0.5, action: block}\n")
    directory = _policy_dir(tmp_path / "b", ads=ads)
    with pytest.raises(PolicyError) as caught:
        load_policy_set(directory)
    assert str(caught.value).startswith(f"{directory}/ads.yaml:5: rules[0].category: rule 'x' uses unknown category")

    own = "name: own\nversion: 1\ncategories:\n  - {name: spam, prompts: [spam]}\n"
    directory = _policy_dir(tmp_path / "c", own=own)
    with pytest.raises(PolicyError, match=r"own.yaml:4: categories: only the default policy declares"):
        load_policy_set(directory)

    shadow = "name: cand\nversion: 1\nshadow_of: nope\n"
    directory = _policy_dir(tmp_path / "d", cand=shadow)
    with pytest.raises(PolicyError, match=r"cand.yaml:3: shadow_of: 'nope' is not a live policy"):
        load_policy_set(directory)

    second_default = "name: other\nversion: 1\ndefault: true\n"
    directory = _policy_dir(tmp_path / "e", other=second_default)
    with pytest.raises(PolicyError, match=r"default: more than one policy is the default"):
        load_policy_set(directory)

    directory = _policy_dir(tmp_path / "f", ads=ads.replace("sexuall", "sexual"))
    policies = load_policy_set(directory)
    assert policies.policies["ads"].categories == policies.default_policy.categories, "ads inherits the categories"
    assert policies.select({"surface": "ads"}).name == "ads"


def test_every_problem_of_every_file_is_reported(tmp_path: Path) -> None:
    directory = _policy_dir(tmp_path, a="name: a\nversion: 1\nrules: [{name: r, category: x, threshold: 7, "
                                         "action: block}]\n", b="name: [\n")
    with pytest.raises(PolicyError) as caught:
        load_policy_set(directory)
    lines = str(caught.value).splitlines()
    assert any(line.startswith(f"{directory}/a.yaml:3: rules[0].threshold: ") for line in lines), lines
    assert any(line.startswith(f"{directory}/b.yaml:") and "invalid YAML" in line for line in lines), lines


def test_policy_validate_exit_codes_for_ci(tmp_path: Path) -> None:
    runner = CliRunner()
    app = build_app()
    good = runner.invoke(app, ["policy", "validate", str(ROOT / "policies")])
    assert good.exit_code == 0, good.output
    assert "ok" in good.output and "default v2" in good.output
    broken = _policy_dir(tmp_path, ads="name: ads\nversion: 1\nrules: [{name: r, category: scam, threshold: 1.2, "
                                       "action: block}]\n")
    bad = runner.invoke(app, ["policy", "validate", str(broken)])
    assert bad.exit_code == 1
    assert f"{broken}/ads.yaml:3: rules[0].threshold: Input should be less than or equal to 1" in bad.output
    single = runner.invoke(app, ["policy", "validate", str(broken / "default.yaml")])
    assert single.exit_code == 1, "a file is validated together with the directory it will serve from"


def test_serve_with_a_missing_or_broken_policy_directory_exits_with_one_clear_message(tmp_path: Path) -> None:
    runner = CliRunner()
    broken = _policy_dir(tmp_path, ads="name: ads\nversion: [\n")
    for directory, expected in ((tmp_path / "nowhere", "MODERATOR_POLICY_DIR"), (broken, "ads.yaml:")):
        result = runner.invoke(build_app(), ["serve"], env={"MODERATOR_POLICY_DIR": str(directory),
                                                             "MODERATOR_KAFKA_BOOTSTRAP": "127.0.0.1:1"})
        assert result.exit_code == 2, result.output
        assert expected in result.output and str(directory) in result.output
        assert "Traceback" not in result.output


def test_exported_json_schema_is_shipped_and_accepts_the_policies() -> None:
    shipped = json.loads((ROOT / "docs" / "policy.schema.json").read_text(encoding="utf-8"))
    assert shipped == policy_json_schema(), "regenerate with: moderator policy schema --out docs/policy.schema.json"
    result = CliRunner().invoke(build_app(), ["policy", "schema"])
    assert result.exit_code == 0 and json.loads(result.output) == shipped
    validator = jsonschema.Draft202012Validator(shipped)
    for path in [ROOT / "policies" / "default.yaml", *EXAMPLES]:
        assert not list(validator.iter_errors(yaml.safe_load(path.read_text(encoding="utf-8")))), path
    hate = rule_line("hate-review")
    bad = yaml.safe_load(DEFAULT.replace(hate, re.sub(r"threshold: [0-9.]+,", "threshold: 1.8,", hate)))
    assert [list(e.absolute_path) for e in validator.iter_errors(bad)] == [["rules", 4, "threshold"]]


def test_documented_examples_validate_beside_the_default(tmp_path: Path) -> None:
    directory = _policy_dir(tmp_path)
    for example in EXAMPLES:
        shutil.copy(example, directory / example.name)
    policies = load_policy_set(directory)
    assert {"ads", "default-candidate"} <= set(policies.policies)
    _, candidate = load_candidate(EXAMPLES[0], ROOT / "policies")
    assert candidate.categories == policies.default_policy.categories


def test_always_block_category_cannot_be_let_through() -> None:
    review = "  - {name: sexual-minors-review, category: sexual_minors, threshold: 0.9995, action: review}\n"
    assert "category 'sexual_minors' is always_block: add a rule" in rejection(edited(review, ""))
    bank = "  - {name: sexual-minors-bank, when: {bank: csam}, action: block, stop: true}\n"
    assert "always_block" in rejection(edited(bank, "")), "without the bank block the score only reviews"
    unbanked = edited("    banks: [csam]\n", "")
    assert "always_block" in rejection(unbanked), "a category without banks must block on its score"
    for threshold, action in (("0.9", "block"), ("0.5", "review")):
        low = unbanked.replace("threshold: 0.9995, action: review}", f"threshold: {threshold}, action: {action}}}")
        assert "always_block" in rejection(low), "a block threshold above 0.5 would let scores up to it through"
    blocking = unbanked.replace("threshold: 0.9995, action: review}", "threshold: 0.5, action: block}")
    assert parse_policy(blocking, "policies/default.yaml").name == "default"
    escalating = DEFAULT + "escalation: {model: some/vlm, on_safe: allow}\n"
    assert "escalation.on_safe" in rejection(escalating) or "escalation may not allow it" in rejection(escalating)


def test_provider_mappings_use_the_providers_own_names() -> None:
    text = edited("maps_to: {openai: [hate], llama_guard: [S10]}", "maps_to: {openai: [hateful], llama_guard: [S10]}")
    assert "categories[2].maps_to.openai[0]: Input should be" in rejection(text)
    text = edited("maps_to: {openai: [hate], llama_guard: [S10]}", "maps_to: {openai: [hate], llama_guard: [S15]}")
    assert "categories[2].maps_to.llama_guard[0]: Input should be" in rejection(text)
