"""`moderator classify` and `moderator heads train|eval`: the model layer from the command line."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from moderator.cli.errors import fail, policy_errors, read_image_file
from moderator.cli.output import stdout_console
from moderator.model.base import HeadSpec
from moderator.settings import Settings

if TYPE_CHECKING:
    from moderator.evaldata import LabeledPost
    from moderator.model.calibration import Calibration
    from moderator.model.heads import HeadKind, TaskHead
    from moderator.model.scoring import Encoded, HeadedClassifier
    from moderator.model.tuned_layers import TunedLayers
    from moderator.model.tuning import TuneSettings

console = stdout_console()
# Progress lines go to stderr so that `--json` and `--markdown` output can be redirected as is.
status = Console(stderr=True)

PolicyDirOption = Annotated[
    Path | None, typer.Option("--policy-dir", help="Policy directory (default: MODERATOR_POLICY_DIR or ./policies)")
]
PolicyOption = Annotated[str | None, typer.Option("--policy", help="Policy name (default: 'default' or the only one)")]
HeadsDirOption = Annotated[
    Path | None, typer.Option("--heads-dir", help="Trained heads (default: MODERATOR_HEADS_DIR)")
]
CvFoldsOption = Annotated[
    int, typer.Option("--cv-folds", help="K > 1: grouped K-fold over --data and --dev together (posts grouped by "
                      "metadata.phrasing); L2 and thresholds chosen on out-of-fold scores, the head trained on both. "
                      "0: train on --data, choose on --dev")
]
TuneLayersOption = Annotated[
    int, typer.Option("--tune-layers", help="With --cv-folds, offline stack: fine-tune the biases and LayerNorm of "
                      "MiniLM's top N layers with the head (in every fold too); written beside the head, they make "
                      "its features. 0: frozen")
]
TuneEpochsOption = Annotated[int, typer.Option("--tune-epochs", help="Epochs of --tune-layers training")]
TuneLrOption = Annotated[float, typer.Option("--tune-lr", help="AdamW learning rate of the tuned layers (the head's "
                                                               "is a tenth of it)")]
# How ``--cv-folds`` makes the head it writes (``FinalOption``).
FINAL_HEADS = ("soup", "refit")
FinalOption = Annotated[
    str, typer.Option("--final", help="With --cv-folds, the head written: soup (the chosen L2's fold models averaged, "
                      "tuned layers too: the models whose out-of-fold scores chose the thresholds) or refit (fitted "
                      "again on all of the data, whose scores can sit on another scale than the thresholds')")
]
AllocationOption = Annotated[
    str, typer.Option("--allocation", help="With --cv-folds, how the post-level FPR budget is shared: maximin (lower "
                      "the category with the lowest recall first, so each gets a share) or total (lower whichever "
                      "buys the most harmful posts)")
]


def _settings(policy_dir: Path | None, heads_dir: Path | None) -> Settings:
    settings = Settings()
    update: dict[str, object] = {}
    if policy_dir is not None:
        update["policy_dir"] = policy_dir
    if heads_dir is not None:
        update["heads_dir"] = heads_dir
    return settings.model_copy(update=update)


def _head_spec(settings: Settings, name: str | None) -> HeadSpec:
    from moderator.policy.loader import load_policy_dir

    with policy_errors(settings.policy_dir):
        policies = load_policy_dir(settings.policy_dir)
    if name is None:
        name = "default" if "default" in policies or len(policies) != 1 else next(iter(policies))
    if name not in policies:
        fail(f"--policy {name}: no such policy in {settings.policy_dir} (have: {', '.join(sorted(policies))})")
    return policies[name].head_spec()


def _read_labeled(path: Path) -> list[LabeledPost]:
    from moderator.evaldata import read_labeled

    try:
        return read_labeled(path)
    except FileNotFoundError:
        fail(f"--data {path}: no such file")
    except (OSError, ValueError) as exc:  # read_labeled's ValueError names file:line
        fail(f"{exc}; each line is {{\"post\": {{...}}, \"labels\": {{\"category\": 0 or 1}}}}")


def classify(
    image: Annotated[Path | None, typer.Option("--image", help="Image file to score")] = None,
    text: Annotated[str | None, typer.Option("--text", help="Caption to score")] = None,
    policy_dir: PolicyDirOption = None,
    policy: PolicyOption = None,
    heads_dir: HeadsDirOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table")] = False,
) -> None:
    """Score one image and/or text locally with the configured model (offline stack by default)."""
    from moderator.ingest.errors import IngestError
    from moderator.ingest.images import ImageLimits, decode_image
    from moderator.model.base import ModelInput
    from moderator.model.loader import load_classifier

    if image is None and not text:
        fail("nothing to score: give --image FILE, --text TEXT or both")
    settings = _settings(policy_dir, heads_dir)
    spec = _head_spec(settings, policy)
    decoded = None
    if image is not None:
        limits = ImageLimits(settings.max_image_bytes, settings.max_image_pixels, settings.max_image_side)
        try:
            decoded = decode_image(read_image_file(image), limits)
        except IngestError as exc:
            fail(f"--image {image}: {exc.detail}; give a JPEG, PNG, GIF or WebP file")
    classifier = load_classifier(settings, spec)
    scores = classifier.score_batch([ModelInput(text=text, image=decoded)])[0]
    info = classifier.info
    if as_json:
        typer.echo(json.dumps({"scores": scores, "model": info.model_dump()}, indent=2))
        return
    table = Table(title=f"{info.name} {info.version}")
    table.add_column("category")
    table.add_column("score", justify="right")
    for category, score in scores.items():
        table.add_row(category, f"{score:.3f}")
    console.print(table)
    for component, version in info.components.items():
        console.print(f"  [dim]{component}: {version}[/dim]")


def train(
    data: Annotated[Path | None, typer.Option("--data", help="Labeled JSONL [default: shipped train split]")] = None,
    dev: Annotated[
        Path | None,
        typer.Option("--dev", help="Labeled JSONL to select L2 and thresholds on [default: shipped dev split "
                     "when --data is the shipped train split]"),
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="Heads directory (default: MODERATOR_HEADS_DIR or ./heads)")
    ] = None,
    name: Annotated[str, typer.Option("--name", help="Head file name")] = "task-head",
    kind: Annotated[str, typer.Option("--kind", help="shared, linear or mlp")] = "shared",
    steps: Annotated[int, typer.Option("--steps", help="L-BFGS iterations")] = 200,
    l2: Annotated[
        list[float] | None, typer.Option("--l2", help="L2 strength; several: the best on --dev wins")
    ] = None,
    benign_weight: Annotated[
        float, typer.Option("--benign-weight", help="Weight of benign posts against other negatives")
    ] = 10.0,
    fpr: Annotated[float, typer.Option("--fpr", help="Post-level false-positive rate to choose thresholds for")] = 0.02,
    margin: Annotated[
        list[float] | None,
        typer.Option("--margin", help="Logit margin added to each threshold chosen on dev (unseen benign phrasings "
                     "score higher than dev's) [default: 1.5]; with --cv-folds, several: the one whose held-out "
                     "FPR stays within --fpr with the most held-out recall wins"),
    ] = None,
    cv_folds: CvFoldsOption = 0,
    allocation: AllocationOption = "maximin",
    final: FinalOption = "soup",
    tune_layers: TuneLayersOption = 0,
    tune_epochs: TuneEpochsOption = 3,
    tune_lr: TuneLrOption = 1e-3,
    policy_dir: PolicyDirOption = None,
    policy: PolicyOption = None,
) -> None:
    """Train a task head (and zero-shot calibration) on frozen features of the active encoder.

    With a dev set, the L2 strength with the best mean recall at 2% FPR on dev is kept, and
    thresholds for ``--fpr`` (post-level, on dev) are printed as policy rules. With ``--cv-folds``,
    both are chosen on out-of-fold scores over train and dev, and the head is fitted on both.
    """
    from moderator.evaldata import DEV_PATH, TRAIN_PATH
    from moderator.model.tuning import TuneSettings

    if final == "soup" and cv_folds < 2:
        final = "refit"  # without folds there is nothing to average: one head on --data
    _check_choices(kind, allocation, final)
    settings = _settings(policy_dir, None)
    out_dir = out or settings.heads_dir or Path("heads")
    data_path = data or TRAIN_PATH
    dev_path = dev or (DEV_PATH if data is None else None)
    spec = _head_spec(settings, policy)
    tuning = TuneSettings(tune_layers, tune_epochs, tune_lr, tune_lr / 10) if tune_layers else None
    classifier = _training_classifier(settings, spec, tuning, cv_folds, kind)
    examples, encoded, labels = _encoded(classifier, data_path, "")
    dev_set = _encoded(classifier, dev_path, "dev ") if dev_path is not None else None
    margins = margin or [1.5]
    if cv_folds > 1:
        sources = [data_path] + ([dev_path] if dev_path is not None else [])
        if dev_set is not None:
            examples, encoded, labels = _joined((examples, encoded, labels), dev_set)
        fit = _fitter(classifier, (examples, encoded, labels), name=name, kind=kind, steps=steps,
                      benign_weight=benign_weight, tuning=tuning)
        strength, head, calibration, thresholds = _cross_validated(
            classifier, (examples, encoded, labels), sources, l2 or [1e-2], fit, folds=cv_folds,
            benign_weight=benign_weight, fpr=fpr, margins=margins, allocation=allocation, final=final,
            out_dir=out_dir)
        chosen_for = f"{fpr:g} post-level FPR on {cv_folds}-fold out-of-fold scores ({allocation})"
    else:
        strength, head, calibration = _best_on_dev(classifier, encoded, labels, dev_set, l2 or [1e-2], name=name,
                                                   kind=kind, steps=steps, benign_weight=benign_weight)
        thresholds = _record_metrics(head, spec.names, calibration, (examples, encoded, labels), data_path, dev_set,
                                     dev_path, strength=strength, benign_weight=benign_weight, fpr=fpr,
                                     margin=margins[0])
        chosen_for = f"{fpr:g} post-level FPR on {dev_path.name if dev_path else ''}"
    _write_head(head, calibration, spec, out_dir, strength=strength, tuned=tuning is not None)
    if thresholds:
        _print_thresholds(thresholds, f"{chosen_for}, logit margin {head.metrics['thresholds']['margin']:g}")


def _write_head(head: TaskHead, calibration: Calibration, spec: HeadSpec, out_dir: Path, *, strength: float,
                tuned: bool) -> None:
    """The head and its zero-shot calibration into ``out_dir`` (tuned text layers are already there)."""
    from moderator.model.calibration import CALIBRATION_FILE
    from moderator.model.tuned_layers import TUNED_LAYERS_FILE

    if not tuned:  # a head on frozen features: tuned layers left from an earlier run would hide it
        (out_dir / TUNED_LAYERS_FILE).unlink(missing_ok=True)
    path = head.save(out_dir)
    (out_dir / CALIBRATION_FILE).write_text(
        calibration.to_json(encoder=head.encoder, fingerprint=spec.fingerprint()), encoding="utf-8"
    )
    console.print(f"head {head.name} ({head.kind}, l2={strength:g}) version {head.version} -> {path}")
    console.print(f"categories: {', '.join(head.categories)}; zero-shot calibration -> {out_dir / CALIBRATION_FILE}")


LabeledSet = tuple["list[LabeledPost]", "Encoded", np.ndarray]


def _check_choices(kind: str, allocation: str, final: str) -> None:
    """Refuse a head kind, budget allocation or final head that does not exist (or a soup of MLPs)."""
    from moderator.model.crossval import ALLOCATIONS
    from moderator.model.heads import HEAD_KINDS

    if kind not in HEAD_KINDS:
        fail(f"--kind {kind}: must be one of {', '.join(HEAD_KINDS)}")
    if allocation not in ALLOCATIONS:
        fail(f"--allocation {allocation}: must be one of {', '.join(ALLOCATIONS)}")
    if final not in FINAL_HEADS:
        fail(f"--final {final}: must be one of {', '.join(FINAL_HEADS)}")
    if final == "soup" and kind == "mlp":
        fail("--final soup averages linear heads: use --kind shared or linear, or --final refit")


def _encoded(classifier: HeadedClassifier, path: Path, what: str) -> LabeledSet:
    """A labeled file's posts, their features (cached) and label matrix."""
    from moderator.evaldata import label_matrix
    from moderator.model.evaluation import encode_examples

    examples = _read_labeled(path)
    status.print(f"encoding {len(examples)} {what}posts from {path} with {classifier.info.name} ...")
    return examples, encode_examples(classifier, examples), label_matrix(examples, classifier.spec.names)


