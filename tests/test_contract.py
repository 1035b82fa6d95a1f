"""The wire contract: committed schemas match the models, the AsyncAPI document is valid, examples and the
producer snippets work as documented."""

from __future__ import annotations

import asyncio
import gzip
import importlib.util
import json
import re
import uuid
from pathlib import Path
from types import ModuleType

import jsonschema
import pytest
import yaml
from typer.testing import CliRunner

from moderator.broker import make_consumer
from moderator.cli import build_app
from moderator.contract import ASYNCAPI_FILE, json_schemas, rendered
from moderator.ingest.schema import Post
from moderator.ingest.validate import IngestLimits, parse_post
from moderator.settings import Settings
from tests.conftest import Servers

ROOT = Path(__file__).resolve().parents[1]
CONTRACT = ROOT / "docs" / "contract"
EXAMPLE_POSTS = ROOT / "examples" / "posts.jsonl"


@pytest.mark.parametrize("name", sorted(rendered()))
def test_committed_contract_files_match_the_models(name: str) -> None:
    committed = CONTRACT / name
    assert committed.is_file() and committed.read_text(encoding="utf-8") == rendered()[name], (
        f"docs/contract/{name} is out of date with the pydantic models: run `moderator contract export`")


def test_asyncapi_document_is_valid_asyncapi_3() -> None:
    # The official AsyncAPI 3.0.0 JSON Schema (npm @asyncapi/specs 6.11.1, Apache-2.0), vendored for offline runs.
    with gzip.open(ROOT / "tests" / "data" / "asyncapi-3.0.0.schema.json.gz") as file:
        schema = json.load(file)
    document = yaml.safe_load((CONTRACT / ASYNCAPI_FILE).read_text(encoding="utf-8"))
    errors = [f"{e.json_path}: {e.message[:200]}"
              for e in jsonschema.validators.validator_for(schema)(schema).iter_errors(document)]
    assert not errors, errors
    assert {c["address"] for c in document["channels"].values()} == {"posts", "decisions", "posts.dlq", None}
    for name in document["components"]["messages"]:  # every message's payload resolves
        ref = document["components"]["messages"][name]["payload"]["$ref"]
        assert ref.rsplit("/", 1)[1] in document["components"]["schemas"]


def test_contract_check_reports_stale_files_and_export_writes_them(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(build_app(), ["contract", "export", "--out", str(tmp_path), "--check"])
    assert result.exit_code == 1 and "moderator contract export" in result.output
    assert runner.invoke(build_app(), ["contract", "export", "--out", str(tmp_path)]).exit_code == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(rendered())
    assert runner.invoke(build_app(), ["contract", "export", "--out", str(tmp_path), "--check"]).exit_code == 0


def _validator(name: str) -> jsonschema.Draft202012Validator:
    schema = json_schemas()[name]
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def test_shipped_example_posts_are_valid_posts_with_inline_images() -> None:
    lines = EXAMPLE_POSTS.read_text(encoding="utf-8").splitlines()
    validator = _validator("post.schema.json")
    for line in lines:
        validator.validate(json.loads(line))
        parse_post(line.encode(), IngestLimits.from_settings(Settings.model_construct()))
    assert sum('"data_b64"' in line for line in lines) >= 2


def test_schemas_reject_what_the_models_reject() -> None:
    validator = _validator("post.schema.json")
    for bad in ({"post_id": "a", "user_id": "u"}, {"post_id": "a", "text": "hi"},
                {"post_id": "a", "user_id": "u", "image": {"data_b64": "AA==", "url": "https://x/y.png"}}):
        assert not validator.is_valid(bad), bad
        with pytest.raises(ValueError):
            Post.model_validate(bad)


def test_examples_in_the_contract_doc_match_their_schemas() -> None:
    text = (ROOT / "docs" / "contract.md").read_text(encoding="utf-8")
    examples = re.findall(r"<!-- example: ([\w-]+) -->\s*```json\n(.*?)```", text, re.S)
    assert {name for name, _ in examples} == {"post", "decision", "dead-letter", "shadow-disagreement"}
    for name, body in examples:
        _validator(f"{name}.schema.json").validate(json.loads(body))


def _load_example(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, ROOT / "examples" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def _read_posts(servers: Servers, topic: str, count: int) -> list[tuple[bytes, Post]]:
    settings = Settings(_env_file=None, kafka_bootstrap=servers.kafka_bootstrap)  # type: ignore[call-arg]
    consumer = make_consumer(settings, topic, group_id=f"contract-{uuid.uuid4().hex[:8]}")
    await consumer.start()
    try:
        read: list[tuple[bytes, Post]] = []
        while len(read) < count:
            for records in (await consumer.getmany(timeout_ms=1000)).values():
                read += [(r.key, parse_post(r.value, IngestLimits.from_settings(settings))) for r in records]
        return read
    finally:
        await consumer.stop()


@pytest.mark.integration
@pytest.mark.parametrize("snippet", ["produce_posts", "confluent_producer"])
async def test_producer_snippets_publish_compressed_posts_that_moderator_reads(servers: Servers, snippet: str) -> None:
    module = _load_example(snippet)
    posts = module.read_posts(EXAMPLE_POSTS) if snippet == "produce_posts" else [
        json.loads(line) for line in EXAMPLE_POSTS.read_text(encoding="utf-8").splitlines()]
    topic = f"contract-{snippet}-{uuid.uuid4().hex[:8]}"
    # Tansu has no idempotent producer: the one setting the snippets' users keep on against Kafka.
    if snippet == "produce_posts":
        await module.publish(servers.kafka_bootstrap, topic, posts, idempotent=False)
    else:
        await asyncio.to_thread(module.publish, servers.kafka_bootstrap, topic, posts, idempotent=False)
    read = await asyncio.wait_for(_read_posts(servers, topic, len(posts)), timeout=60)
    assert sorted(key.decode() for key, _ in read) == sorted(p["post_id"] for p in posts)
    assert {post.post_id for _, post in read} == {p["post_id"] for p in posts}


def test_readme_policy_test_command_runs_verbatim_from_the_repository_root(monkeypatch: pytest.MonkeyPatch) -> None:
    command = next(line.split("#")[0].split() for line in (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
                   if line.startswith("moderator policy test "))
    assert command[-2:] == ["--posts", "examples/posts.jsonl"]
    monkeypatch.chdir(ROOT)
    for name in ("MODERATOR_POLICY_DIR", "MODERATOR_MODEL", "MODERATOR_HEADS_DIR", "MODERATOR_REDIS_URL"):
        monkeypatch.delenv(name, raising=False)
    result = CliRunner().invoke(build_app(), [*command[1:], "--json"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(rows) == len(EXAMPLE_POSTS.read_text(encoding="utf-8").splitlines())
    assert {row["action"] for row in rows} <= {"allow", "review", "block"} and all(r["source"] == "model" for r in rows)
