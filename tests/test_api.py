"""The HTTP API end to end: the official `openai` client, /v1/decide, keys, limits, back-pressure, metrics.

A real service (embedded broker and Redis, tiny CLIP) runs with the API beside it; requests
decide through the service's own pipeline, so they share its cache, single-flight and batches.
"""

from __future__ import annotations

import asyncio
import base64
import threading
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import orjson
import pytest
from fastapi import FastAPI, Response
from pydantic import SecretStr
from typer.testing import CliRunner, Result

from moderator.api.keys import api_key_store, issue_api_key
from moderator.api.taxonomy import OMNI_CATEGORIES, omni_names
from moderator.cli import build_app
from moderator.client import post_record, produce
from moderator.model.base import ModelInput
from moderator.model.loader import load_classifier
from moderator.policy.loader import load_policy_set
from moderator.review.tokens import TokenStore
from moderator.service import ModerationService, build_service, running
from moderator.settings import Settings
from moderator.telemetry.server import OpsServer
from moderator.testing.samples import render_image
from tests.conftest import Servers, make_settings
from tests.pipeline_helpers import WrappedClassifier, collect, running_service

PNG = render_image("hello", seed=3)
DATA_URL = "data:image/png;base64," + base64.b64encode(PNG).decode()
SECRET = SecretStr("test-api-key-secret-of-32-characters-or-more")


@dataclass
class Api:
    """A running service with its API: base URL, a valid key, and the service itself."""

    url: str
    key: str
    service: ModerationService
    keys: TokenStore

    def client(self) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(api_key=self.key, base_url=f"{self.url}/v1", max_retries=0)

    def http(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url, headers={"Authorization": f"Bearer {self.key}"}, timeout=60)


@asynccontextmanager
async def api_for(settings: Settings, **kwargs: object) -> AsyncIterator[Api]:
    settings = settings.model_copy(update={"api_key_secret": SECRET})
    async with running_service(settings, **kwargs) as service:
        while not service.consuming:
            await asyncio.sleep(0.02)
        assert service.redis is not None
        keys = api_key_store(service.redis, settings)
        token = (await issue_api_key(keys, "tests")).token.get_secret_value()
        async with service.serving_api(0) as server:
            yield Api(f"http://127.0.0.1:{server.port}", token, service, keys)


@asynccontextmanager
async def image_server() -> AsyncIterator[str]:
    """A loopback HTTP server with one PNG at /cat.png."""
    app = FastAPI()

    @app.get("/cat.png")
    async def cat() -> Response:
        return Response(PNG, media_type="image/png")

    server = OpsServer(app, "127.0.0.1", 0)
    await server.start()
    try:
        yield f"http://127.0.0.1:{server.port}/cat.png"
    finally:
        await server.stop()


@pytest.fixture
def api_settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"url_allow_private": True})


async def test_openai_client_moderates_text_image_url_and_mixed_inputs(api_settings: Settings) -> None:
    async with api_for(api_settings) as api, image_server() as image_url, api.client() as client:
        text = await client.moderations.create(model="omni-moderation-latest", input="I will hurt you badly")
        strings = await client.moderations.create(input=["a photo of my cat", "send money now to claim your prize"])
        image = await client.moderations.create(input=[{"type": "image_url", "image_url": {"url": image_url}}])
        mixed = await client.moderations.create(input=[
            {"type": "text", "text": "look at this"}, {"type": "image_url", "image_url": {"url": DATA_URL}}])

    assert text.id.startswith("modr-") and text.model == api.service.classifier.info.name
    assert [len(r.results) for r in (text, strings, image, mixed)] == [1, 2, 1, 1]
    for response in (text, strings, image, mixed):
        for result in response.results:
            assert set(result.categories.model_dump(by_alias=True)) == set(OMNI_CATEGORIES)
            scores = result.category_scores.model_dump(by_alias=True)
            assert all(0.0 <= s <= 1.0 for s in scores.values())
            assert result.flagged == any(result.categories.model_dump(by_alias=True).values()) or result.flagged
    applied = [r.results[0].category_applied_input_types.model_dump(by_alias=True) for r in (text, image, mixed)]
    policy = load_policy_set(api_settings.policy_dir).select({})
    mapped = {name for category in policy.categories for name in omni_names(category)}
    assert mapped, "the default policy maps its categories to omni-moderation names"
    for types, result in zip((["text"], ["image"], ["text", "image"]), applied, strict=True):
        assert result == {name: types if name in mapped else [] for name in OMNI_CATEGORIES}