def _joined(first: LabeledSet, second: LabeledSet) -> LabeledSet:
    """Two encoded labeled sets as one (train and dev, for cross-validation)."""
    from moderator.model.scoring import Encoded

    encoded = Encoded(*(np.concatenate([getattr(first[1], f), getattr(second[1], f)])
                        for f in ("features", "zero_shot", "floor")))
    return [*first[0], *second[0]], encoded, np.concatenate([first[2], second[2]])


def _training_classifier(settings: Settings, spec: HeadSpec, tuning: TuneSettings | None, cv_folds: int,
                         kind: str) -> HeadedClassifier:
    """The classifier whose features a head is trained on: for the offline stack, its frozen text
    layers (tuned ones in a heads directory are not a starting point; ``--tune-layers`` makes new ones)."""
    from moderator.model.loader import load_classifier
    from moderator.model.offline import OfflineStackClassifier

    if tuning is not None and (settings.model or cv_folds < 2 or kind != "shared"):
        fail("--tune-layers needs the offline stack (no MODERATOR_MODEL), --cv-folds 2 or more and --kind shared")
    if settings.model:
        return load_classifier(settings, spec)
    return OfflineStackClassifier(spec, device=settings.device, heads_dir=settings.heads_dir, tuned_layers=False)


# (L2, training rows) -> a head, its zero-shot calibration, features of every post for that head,
# and the tuned text layers (None: frozen features).
Fit = Callable[[float, np.ndarray], "tuple[TaskHead, Calibration, Encoded, TunedLayers | None]"]


