"""The house stays small-roomed: no class over 250 lines, no function over 80, in the production package."""

from __future__ import annotations

import ast
from pathlib import Path

import moderator

PACKAGE = Path(moderator.__file__).parent
MAX_CLASS_LINES = 250
MAX_FUNCTION_LINES = 80
def _oversized(path: Path) -> list[str]:
    found: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        limit = (MAX_CLASS_LINES if isinstance(node, ast.ClassDef) else
                 MAX_FUNCTION_LINES if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) else None)
        if limit is None or node.end_lineno is None:
            continue
        length = node.end_lineno - node.lineno + 1
        if length > limit:
            found.append(f"{path.relative_to(PACKAGE)}:{node.lineno}: {node.name} has {length} lines (> {limit})")
    return found


def test_no_class_over_250_lines_and_no_function_over_80() -> None:
    assert [finding for path in sorted(PACKAGE.rglob("*.py")) for finding in _oversized(path)] == []


def test_production_modules_never_import_the_testing_fixtures() -> None:
    production = [p for p in sorted(PACKAGE.rglob("*.py"))
                  if p.relative_to(PACKAGE).parts[0] not in {"testing", "bench", "demo.py", "cli"}]
    importers = []
    for path in production:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = ([node.module or ""] if isinstance(node, ast.ImportFrom) else
                     [a.name for a in node.names] if isinstance(node, ast.Import) else [])
            if any(name == "moderator.testing" or name.startswith("moderator.testing.") for name in names):
                importers.append(str(path.relative_to(PACKAGE)))
    assert importers == []