async def test_a_decision_matches_the_policy_and_carries_the_callers_trace(api_settings: Settings) -> None:
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    post = {"post_id": "api-1", "user_id": "u1", "text": "click this link to verify your bank account",
            "image": {"data_b64": base64.b64encode(PNG).decode()}, "metadata": {"surface": "chat"}}
    async with api_for(api_settings) as api, api.http() as http:
        response = await http.post("/v1/decide", json=post,
                                   headers={"traceparent": f"00-{trace_id}-00f067aa0ba902b7-01"})
        published_before = sum(api.service.counts.decisions.values())
        again = await http.post("/v1/decide", json=post)
    assert response.status_code == 200, response.text
    decision = response.json()
    assert decision["post_id"] == "api-1" and decision["trace_id"] == trace_id
    assert response.headers["x-trace-id"] == trace_id
    policy = load_policy_set(api_settings.policy_dir).select({"surface": "chat"})
    assert decision["policy"] == {"name": policy.name, "version": policy.version} and decision["source"] == "model"
    assert set(decision["scores"]) == {c.name for c in policy.categories}
    assert again.json()["source"] == "cache" and again.json()["scores"] == decision["scores"]
    assert again.headers["x-trace-id"] != trace_id, "no traceparent: a fresh trace"
    assert published_before == 0, "nothing is published unless asked"


async def test_decide_publishes_only_when_asked(api_settings: Settings) -> None:
    post = {"post_id": "api-pub", "user_id": "u1", "text": "a friendly post about my garden"}
    async with api_for(api_settings) as api, api.http() as http:
        quiet = await http.post("/v1/decide", json={**post, "post_id": "api-quiet"})
        loud = await http.post("/v1/decide", params={"publish": "true"}, json=post)
        (record,) = await collect(api_settings, api_settings.output_topic, 1)
        assert sum(api.service.counts.decisions.values()) == 1
    assert quiet.status_code == loud.status_code == 200
    assert record.key == b"api-pub" and orjson.loads(record.value)["action"] == loud.json()["action"]
    assert dict(record.headers)["traceparent"].decode().split("-")[1] == loud.headers["x-trace-id"]


class GatedClassifier(WrappedClassifier):
    """Scores normally once ``release`` is set; records each batch's texts; ``entered`` marks the first call."""

    def __init__(self, inner: WrappedClassifier | object) -> None:
        super().__init__(inner)  # type: ignore[arg-type]
        self.entered = threading.Event()
        self.release = threading.Event()
        self.batches: list[list[str | None]] = []

    def score_batch(self, items: Sequence[ModelInput]) -> list[dict[str, float]]:
        self.batches.append([item.text for item in items])
        self.entered.set()
        self.release.wait(60)
        return super().score_batch(items)


async def test_a_request_shares_the_streams_in_flight_scores_and_cache(api_settings: Settings) -> None:
    policies = load_policy_set(api_settings.policy_dir)
    gated = GatedClassifier(load_classifier(api_settings, policies.head_spec()))
    text = "buy cheap pills online today"
    async with api_for(api_settings, classifier=gated) as api, api.http() as http:
        await produce(api_settings, [post_record({"post_id": "stream-1", "user_id": "u", "text": text})])
        await asyncio.to_thread(gated.entered.wait, 60)  # the stream's post is in the model
        request = asyncio.create_task(http.post("/v1/decide", json={"post_id": "api-2", "user_id": "u",
                                                                    "text": text.upper()}))
        while (api.service.telemetry.metrics.registry.get_sample_value("moderator_cache_hits_total") or 0) < 1:  # the request joined the in-flight scores
            await asyncio.sleep(0.01)
        gated.release.set()
        response = await request
        (streamed,) = await collect(api_settings, api_settings.output_topic, 1)
        cached = await http.post("/v1/decide", json={"post_id": "api-3", "user_id": "u", "text": text})
    assert gated.batches == [[text]], "scored once, for both paths"
    assert response.json()["source"] == "cache" and cached.json()["source"] == "cache"
    assert response.json()["scores"] == orjson.loads(streamed.value)["scores"] == cached.json()["scores"]


async def test_a_full_api_answers_429_with_retry_after(api_settings: Settings) -> None:
    policies = load_policy_set(api_settings.policy_dir)
    gated = GatedClassifier(load_classifier(api_settings, policies.head_spec()))
    settings = api_settings.model_copy(update={"api_max_in_flight": 1})
    async with api_for(settings, classifier=gated) as api, api.http() as http:
        first = asyncio.create_task(http.post("/v1/moderations", json={"input": "first"}))
        await asyncio.to_thread(gated.entered.wait, 60)
        refused = await http.post("/v1/moderations", json={"input": "one too many"})
        gated.release.set()
        assert (await first).status_code == 200
        after = await http.post("/v1/moderations", json={"input": "second"})
    assert refused.status_code == 429 and refused.headers["retry-after"] == "1"
    assert refused.json()["error"]["type"] == "rate_limit_error"
    assert after.status_code == 200