def _fitter(classifier: HeadedClassifier, data: LabeledSet, *, name: str, kind: HeadKind, steps: int,
            benign_weight: float, tuning: TuneSettings | None) -> Fit:
    """How a head is fitted on some rows: on the frozen features, or tuned with the text layers."""
    from moderator.model.evaluation import fit_heads, read_examples, zero_shot_calibration
    from moderator.model.offline import OfflineStackClassifier
    from moderator.model.tuning import fit_tuned_head, text_states, tuned_encoded

    examples, encoded, labels = data
    if tuning is None:
        def frozen(l2: float, rows: np.ndarray) -> tuple[TaskHead, Calibration, Encoded, TunedLayers | None]:
            head, calibration = fit_heads(classifier, encoded.rows(rows), labels[rows], name=name, kind=kind,
                                          steps=steps, l2=l2, benign_weight=benign_weight)
            return head, calibration, encoded, None
        return frozen
    if not isinstance(classifier, OfflineStackClassifier):  # refused earlier by _training_classifier
        raise TypeError(f"--tune-layers needs the offline stack, not {type(classifier).__name__}")
    status.print(f"caching MiniLM states under the top {tuning.depth} layer(s) of every text ...")
    states = text_states(classifier, read_examples(classifier, examples), tuning.depth)

    def tuned(l2: float, rows: np.ndarray) -> tuple[TaskHead, Calibration, Encoded, TunedLayers | None]:
        head, layers = fit_tuned_head(classifier, states, encoded, labels, rows, name=name, steps=steps, l2=l2,
                                      benign_weight=benign_weight, settings=tuning)
        calibration = zero_shot_calibration(classifier, encoded.rows(rows), labels[rows])
        return head, calibration, tuned_encoded(layers, states, encoded), layers
    return tuned


