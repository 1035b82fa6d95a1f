"""The hostile-input tables in the README and docs name tests that exist (so the tables cannot rot)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _defined_tests() -> set[str]:
    return {name for path in (ROOT / "tests").glob("test_*.py")
            for name in re.findall(r"def (test_\w+)", path.read_text(encoding="utf-8"))}


@pytest.mark.parametrize(("document", "heading"), [("README.md", "## Hostile input"),
                                                    ("docs/hostile-inputs.md", "# Hostile inputs")])
def test_every_hostile_input_row_names_an_existing_test(document: str, heading: str) -> None:
    text = (ROOT / document).read_text(encoding="utf-8")
    section = text[text.index(heading):]
    section = section[: section.find("\n## ", len(heading)) if document == "README.md" else None]
    rows = [line for line in section.splitlines() if line.startswith("| ") and not line.startswith("| hostile")
            and not line.startswith("| Hostile") and "---" not in line]
    assert len(rows) >= 25
    named = set(re.findall(r"`(test_\w+)`", section))
    assert named and named <= _defined_tests(), sorted(named - _defined_tests())
    assert all(re.search(r"`test_\w+`", row) for row in rows), "every row is backed by a test"