async def test_revoked_keys_are_refused(api_settings: Settings) -> None:
    async with api_for(api_settings.model_copy(update={"api_key_cache_s": 0.0})) as api:
        issued = await issue_api_key(api.keys, "short-lived")
        token = issued.token.get_secret_value()
        async with httpx.AsyncClient(base_url=api.url, headers={"Authorization": f"Bearer {token}"}) as http:
            before = await http.post("/v1/moderations", json={"input": "hello"})
            assert await api.keys.revoke(issued.record.token_id) is not None
            after = await http.post("/v1/moderations", json={"input": "hello"})
        listed = {k.token_id for k in await api.keys.list()}
    assert before.status_code == 200 and after.status_code == 401 and issued.record.token_id not in listed


async def test_only_api_keys_open_the_api_and_redis_holds_no_key(api_settings: Settings) -> None:
    async with api_for(api_settings) as api:
        issued = await issue_api_key(api.keys, "auditor")
        token = issued.token.get_secret_value()
        redis = api.service.redis
        assert redis is not None
        dump = [value for key in await redis.keys("moderator:api:*")
                for value in (await redis.hgetall(key)).items()]
        reviewer = await api.keys.issue("ana", "reviewer")  # a token of another role in the same store
        async with httpx.AsyncClient(base_url=api.url) as http:
            as_reviewer = await http.post("/v1/moderations", json={"input": "hi"}, headers={
                "Authorization": f"Bearer {reviewer.token.get_secret_value()}"})
            wrong = await http.post("/v1/moderations", json={"input": "hi"},
                                    headers={"Authorization": f"Bearer {token[:-1]}x"})
    assert dump and not any(token.encode() in field + value for field, value in dump)
    assert as_reviewer.status_code == wrong.status_code == 401