def _cross_validated(classifier: HeadedClassifier, data: LabeledSet, sources: list[Path], strengths: list[float],
                     fit: Fit, *, folds: int, benign_weight: float, fpr: float, margins: list[float], allocation: str,
                     final: str, out_dir: Path) -> tuple[float, TaskHead, Calibration, dict[str, float]]:
    """L2 and margin with the best held-out recall within ``fpr`` under grouped k-fold, thresholds on
    its out-of-fold scores, and the head: its fold models averaged (``final`` soup) or fitted on all
    of ``data`` (refit); tuned text layers, if any, written to ``out_dir``."""
    from moderator.model.crossval import best_setting, cross_validate
    from moderator.model.evaluation import category_metrics
    from moderator.model.scoring import HeadStack

    examples, encoded, labels = data
    names = classifier.spec.names
    fold_fits: dict[float, list[tuple[TaskHead, TunedLayers | None]]] = {}

    def score(l2: float, train: np.ndarray, held: np.ndarray) -> np.ndarray:
        head, calibration, features, layers = fit(l2, train)
        if final == "soup":
            fold_fits.setdefault(l2, []).append((head, layers))
        return HeadStack(names, calibration, [head]).scores(features.rows(held))

    results = cross_validate(examples, labels, names, folds, fpr, strengths, score, margins=margins,
                             allocation=allocation)
    for r in results:
        status.print(f"l2={r.l2:g} margin={r.margin:g}: held-out recall {r.held_out.recall:.3f} at benign FPR "
                     f"{r.held_out.false_positive_rate:.3f}, lowest category {r.held_out.minimum_category_recall:.3f} "
                     f"({folds} folds, thresholds chosen on the others)")
    best = best_setting(results, fpr)
    if final == "soup":
        head, calibration, layers = _soup(classifier, fold_fits[best.l2], encoded, labels)
    else:
        head, calibration, _, layers = fit(best.l2, np.arange(len(examples)))
    if layers is not None:
        layers.save(out_dir)
    head.metrics = {
        "data": "+".join(p.name for p in sources),
        "data_sha256": hashlib.sha256(b"".join(p.read_bytes() for p in sources)).hexdigest()[:12],
        "examples": len(examples),
        "l2": best.l2,
        "benign_weight": benign_weight,
        "cv_folds": folds,
        "final": f"average of the {folds} fold models" if final == "soup" else "refit on all examples",
        "text_layers": {"depth": layers.depth, "version": layers.version} if layers is not None else None,
        "oof_roc_auc": {m.category: m.roc_auc for m in category_metrics(names, examples, best.scores, labels)},
        "held_out": {"recall": best.held_out.recall, "false_positive_rate": best.held_out.false_positive_rate,
                     "recall_by_category": {n: r for n, r in zip(names, best.held_out.recall_by_category, strict=True)
                                            if r is not None}},
        "thresholds": {"fpr": fpr, "margin": best.margin, "allocation": allocation,
                       "data": f"{folds}-fold out-of-fold", "by_category": best.thresholds},
    }
    return best.l2, head, calibration, best.thresholds


