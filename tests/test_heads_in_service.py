"""A head trained with `moderator heads train` is served by the running service and named in decisions."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from moderator.cli import build_app
from moderator.client import produce
from moderator.decisions.schema import Decision
from moderator.evaldata import TRAIN_PATH, read_labeled, write_labeled
from moderator.model.heads import TaskHead
from moderator.settings import Settings
from moderator.testing.samples import records_for, sample_posts
from tests.conftest import ROOT
from tests.pipeline_helpers import collect, running_service


async def test_trained_head_loads_in_the_service_and_its_version_is_in_decisions(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    train = tmp_path / "train.jsonl"
    write_labeled(train, read_labeled(TRAIN_PATH)[::25])  # every category and mode, a few of each
    heads = tmp_path / "heads"
    monkeypatch.setenv("MODERATOR_MODEL", settings.model)
    monkeypatch.delenv("MODERATOR_HEADS_DIR", raising=False)
    result = CliRunner().invoke(build_app(), ["heads", "train", "--data", str(train), "--out", str(heads),
                                              "--policy-dir", str(ROOT / "policies"), "--steps", "20"])
    assert result.exit_code == 0, result.output
    head = TaskHead.load(heads / "task-head.json")

    settings = settings.model_copy(update={"heads_dir": heads})
    posts = sample_posts(12, seed=41, prefix="headed")
    async with running_service(settings) as service:
        await produce(settings, records_for(posts))
        decisions = [Decision.model_validate_json(r.value) for r in await collect(settings, settings.output_topic, 12)]
    assert len(decisions) == 12
    for decision in decisions:
        assert any(head.version in value for value in decision.model.components.values()), decision.model
        assert decision.model.version == service.classifier.info.version
