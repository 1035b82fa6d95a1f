"""`moderator serve --workers 2`: two consumer-group members share a 2-partition topic, every post decided once."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from moderator.broker import ensure_topics
from moderator.client import produce
from moderator.settings import Settings
from moderator.testing.samples import records_for, sample_posts
from tests.pipeline_helpers import decided_ids
from tests.service_process import settings_env

pytestmark = pytest.mark.slow


async def _until_in_log(log_path: Path, needles: list[str], timeout_s: float) -> None:
    """Wait until every needle appeared in the log (a start-up condition, not a timing assertion)."""
    for _ in range(int(timeout_s * 10)):
        text = log_path.read_text(errors="replace")
        if all(n in text for n in needles):
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"never logged {needles}:\n{log_path.read_text(errors='replace')[-4000:]}")


async def test_two_workers_on_two_partitions_decide_every_post_once(settings: Settings, tmp_path: Path) -> None:
    settings = settings.model_copy(update={"topic_partitions": 2})
    await ensure_topics(settings)
    log_path = tmp_path / "serve.log"
    with log_path.open("ab") as log:
        supervisor = subprocess.Popen([sys.executable, "-m", "moderator", "serve", "--workers", "2"],
                                      env=settings_env(settings), stdout=log, stderr=subprocess.STDOUT)
    posts = sample_posts(160, seed=31, prefix="workers")
    try:
        # Both workers joined the group and each owns one partition before any post exists.
        await _until_in_log(log_path, [f"assigned partitions [('{settings.input_topic}', {p})]" for p in (0, 1)],
                            timeout_s=180)
        await produce(settings, records_for(posts))
        ids = await decided_ids(settings, {str(p["post_id"]) for p in posts}, timeout_s=180)
        supervisor.send_signal(signal.SIGTERM)
        assert supervisor.wait(180) == 0, log_path.read_text()[-4000:]  # drain + close; generous under load
    finally:
        if supervisor.poll() is None:
            supervisor.kill()
            supervisor.wait(10)
    counts = Counter(ids)
    assert set(counts) == {p["post_id"] for p in posts}
    assert max(counts.values()) == 1, [k for k, n in counts.items() if n > 1][:10]
    assert "started 2 workers" in log_path.read_text()