def _soup(classifier: HeadedClassifier, fits: list[tuple[TaskHead, TunedLayers | None]], encoded: Encoded,
          labels: np.ndarray) -> tuple[TaskHead, Calibration, TunedLayers | None]:
    """The fold models' heads and tuned layers averaged, and zero-shot calibration on every post."""
    from moderator.model.evaluation import zero_shot_calibration
    from moderator.model.offline import OfflineStackClassifier
    from moderator.model.soup import averaged_head, averaged_layers

    head = averaged_head([h for h, _ in fits])
    tuned = [layers for _, layers in fits if layers is not None]
    layers = averaged_layers(tuned) if tuned else None
    if layers is not None:
        if not isinstance(classifier, OfflineStackClassifier):  # refused earlier by _training_classifier
            raise TypeError(f"tuned layers need the offline stack, not {type(classifier).__name__}")
        head.encoder = classifier.tuned_encoder_id(layers)
    return head, zero_shot_calibration(classifier, encoded, labels), layers


def _record_metrics(head: TaskHead, names: list[str], calibration: Calibration,
                    train_set: tuple[list[LabeledPost], Encoded, np.ndarray], data_path: Path,
                    dev_set: tuple[list[LabeledPost], Encoded, np.ndarray] | None, dev_path: Path | None, *,
                    strength: float, benign_weight: float, fpr: float, margin: float) -> dict[str, float]:
    """Write how the head was trained and how it scores into ``head.metrics``; the thresholds chosen on dev."""
    from moderator.model.evaluation import category_metrics, choose_thresholds
    from moderator.model.scoring import HeadStack

    examples, encoded, labels = train_set
    train_scores = HeadStack(names, calibration, [head]).scores(encoded)
    head.metrics = {
        "data": data_path.name,
        "data_sha256": hashlib.sha256(data_path.read_bytes()).hexdigest()[:12],
        "examples": len(examples),
        "l2": strength,
        "benign_weight": benign_weight,
        "train_roc_auc": {m.category: m.roc_auc for m in category_metrics(names, examples, train_scores, labels)},
    }
    if dev_set is None or dev_path is None:
        return {}
    dev_scores = HeadStack(names, calibration, [head]).scores(dev_set[1])
    head.metrics["dev"] = dev_path.name
    head.metrics["dev_recall_at_fpr"] = {
        m.category: m.recall_at_fpr for m in category_metrics(names, dev_set[0], dev_scores, dev_set[2])
    }
    thresholds = choose_thresholds(names, dev_set[0], dev_scores, fpr, margin=margin)
    head.metrics["thresholds"] = {"fpr": fpr, "margin": margin, "data": dev_path.name, "by_category": thresholds}
    return thresholds