ERRORS = [  # (case, request kwargs, status, code)
    ("no key", {"headers": {"Authorization": ""}, "json": {"input": "hi"}}, 401, "invalid_api_key"),
    ("wrong key", {"headers": {"Authorization": "Bearer " + "a" * 43}, "json": {"input": "hi"}},
     401, "invalid_api_key"),
    ("not JSON", {"content": b"{input: hi", "headers": {"content-type": "application/json"}}, 400,
     "invalid_json"),
    ("no body", {"content": b"", "headers": {"content-type": "application/json"}}, 400, "invalid_json"),
    ("not an object", {"json": ["hi"]}, 400, "invalid_request"),
    ("nesting bomb", {"content": b'{"input": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
                      "headers": {"content-type": "application/json"}}, 400, "invalid_json"),
    ("number out of range", {"content": b'{"input": 1e999999}', "headers": {"content-type": "application/json"}},
     400, "invalid_request"),
    ("NaN", {"content": b'{"input": NaN}', "headers": {"content-type": "application/json"}}, 400,
     "invalid_request"),
    ("lone surrogate escape", {"content": b'{"input": "\\ud800 hi"}', "headers": {"content-type": "application/json"}},
     400, "invalid_json"),
    ("integer past 64 bits in metadata", {"json": {"input": "hi", "metadata": {"n": 2**70}}}, 400, "invalid_input"),
    ("missing input", {"json": {"model": "omni-moderation-latest"}}, 400, "invalid_request"),
    ("input of the wrong type", {"json": {"input": 42}}, 400, "invalid_request"),
    ("unknown field", {"json": {"input": "hi", "temperature": 1}}, 400, "invalid_request"),
    ("mixed strings and parts", {"json": {"input": ["hi", {"type": "text", "text": "x"}]}}, 400,
     "invalid_request"),
    ("unknown part type", {"json": {"input": [{"type": "audio", "audio": "x"}]}}, 400, "invalid_request"),
    ("empty input array", {"json": {"input": []}}, 400, "invalid_input"),
    ("empty string", {"json": {"input": ["fine", ""]}}, 400, "invalid_input"),
    ("too many strings", {"json": {"input": ["x"] * 33}}, 400, "invalid_input"),
    ("two images", {"json": {"input": [{"type": "image_url", "image_url": {"url": DATA_URL}}] * 2}}, 400,
     "invalid_input"),
    ("data URL that is not a base64 image", {"json": {"input": [
        {"type": "image_url", "image_url": {"url": "data:text/html,<script>"}}]}}, 400, "invalid_input"),
    ("base64 that is not an image", {"json": {"input": [
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,aGVsbG8gd29ybGQ="}}]}}, 400,
     "image_decode"),
    ("file: URL", {"json": {"input": [{"type": "image_url", "image_url": {"url": "file:///etc/passwd"}}]}}, 400,
     "url_blocked"),
    ("cloud metadata URL", {"json": {"input": [
        {"type": "image_url", "image_url": {"url": "http://169.254.169.254/latest/meta-data"}}]}}, 400,
     "url_blocked"),
    ("text over max_text_chars", {"json": {"input": "x" * 20_001}}, 400, "text_too_long"),
]


@pytest.fixture(scope="module")
async def shared_api(servers: Servers, tiny_clip_dir: Path) -> AsyncIterator[Api]:
    """One service and API for the tests that only send requests (each error case needs no fresh one)."""
    async with api_for(make_settings(servers, model=str(tiny_clip_dir))) as api:
        yield api


@pytest.mark.parametrize(("case", "request_kwargs", "status", "code"), ERRORS, ids=[e[0] for e in ERRORS])
async def test_malformed_requests_get_a_4xx_with_a_clear_message(
        shared_api: Api, case: str, request_kwargs: dict[str, object], status: int, code: str) -> None:
    async with shared_api.http() as http:
        response = await http.post("/v1/moderations", **request_kwargs)  # type: ignore[arg-type]
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code and len(error["message"]) > 10, case
    assert "<script>" not in error["message"] and "xxxxxxxxxx" not in error["message"], "input is not echoed"


async def _raw_post(url: str, key: str, head: dict[str, str], chunks: Sequence[bytes]) -> tuple[int, dict[str, object]]:
    """POST over a bare socket (a client library would not send a false Content-Length), then read the answer."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    lines = ["POST /v1/moderations HTTP/1.1", f"Host: {host}", f"Authorization: Bearer {key}",
             "Content-Type: application/json", *(f"{k}: {v}" for k, v in head.items())]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
    for chunk in chunks:
        writer.write(chunk)
    await writer.drain()
    status_line = await reader.readline()
    headers = {}
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode().partition(":")
        headers[name.lower()] = value.strip()
    body = await reader.readexactly(int(headers["content-length"]))
    writer.close()
    return int(status_line.split()[1]), orjson.loads(body)


async def test_a_body_past_the_limit_is_refused_declared_or_chunked(api_settings: Settings) -> None:
    settings = api_settings.model_copy(update={"max_message_bytes": 64 * 1024})
    chunk = b" " * (16 * 1024)
    chunked = [b"%x\r\n%s\r\n" % (len(chunk), chunk)] * 8  # 128 KiB offered, no length declared
    async with api_for(settings) as api:
        declared = await _raw_post(api.url, api.key, {"Content-Length": str(64 * 1024 * 1024)}, [])
        streamed = await _raw_post(api.url, api.key, {"Transfer-Encoding": "chunked"}, chunked)
    for status, body in (declared, streamed):
        assert status == 413 and body["error"]["code"] == "message_too_large"  # type: ignore[index]


async def test_decide_rejects_malformed_posts_with_the_streams_reasons(shared_api: Api) -> None:
    async with shared_api.http() as http:
        no_id = await http.post("/v1/decide", json={"user_id": "u", "text": "hi"})
        no_content = await http.post("/v1/decide", json={"post_id": "p", "user_id": "u"})
        bidi = await http.post("/v1/decide", json={"post_id": "p\u202e", "user_id": "u", "text": "hi"})
        bad_image = await http.post("/v1/decide", json={"post_id": "p", "user_id": "u",
                                                         "image": {"data_b64": "bm90IGFuIGltYWdl"}})
        surrogate = await http.post("/v1/decide", content=b'{"post_id": "p", "user_id": "u", "text": "\\ud800"}',
                                    headers={"content-type": "application/json"})
    assert [r.status_code for r in (no_id, no_content, bidi, bad_image, surrogate)] == [400] * 5
    assert surrogate.json()["error"]["code"] == "invalid_json", "as the stream dead-letters it"
    assert no_id.json()["error"]["param"] == "post_id"
    assert "text or an image" in no_content.json()["error"]["message"]
    assert bad_image.json()["error"]["code"] == "image_decode"


async def test_operations_answer_post_only_and_check_their_query(shared_api: Api) -> None:
    async with shared_api.http() as http:
        get = await http.get("/v1/moderations")
        flag = await http.post("/v1/decide", params={"publish": "maybe"},
                               json={"post_id": "q-1", "user_id": "u", "text": "hi"})
        docs = await http.get("/docs")
    assert get.status_code == 405 and get.headers["allow"] == "POST" and get.json()["error"]["code"] == "http_405"
    assert flag.status_code == 400 and flag.json()["error"]["param"] == "publish"
    assert flag.json()["error"]["code"] == "invalid_request"
    assert docs.status_code == 200 and "swagger" in docs.text.lower()


async def test_metrics_count_the_api_beside_the_stream(api_settings: Settings) -> None:
    async with api_for(api_settings) as api, api.http() as http:
        await produce(api_settings, [post_record({"post_id": "s-1", "user_id": "u", "text": "stream text one"})])
        await collect(api_settings, api_settings.output_topic, 1)
        assert (await http.post("/v1/moderations", json={"input": ["api text one", "api text two"]})).status_code == 200
        assert (await http.post("/v1/moderations", json={"input": []})).status_code == 400
        for made_up in ("/v1/nope-1", "/v1/nope-2"):
            missing = await http.post(made_up, json={})
            assert missing.status_code == 404 and missing.json()["error"]["code"] == "http_404"
        registry = api.service.telemetry.metrics.registry
        value = registry.get_sample_value
        assert value("moderator_api_requests_total", {"endpoint": "/v1/moderations", "status": "200"}) == 1
        assert value("moderator_api_requests_total", {"endpoint": "/v1/moderations", "status": "400"}) == 1
        assert value("moderator_api_requests_total", {"endpoint": "other", "status": "404"}) == 2
        api_decided = sum(value("moderator_api_decisions_total", {"endpoint": "moderations", "action": a,
                                                                   "source": "model"}) or 0
                          for a in ("allow", "review", "block"))
        assert api_decided == 2
        assert value("moderator_cache_misses_total") == 3, "one cache for both paths"
        assert value("moderator_model_batch_size_sum") == 3, "one model batcher for both paths"
        body = api.service.telemetry.metrics.render().decode()
    assert "moderator_api_request_seconds_bucket" in body and "moderator_decisions_total" in body


async def test_serve_starts_the_api_when_its_port_is_set(api_settings: Settings) -> None:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings = api_settings.model_copy(update={"api_port": port, "api_key_secret": SECRET})
    async with running(build_service(settings)) as service:
        assert service.redis is not None
        token = (await issue_api_key(api_key_store(service.redis, settings), "serve")).token.get_secret_value()
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            while True:
                try:
                    docs = await http.get("/openapi.json")
                    break
                except httpx.ConnectError:
                    await asyncio.sleep(0.05)
            answer = await http.post("/v1/moderations", json={"input": "hello"},
                                     headers={"Authorization": f"Bearer {token}"})
    assert answer.status_code == 200
    schema = docs.json()
    assert {"/v1/moderations", "/v1/decide"} <= set(schema["paths"])
    assert "HTTPBearer" in schema["components"]["securitySchemes"]
    for path, model in (("/v1/moderations", "ModerationRequest"), ("/v1/decide", "Post")):
        operation = schema["paths"][path]["post"]  # bodies are validated from bytes by the routes, documented here
        assert operation["requestBody"]["content"]["application/json"]["schema"] == {
            "$ref": f"#/components/schemas/{model}"}
        assert operation["security"] == [{"HTTPBearer": []}]
    assert {"TextPart", "ImagePart", "ImageURL", "ImageRef"} <= set(schema["components"]["schemas"])


def test_the_cli_creates_a_key_once_lists_and_revokes_it(servers: Servers, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODERATOR_REDIS_URL", servers.redis_url)
    monkeypatch.setenv("MODERATOR_API_KEY_SECRET", SECRET.get_secret_value())
    runner = CliRunner()

    def cli(*args: str) -> Result:
        return runner.invoke(build_app(), ["api-key", *args])

    created = cli("create", "cli-app", "--label", "from the test")
    key = created.stdout.strip()
    listed = cli("list")
    (line,) = [row for row in listed.stdout.splitlines() if "cli-app" in row]
    key_id = line.split()[0]
    revoked, again = cli("revoke", key_id), cli("revoke", key_id)
    assert created.exit_code == 0 and len(key) >= 40 and key not in listed.stdout
    assert "from the test" in line and revoked.exit_code == 0 and again.exit_code == 1
    assert "cli-app" not in cli("list").stdout
