"""A user mistake on the command line ends with one line on stderr (what, where, how to fix) and exit code 2."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import typer
from PIL import Image
from typer.testing import CliRunner

from moderator.cli import build_app

ROOT = Path(__file__).resolve().parents[1]
POLICY = str(ROOT / "policies" / "default.yaml")
runner = CliRunner()


def _fails_with_one_line(args: list[str], *expected: str, env: dict[str, str | None] | None = None) -> str:
    result = runner.invoke(build_app(), args, env=env)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("moderator: "), result.stderr
    assert all(text in lines[0] for text in expected), lines[0]
    assert "Traceback" not in result.output
    return lines[0]


@pytest.fixture
def in_empty_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory outside the repository, with no MODERATOR_* settings pointing back into it."""
    monkeypatch.chdir(tmp_path)
    for name in ("MODERATOR_POLICY_DIR", "MODERATOR_HEADS_DIR", "MODERATOR_MODEL", "MODERATOR_REDIS_URL"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def test_classify_a_missing_image_file_names_it(in_empty_dir: Path) -> None:
    _fails_with_one_line(["classify", "--image", "missing.png", "--policy-dir", str(ROOT / "policies")],
                         "--image missing.png", "no such file")


def test_classify_a_file_that_is_not_an_accepted_image_says_which_formats_are(tmp_path: Path) -> None:
    bmp = tmp_path / "photo.bmp"
    Image.new("RGB", (8, 8)).save(bmp)
    policy_dir = str(ROOT / "policies")
    _fails_with_one_line(["classify", "--image", str(bmp), "--policy-dir", policy_dir], "BMP", "JPEG, PNG, GIF or WebP")
    _fails_with_one_line(["classify", "--image", str(ROOT / "README.md"), "--policy-dir", policy_dir],
                         "README.md", "not an image", "JPEG, PNG, GIF or WebP")
    _fails_with_one_line(["classify", "--image", str(tmp_path), "--policy-dir", policy_dir], "is a directory")


def test_classify_without_input_says_what_to_give() -> None:
    _fails_with_one_line(["classify"], "--image", "--text")


@pytest.mark.parametrize("command", [["classify", "--text", "hello"], ["heads", "train"], ["heads", "eval"],
                                     ["demo"]])
def test_outside_the_repository_root_the_policy_directory_is_named_with_how_to_point_at_it(
        in_empty_dir: Path, command: list[str]) -> None:
    _fails_with_one_line(command, str(in_empty_dir / "policies"), "MODERATOR_POLICY_DIR", "--policy-dir",
                         "repository root")


def test_unknown_policy_name_lists_the_ones_there() -> None:
    _fails_with_one_line(["classify", "--text", "hi", "--policy-dir", str(ROOT / "policies"), "--policy", "nope"],
                         "--policy nope", "default")


def test_heads_train_with_missing_or_broken_data_names_the_file_and_line(tmp_path: Path) -> None:
    policy_dir = str(ROOT / "policies")
    _fails_with_one_line(["heads", "train", "--data", str(tmp_path / "none.jsonl"), "--policy-dir", policy_dir],
                         "none.jsonl", "no such file")
    broken = tmp_path / "labels.jsonl"
    broken.write_text('{"post": {"post_id": "a", "user_id": "u", "text": "x"}, "labels": {"scam": 1}}\n{oops\n')
    _fails_with_one_line(["heads", "eval", "--data", str(broken), "--policy-dir", policy_dir], f"{broken}:2")
    _fails_with_one_line(["heads", "train", "--kind", "forest", "--policy-dir", policy_dir], "--kind forest")


def _posts(tmp_path: Path, *lines: str) -> str:
    path = tmp_path / "posts.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


def test_policy_test_names_the_file_and_line_of_a_line_that_is_not_json(tmp_path: Path) -> None:
    posts = _posts(tmp_path, '{"post_id": "a", "user_id": "u", "text": "hi", "scores": {"scam": 0.1}}', "",
                   "{not json")
    _fails_with_one_line(["policy", "test", POLICY, "--posts", posts], f"{posts}:3", "not valid JSON")
    posts = _posts(tmp_path, "[1, 2]")
    _fails_with_one_line(["policy", "test", POLICY, "--posts", posts], f"{posts}:1", "JSON object")


def test_policy_test_rejects_a_misspelled_category_in_scores(tmp_path: Path) -> None:
    posts = _posts(tmp_path, '{"post_id": "a", "user_id": "u", "text": "hi", "scores": {"scma": 0.9}}')
    _fails_with_one_line(["policy", "test", POLICY, "--posts", posts], f"{posts}:1", "'scma'", "did you mean 'scam'")
    posts = _posts(tmp_path, '{"post_id": "a", "user_id": "u", "text": "hi", "scores": {"scam": "high"}}')
    _fails_with_one_line(["policy", "test", POLICY, "--posts", posts], "scores.scam", "between 0 and 1")


def test_policy_test_rejects_an_unknown_expected_action(tmp_path: Path) -> None:
    posts = _posts(tmp_path, '{"post_id": "a", "user_id": "u", "text": "hi", "scores": {"scam": 0.9}, '
                             '"expect": "blok"}')
    _fails_with_one_line(["policy", "test", POLICY, "--posts", posts], f"{posts}:1", "'blok'", "allow, review, block")


def test_policy_test_names_the_field_of_a_dead_lettered_post_and_prints_whole_headers_when_piped(
        tmp_path: Path) -> None:
    posts = _posts(tmp_path, '{"post_id": "no-user", "text": "hi", "scores": {"scam": 0.1}, '
                             '"expect": "dead-letter"}')
    result = runner.invoke(build_app(), ["policy", "test", POLICY, "--posts", posts, "--json"])
    assert result.exit_code == 0, result.output
    row = json.loads(result.stdout)
    assert (row["action"], row["rule"], row["label"]) == ("dead-letter", "schema", "user_id: Field required")
    result = runner.invoke(build_app(), ["policy", "test", POLICY, "--posts", posts])
    assert result.exit_code == 0, result.output
    header = next(line for line in result.stdout.splitlines() if "post" in line and "action" in line)
    assert "scores from" in header and "expected" in header  # not wrapped to 80 columns when piped
    assert "user_id: Field required" in result.stdout


def test_redis_commands_without_redis_say_how_to_set_it_and_nothing_else(in_empty_dir: Path) -> None:
    line = _fails_with_one_line(["bank", "add", "known", "flyer.png"], "MODERATOR_REDIS_URL")
    assert "score cache" not in line
    _fails_with_one_line(["policy", "backtest", POLICY], "MODERATOR_REDIS_URL", "--scores")


def test_serve_without_a_broker_says_which_setting() -> None:
    _fails_with_one_line(["serve"], "MODERATOR_KAFKA_BOOTSTRAP", env={"MODERATOR_KAFKA_BOOTSTRAP": ""})


def _commands(command: Any, path: list[str]) -> list[list[str]]:
    found = [path]
    if hasattr(command, "commands"):  # a group (typer vendors its own click)
        for name, sub in command.commands.items():
            found += _commands(sub, [*path, name])
    return found


def test_help_shows_no_type_after_flags() -> None:
    app = build_app()
    paths = _commands(typer.main.get_command(app), [])
    assert len(paths) > 15
    for path in paths:
        result = runner.invoke(app, [*path, "--help"])
        assert result.exit_code == 0, (path, result.output)
        assert "<bool>" not in result.output, path


def test_review_without_its_servers_or_token_secret_says_which_settings(in_empty_dir: Path) -> None:
    _fails_with_one_line(["review"], "MODERATOR_REDIS_URL", "MODERATOR_KAFKA_BOOTSTRAP",
                         env={"MODERATOR_KAFKA_BOOTSTRAP": ""})
    _fails_with_one_line(["review"], "MODERATOR_REVIEW_TOKEN_SECRET", env={
        "MODERATOR_KAFKA_BOOTSTRAP": "127.0.0.1:1", "MODERATOR_REDIS_URL": "redis://127.0.0.1:1/0",
        "MODERATOR_REVIEW_TOKEN_SECRET": ""})
    _fails_with_one_line(["review", "export-labels", "labels.jsonl"], "MODERATOR_REDIS_URL")


def test_bench_with_an_unknown_model_names_the_choices() -> None:
    _fails_with_one_line(["bench", "--quick", "--model", "nonsense"], "--model nonsense", "tiny", "offline")


def test_policy_validate_of_a_missing_file_says_so(tmp_path: Path) -> None:
    result = runner.invoke(build_app(), ["policy", "validate", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 1 and result.stderr.strip() == f"{tmp_path / 'nope.yaml'}: No such file or directory"