def _print_thresholds(thresholds: dict[str, float], chosen_for: str) -> None:
    """Thresholds as review rules to paste into a policy (plain text: no wrapping)."""
    typer.echo(f"thresholds for {chosen_for} (policy rules):")
    for category, value in thresholds.items():
        typer.echo(f"  - {{name: {category.replace('_', '-')}-review, category: {category}, threshold: {value}, "
                   "action: review}")


def _best_on_dev(
    classifier: HeadedClassifier, encoded: Encoded, labels: np.ndarray,
    dev_set: tuple[list[LabeledPost], Encoded, np.ndarray] | None, strengths: list[float], *, name: str,
    kind: HeadKind, steps: int, benign_weight: float,
) -> tuple[float, TaskHead, Calibration]:
    """A head per L2 strength; the one with the best mean dev recall at 2% FPR (the first without dev)."""
    from moderator.model.evaluation import category_metrics, fit_heads
    from moderator.model.scoring import HeadStack

    candidates = []
    for strength in strengths:
        head, calibration = fit_heads(classifier, encoded, labels, name=name, kind=kind, steps=steps, l2=strength,
                                      benign_weight=benign_weight)
        dev_recall = 0.0
        if dev_set is not None:
            dev_scores = HeadStack(classifier.spec.names, calibration, [head]).scores(dev_set[1])
            recalls = [m.recall_at_fpr[0.02] for m in category_metrics(classifier.spec.names, dev_set[0], dev_scores,
                                                                       dev_set[2])]
            dev_recall = float(np.mean([r for r in recalls if r is not None]))
            status.print(f"l2={strength:g}: mean dev recall at 2% FPR {dev_recall:.3f}")
        candidates.append((dev_recall, -len(candidates), strength, head, calibration))
    _, _, strength, head, calibration = max(candidates, key=lambda c: (c[0], c[1]))
    return strength, head, calibration


def _fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _policy_thresholds(settings: Settings, name: str | None) -> dict[str, float]:
    """The lowest review-or-block threshold of each category in the policy's shorthand rules."""
    from moderator.policy.loader import load_policy_dir
    from moderator.policy.schema import Action

    policies = load_policy_dir(settings.policy_dir)
    chosen = policies[name or ("default" if "default" in policies else next(iter(policies)))]
    thresholds: dict[str, float] = {}
    for rule in chosen.rules:
        if rule.category is not None and rule.threshold is not None and rule.action is not Action.ALLOW:
            thresholds[rule.category] = min(rule.threshold, thresholds.get(rule.category, 1.0))
    return thresholds


