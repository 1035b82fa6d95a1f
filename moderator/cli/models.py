"""`moderator classify` and `moderator heads train|eval`: the model layer from the command line."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

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
    from moderator.model.evaluation import CategoryMetrics

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
    data: Annotated[Path | None, typer.Option("--data", help="Labeled JSONL (default: shipped train split)")] = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="Heads directory (default: MODERATOR_HEADS_DIR or ./heads)")
    ] = None,
    name: Annotated[str, typer.Option("--name", help="Head file name")] = "task-head",
    kind: Annotated[str, typer.Option("--kind", help="linear or mlp")] = "linear",
    steps: Annotated[int, typer.Option("--steps", help="L-BFGS iterations")] = 200,
    policy_dir: PolicyDirOption = None,
    policy: PolicyOption = None,
) -> None:
    """Train a task head (and zero-shot calibration) on frozen features of the active encoder."""
    from moderator.evaldata import TRAIN_PATH, label_matrix
    from moderator.model.calibration import CALIBRATION_FILE
    from moderator.model.evaluation import category_metrics, encode_examples, fit_heads
    from moderator.model.loader import load_classifier
    from moderator.model.scoring import HeadStack

    if kind not in ("linear", "mlp"):
        fail(f"--kind {kind}: must be linear or mlp")
    settings = _settings(policy_dir, None).model_copy(update={"heads_dir": None})
    out_dir = out or Settings().heads_dir or Path("heads")
    data_path = data or TRAIN_PATH
    spec = _head_spec(settings, policy)
    examples = _read_labeled(data_path)
    classifier = load_classifier(settings, spec)
    status.print(f"encoding {len(examples)} posts from {data_path} with {classifier.info.name} ...")
    encoded = encode_examples(classifier, examples)
    labels = label_matrix(examples, spec.names)
    head, calibration = fit_heads(classifier, encoded, labels, name=name, kind=kind, steps=steps)
    train_scores = HeadStack(spec.names, calibration, [head]).scores(encoded)
    head.metrics = {
        "data": data_path.name,
        "data_sha256": hashlib.sha256(data_path.read_bytes()).hexdigest()[:12],
        "examples": len(examples),
        "train_roc_auc": {
            m.category: m.roc_auc
            for m in category_metrics(spec.names, train_scores, labels, threshold=0.5, target_precision=0.9)
        },
    }
    path = head.save(out_dir)
    (out_dir / CALIBRATION_FILE).write_text(
        calibration.to_json(encoder=classifier.encoder_id, fingerprint=spec.fingerprint()),
        encoding="utf-8",
    )
    console.print(f"head {head.name} ({head.kind}) version {head.version} -> {path}")
    console.print(f"categories: {', '.join(head.categories)}; zero-shot calibration -> {out_dir / CALIBRATION_FILE}")


def _fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def evaluate(
    data: Annotated[Path | None, typer.Option("--data", help="Labeled JSONL (default: shipped test split)")] = None,
    heads_dir: HeadsDirOption = None,
    target_precision: Annotated[float, typer.Option(help="Report the threshold reaching this precision")] = 0.9,
    threshold: Annotated[float, typer.Option(help="Decision threshold for precision/recall/F1")] = 0.5,
    markdown: Annotated[bool, typer.Option("--markdown", help="Print Markdown tables (for docs)")] = False,
    policy_dir: PolicyDirOption = None,
    policy: PolicyOption = None,
) -> None:
    """Per-category precision, recall, F1 and ROC-AUC of zero-shot and trained heads on labeled posts."""
    from moderator.evaldata import TEST_PATH, label_matrix
    from moderator.model.evaluation import category_metrics, encode_examples, image_text_auc
    from moderator.model.loader import load_classifier
    from moderator.model.scoring import HeadStack

    settings = _settings(policy_dir, heads_dir)
    spec = _head_spec(settings, policy)
    data_path = data or TEST_PATH
    examples = _read_labeled(data_path)
    classifier = load_classifier(settings.model_copy(update={"heads_dir": None}), spec)
    status.print(f"encoding {len(examples)} posts from {data_path} with {classifier.info.name} ...")
    encoded = encode_examples(classifier, examples)
    labels = label_matrix(examples, spec.names)
    stacks = {"zero-shot": classifier.stack}
    if settings.heads_dir is not None:
        trained = HeadStack.load(
            spec,
            encoder=classifier.encoder_id,
            default_calibration=classifier.default_calibration,
            heads_dir=settings.heads_dir,
        )
        if not trained.heads:
            status.print(f"[yellow]no heads for encoder {classifier.encoder_id} in {settings.heads_dir}[/yellow]")
        label = "trained " + ",".join(f"{h.name}@{h.version}" for h in trained.heads) if trained.heads else "calibrated"
        stacks[label] = trained
    for label, stack in stacks.items():
        scores = stack.scores(encoded)
        metrics = category_metrics(spec.names, scores, labels, threshold=threshold, target_precision=target_precision)
        aucs = [m.roc_auc for m in metrics if m.roc_auc is not None]
        mean_auc = f"mean ROC-AUC {np.mean(aucs):.3f}" if aucs else ""
        title = f"{label} ({classifier.info.name}, {len(examples)} posts, P/R/F1 at {threshold:g}) {mean_auc}"
        _print_metrics(title, metrics, image_text_auc(spec.names, examples, scores), target_precision, markdown)


def _print_metrics(title: str, metrics: Sequence[CategoryMetrics], image_auc: Mapping[str, float | None],
                   target_precision: float, markdown: bool) -> None:
    """One table row per category, as a rich table or Markdown."""
    columns = ["category", "pos", "neg", "ROC-AUC", "AUC image-text", "P", "R", "F1", f"thr@P{target_precision:g}",
               "R@thr"]
    rows = [
        [m.category, str(m.positives), str(m.negatives), _fmt(m.roc_auc), _fmt(image_auc[m.category]),
         _fmt(m.precision, 2), _fmt(m.recall, 2), _fmt(m.f1, 2), _fmt(m.threshold_at_precision),
         _fmt(m.recall_at_precision, 2)]
        for m in metrics
    ]
    if markdown:
        typer.echo(f"\n**{title}**\n\n| " + " | ".join(columns) + " |\n|" + "---|" * len(columns))
        for row in rows:
            typer.echo("| " + " | ".join(row) + " |")
        return
    table = Table(title=title)
    for column in columns:
        table.add_column(column, justify="left" if column == "category" else "right")
    for row in rows:
        table.add_row(*row)
    console.print(table)


def register(app: typer.Typer) -> None:
    """Add `classify` and the `heads` sub-app to the CLI."""
    app.command("classify")(classify)
    heads = typer.Typer(no_args_is_help=True, help="Train and evaluate task heads on frozen encoder features.")
    heads.command("train")(train)
    heads.command("eval")(evaluate)
    app.add_typer(heads, name="heads")
