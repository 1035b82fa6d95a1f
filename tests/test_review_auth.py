"""Review accounts from settings: validation, token lookup, and tokens kept out of reprs and logs."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from moderator.review.auth import Accounts, demo_accounts
from moderator.review.models import Role
from moderator.settings import Settings

ALICE = {"name": "alice", "role": "reviewer", "token": "alice-token-0123456789"}
ROOT_TOKEN = "root-token-0123456789a"
ROOT = {"name": "root", "role": "admin", "token_sha256": hashlib.sha256(ROOT_TOKEN.encode()).hexdigest()}


def _settings(**values: object) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[arg-type]


def test_accounts_come_from_json_and_file_and_match_only_their_own_token(tmp_path: Path) -> None:
    users_file = tmp_path / "users.json"
    users_file.write_text(json.dumps([ROOT]), encoding="utf-8")
    accounts = Accounts.from_settings(_settings(review_users=json.dumps([ALICE]), review_users_file=users_file))
    alice = accounts.by_token(ALICE["token"])
    root = accounts.by_token(ROOT_TOKEN)
    assert alice is not None and (alice.name, alice.role) == ("alice", Role.REVIEWER)
    assert root is not None and (root.name, root.role) == ("root", Role.ADMIN)
    assert accounts.by_token(ALICE["token"] + "x") is None
    assert accounts.by_token("") is None
    assert accounts.login("alice", ALICE["token"]) is alice
    assert accounts.login("root", ALICE["token"]) is None


@pytest.mark.parametrize("users", [
    [{**ALICE, "token": "short"}],  # guessable tokens are refused
    [{"name": "alice", "role": "reviewer"}],  # no token
    [{**ALICE, "token_sha256": "ab" * 32}],  # both kinds
    [{**ALICE, "role": "owner"}],
    [{**ALICE, "name": "al ice"}],
])
def test_invalid_accounts_are_refused(users: list[dict[str, str]]) -> None:
    with pytest.raises(ValidationError):
        Accounts.from_settings(_settings(review_users=json.dumps(users)))


def test_duplicate_names_or_shared_tokens_are_refused() -> None:
    with pytest.raises(ValueError, match="duplicate names"):
        Accounts.from_settings(_settings(review_users=json.dumps([ALICE, {**ALICE, "token": "other-token-0123456789"}])))
    with pytest.raises(ValueError, match="share a token"):
        Accounts.from_settings(_settings(review_users=json.dumps([ALICE, {**ALICE, "name": "bob"}])))


def test_tokens_never_show_in_settings_or_account_reprs() -> None:
    settings = _settings(review_users=json.dumps([ALICE]))
    accounts = Accounts.from_settings(settings)
    for text in (repr(settings), str(settings), repr(accounts.users), settings.model_dump_json()):
        assert ALICE["token"] not in text


def test_demo_gets_a_fresh_admin_only_when_no_accounts_are_configured() -> None:
    accounts, token = demo_accounts(_settings())
    assert token is not None and len(token) >= 16
    demo = accounts.by_token(token)
    assert demo is not None and (demo.name, demo.role) == ("demo", Role.ADMIN)
    assert demo_accounts(_settings())[1] != token
    configured, none = demo_accounts(_settings(review_users=json.dumps([ALICE])))
    assert none is None and [u.name for u in configured.users] == ["alice"]