def evaluate(
    data: Annotated[Path | None, typer.Option("--data", help="Labeled JSONL (default: shipped test split)")] = None,
    heads_dir: HeadsDirOption = None,
    markdown: Annotated[bool, typer.Option("--markdown", help="Print Markdown tables (for docs)")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
    policy_dir: PolicyDirOption = None,
    policy: PolicyOption = None,
) -> None:
    """Recall at 1% and 2% FPR and ROC-AUC per category and mode, zero-shot beside trained heads,
    and the policy's own thresholds applied to every post (harmful recall, benign FPR)."""
    from dataclasses import asdict

    from moderator.evaldata import TEST_PATH, label_matrix
    from moderator.model.calibration import Calibration
    from moderator.model.evaluation import category_metrics, encode_examples, post_level
    from moderator.model.loader import load_classifier
    from moderator.model.scoring import HeadStack

    settings = _settings(policy_dir, heads_dir)
    spec = _head_spec(settings, policy)
    data_path = data or TEST_PATH
    examples = _read_labeled(data_path)
    classifier = load_classifier(settings, spec)
    status.print(f"encoding {len(examples)} posts from {data_path} with {classifier.info.name} ...")
    encoded = encode_examples(classifier, examples)
    labels = label_matrix(examples, spec.names)
    stacks = {"zero-shot": HeadStack(spec.names, Calibration(classifier.default_calibration))}
    if classifier.stack.heads:
        label = "trained " + ",".join(f"{h.name}@{h.version}" for h in classifier.stack.heads)
        stacks[label] = classifier.stack
    else:
        status.print(f"[yellow]no trained heads for encoder {classifier.encoder_id}[/yellow]")
    thresholds = _policy_thresholds(settings, policy)
    report: dict[str, object] = {"data": data_path.name, "posts": len(examples), "model": classifier.info.name}
    for label, stack in stacks.items():
        scores = stack.scores(encoded)
        metrics = category_metrics(spec.names, examples, scores, labels)
        overall = post_level(spec.names, examples, scores, thresholds)
        report[label] = {"categories": [asdict(m) for m in metrics], "policy_thresholds": asdict(overall)}
        if not as_json:
            _print_report(f"{label} ({classifier.info.name}, {len(examples)} posts)", metrics, overall, markdown)
    if as_json:
        typer.echo(json.dumps(report, indent=2))


def _print_report(title: str, metrics: list[Any], overall: Any, markdown: bool) -> None:
    """Per-category rows (recall at the reported FPRs, per mode) and the policy's post-level line."""
    from moderator.evaldata import MODES
    from moderator.model.evaluation import REPORTED_FPRS

    pct = [f"{fpr:.0%}" for fpr in REPORTED_FPRS]
    columns = ["category", "pos", "neg", "ROC-AUC", *(f"R@{p} FPR" for p in pct),
               *(f"AUC {m}" for m in MODES), *(f"R@{pct[-1]} {m}" for m in MODES)]
    rows = [
        [m.category, str(m.positives), str(m.negatives), _fmt(m.roc_auc),
         *(_fmt(m.recall_at_fpr[fpr], 2) for fpr in REPORTED_FPRS),
         *(_fmt(m.modes[mode].roc_auc) for mode in MODES),
         *(_fmt(m.modes[mode].recall_at_fpr[REPORTED_FPRS[-1]], 2) for mode in MODES)]
        for m in metrics if m.positives
    ]
    aucs = [m.roc_auc for m in metrics if m.roc_auc is not None]
    title = f"{title} mean ROC-AUC {np.mean(aucs):.3f}"
    by_mode = ", ".join(f"{mode} {_fmt(r, 2)}" for mode, r in overall.recall_by_mode.items())
    by_category = ", ".join(f"{name} {_fmt(r, 2)}" for name, r in overall.recall_by_category.items() if r is not None)
    summary = (f"at the policy's thresholds: harmful recall {overall.recall:.3f} ({by_mode}), "
               f"benign FPR {overall.false_positive_rate:.3f} ({overall.harmful} harmful, {overall.benign} benign); "
               f"recall per category: {by_category}")
    if markdown:
        typer.echo(f"\n**{title}**\n\n| " + " | ".join(columns) + " |\n|" + "---|" * len(columns))
        for row in rows:
            typer.echo("| " + " | ".join(row) + " |")
        typer.echo(f"\n{summary}")
        return
    table = Table(title=title)
    for column in columns:
        table.add_column(column, justify="left" if column == "category" else "right")
    for row in rows:
        table.add_row(*row)
    console.print(table)
    console.print(summary)


def register(app: typer.Typer) -> None:
    """Add `classify` and the `heads` sub-app to the CLI."""
    app.command("classify")(classify)
    heads = typer.Typer(no_args_is_help=True, help="Train and evaluate task heads on frozen encoder features.")
    heads.command("train")(train)
    heads.command("eval")(evaluate)
    app.add_typer(heads, name="heads")
