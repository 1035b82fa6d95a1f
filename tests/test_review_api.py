"""The review API on the real Redis and broker: claim → decide, leases, concurrency, auth, overrides."""

from __future__ import annotations

import asyncio
import io
import re
from datetime import timedelta
from pathlib import Path

import orjson
import pytest
from fastapi.routing import APIRoute
from PIL import Image

from moderator.client import read_topic
from moderator.evaldata import read_labeled
from moderator.review.labels import export_labels
from moderator.review.models import ItemState, ReviewerDecision, ReviewVerdict
from moderator.settings import Settings
from tests.conftest import Servers, make_settings
from tests.review_helpers import enqueue, isolated_keys, review_app

pytestmark = pytest.mark.integration


@pytest.fixture
def review_settings(servers: Servers) -> Settings:
    """Settings on the test servers; review needs no model."""
    return make_settings(servers)


async def _reviewer_decisions(settings: Settings, post_id: str, timeout_s: float = 20.0) -> list[ReviewerDecision]:
    found = []
    async for record in read_topic(settings, settings.output_topic, timeout_s=timeout_s, idle_s=2.0):
        value = orjson.loads(record.value)
        if value.get("source") == "reviewer" and value["post_id"] == post_id:
            assert record.key == post_id.encode()
            assert dict(record.headers)["traceparent"].startswith(b"00-4bf92f3577b34da6a3ce929d0e0e4736-")
            found.append(ReviewerDecision.model_validate(value))
            break
    return found


async def test_claim_then_decide_publishes_the_override_and_stores_a_label(review_settings: Settings,
                                                                           tmp_path: Path) -> None:
    keys = isolated_keys()
    async with review_app(review_settings, keys) as review:
        item_id = await enqueue(review.context, "rv-flow-1", category="scam", score=0.72)
        client = review.client

        listed = (await client.get("/api/queues/default/items", headers=review.bearer("alice"))).json()
        assert [e["item_id"] for e in listed] == [item_id]
        claimed = await client.post("/api/queues/default/claim", headers=review.bearer("alice"))
        assert claimed.status_code == 200
        state = ItemState.model_validate(claimed.json())
        assert (state.status, state.reviewer, state.item.post.post_id) == ("claimed", "alice", "rv-flow-1")
        assert [r.rule for r in state.item.decision.reasons] == ["scam-review"]
        assert state.item.decision.scores["scam"] == 0.72
        assert "scam" in state.block_labels and "benign" in state.allow_labels
        assert (await client.get("/api/queues/default/items", headers=review.bearer("alice"))).json() == []

        image = await client.get(f"/api/items/{item_id}/image", headers=review.bearer("alice"))
        assert image.headers["content-type"] == "image/jpeg"
        assert max(Image.open(io.BytesIO(image.content)).size) <= review_settings.review_image_max_side

        verdict = {"action": "block", "label": "scam", "note": "classic advance-fee wording"}
        decided = await client.post(f"/api/items/{item_id}/decide", headers=review.bearer("alice"), json=verdict)
        assert decided.status_code == 200, decided.text
        assert decided.json()["published"] is True
        shown = ItemState.model_validate((await client.get(f"/api/items/{item_id}", headers=review.bearer("bob"))).json())
        assert shown.status == "decided" and shown.outcome is not None and shown.outcome.label == "scam"
        again = await client.post(f"/api/items/{item_id}/decide", headers=review.bearer("alice"), json=verdict)
        assert again.status_code == 409

        history = (await client.get(f"/api/items/{item_id}/history", headers=review.bearer("bob"))).json()
        assert [(h["action"], h["actor"]) for h in history] == [("enqueue", "moderator"), ("claim", "alice"),
                                                                ("decide", "alice")]
        assert history[-1]["previous"] == "review (scam-review)" and history[-1]["outcome"] == "block (scam)"
        assert {h["post_id"] for h in history} == {"rv-flow-1"}
        audit = (await client.get("/api/audit", headers=review.bearer("root"))).json()
        assert audit["entries"][0]["action"] == "decide" and audit["entries"][0]["detail"] == verdict["note"]

    overrides = await _reviewer_decisions(review_settings, "rv-flow-1")
    assert len(overrides) == 1
    override = overrides[0]
    assert (override.action, override.source, override.review.reviewer) == ("block", "reviewer", "alice")
    assert override.review.previous_action == "review" and override.scores["scam"] == 0.72

    out = tmp_path / "labels.jsonl"
    assert await export_labels(review_settings, out, keys=keys) == 1
    [example] = read_labeled(out)  # the format `heads train --data` reads
    assert example.labels == {"scam": 1}
    assert example.post.post_id == "rv-flow-1" and example.post.image is not None
    assert example.post.image.data_b64


async def test_expired_lease_returns_the_item_and_refuses_the_late_verdict(servers: Servers) -> None:
    settings = make_settings(servers, review_lease_s=0.4)
    async with review_app(settings) as review:
        item_id = await enqueue(review.context, "rv-lease-1")
        client = review.client
        assert (await client.post("/api/queues/default/claim", headers=review.bearer("alice"))).status_code == 200
        assert (await client.post("/api/queues/default/claim", headers=review.bearer("bob"))).status_code == 204
        await asyncio.sleep(0.6)

        taken = await client.post("/api/queues/default/claim", headers=review.bearer("bob"))
        assert taken.status_code == 200 and taken.json()["item"]["item_id"] == item_id
        queues = (await client.get("/api/queues", headers=review.bearer("bob"))).json()
        assert {"policy": "default", "queued": 0, "claimed": 1} in queues
        late = await client.post(f"/api/items/{item_id}/decide", headers=review.bearer("alice"),
                                 json={"action": "allow", "label": "benign"})
        assert late.status_code == 409 and late.json()["detail"] == "not_claimed"
        history = (await client.get(f"/api/items/{item_id}/history", headers=review.bearer("bob"))).json()
        assert [h["action"] for h in history] == ["enqueue", "claim", "lease_expired", "claim"]
        assert history[2]["previous"] == "claimed by alice"


async def test_a_lapsed_lease_cannot_decide_even_before_anyone_reclaims(servers: Servers) -> None:
    settings = make_settings(servers, review_lease_s=0.3)
    async with review_app(settings) as review:
        item_id = await enqueue(review.context, "rv-lease-2")
        await review.client.post("/api/queues/default/claim", headers=review.bearer("alice"))
        await asyncio.sleep(0.45)
        late = await review.client.post(f"/api/items/{item_id}/decide", headers=review.bearer("alice"),
                                        json={"action": "allow", "label": "benign"})
        assert late.status_code == 409 and late.json()["detail"] == "lease_expired"
        queues = (await review.client.get("/api/queues", headers=review.bearer("bob"))).json()
        assert {"policy": "default", "queued": 1, "claimed": 0} in queues
        listed = (await review.client.get("/api/queues/default/items", headers=review.bearer("bob"))).json()
        assert [e["item_id"] for e in listed] == [item_id]


async def test_concurrent_reviewers_never_get_the_same_item(review_settings: Settings) -> None:
    async with review_app(review_settings) as review:
        ids = {await enqueue(review.context, f"rv-race-{i}", score=0.6 + i / 100, image=False) for i in range(24)}

        async def drain(name: str) -> list[str]:
            got = []
            while True:
                response = await review.client.post("/api/queues/default/claim", headers=review.bearer(name))
                if response.status_code == 204:
                    return got
                got.append(response.json()["item"]["item_id"])

        # Three workers per account: interleaved claims from the same and from different reviewers.
        names = ("alice", "bob", "root") * 3
        results = await asyncio.gather(*(drain(name) for name in names))
        claimed = [item for result in results for item in result]
        assert len(claimed) == len(set(claimed)) == len(ids) and set(claimed) == ids
        # Nor can a reviewer take a held item by its id.
        holder, item = next((name, got[0]) for name, got in zip(names, results, strict=True) if got)
        other = "bob" if holder != "bob" else "alice"
        conflict = await review.client.post(f"/api/items/{item}/claim", headers=review.bearer(other))
        assert conflict.status_code == 409 and conflict.json()["detail"] == "claimed"


async def test_queue_order_is_severity_then_age_and_queues_are_per_policy(review_settings: Settings) -> None:
    async with review_app(review_settings) as review:
        old_low = await enqueue(review.context, "rv-order-old-low", score=0.61, image=False)
        high = await enqueue(review.context, "rv-order-high", score=0.93, image=False)
        new_low = await enqueue(review.context, "rv-order-new-low", score=0.61, image=False)
        strict = await enqueue(review.context, "rv-order-strict", score=0.99, policy="strict", image=False)
        listed = (await review.client.get("/api/queues/default/items", headers=review.bearer("alice"))).json()
        assert [e["item_id"] for e in listed] == [high, old_low, new_low]
        claims = [(await review.client.post("/api/queues/default/claim", headers=review.bearer("alice"))).json()
                  for _ in range(3)]
        assert [c["item"]["item_id"] for c in claims] == [high, old_low, new_low]
        strict_claim = (await review.client.post("/api/queues/strict/claim", headers=review.bearer("bob"))).json()
        assert strict_claim["item"]["item_id"] == strict
        policies = {q["policy"] for q in (await review.client.get("/api/queues", headers=review.bearer("bob"))).json()}
        assert policies == {"default", "strict"}


async def test_release_puts_the_item_back_and_only_its_holder_or_an_admin_may(review_settings: Settings) -> None:
    async with review_app(review_settings) as review:
        item_id = await enqueue(review.context, "rv-release-1", image=False)
        client = review.client
        await client.post(f"/api/items/{item_id}/claim", headers=review.bearer("alice"))
        assert (await client.post(f"/api/items/{item_id}/release", headers=review.bearer("bob"))).status_code == 409
        released = await client.post(f"/api/items/{item_id}/release", headers=review.bearer("alice"))
        assert released.status_code == 200 and released.json()["status"] == "queued"
        await client.post(f"/api/items/{item_id}/claim", headers=review.bearer("bob"))
        assert (await client.post(f"/api/items/{item_id}/release", headers=review.bearer("root"))).status_code == 200
        assert (await client.post(f"/api/items/{item_id}/claim", headers=review.bearer("alice"))).status_code == 200
        refused = await client.post(f"/api/items/{item_id}/decide", headers=review.bearer("alice"),
                                    json={"action": "block", "label": "benign"})
        assert refused.status_code == 422


async def test_a_redelivered_post_is_queued_once(review_settings: Settings) -> None:
    async with review_app(review_settings) as review:
        first = await enqueue(review.context, "rv-dup-1")
        second = await enqueue(review.context, "rv-dup-1")
        assert first == second
        listed = (await review.client.get("/api/queues/default/items", headers=review.bearer("alice"))).json()
        assert [e["item_id"] for e in listed] == [first]


def _calls(app_routes: list[object]) -> list[tuple[str, str]]:
    """Every API route and protected page as (method, concrete path)."""
    calls = []
    for route in app_routes:
        if (included := getattr(route, "original_router", None)) is not None:  # FastAPI's wrapper of a router
            calls += _calls(included.routes)
            continue
        if not isinstance(route, APIRoute) or route.path in ("/login",):
            continue
        path = (route.path.replace("{item_id}", "0" * 32).replace("{policy}", "default")
                .replace("{bank}", "no-such-bank").replace("{digest}", "0" * 64).replace("{token_id}", "0" * 16))
        assert not re.search(r"{\w+}", path), f"test does not know how to fill {route.path}"
        calls += [(method, path) for method in sorted(route.methods)]
    return calls


# Admin routes and what an admin gets without a body (422: no hash) on a bank that does not exist (404).
# Tokens: a new one without a name is 422, revoking one that does not exist 404.
ADMIN_ONLY = {("GET", "/api/audit"): 200, ("GET", "/audit"): 200, ("GET", "/api/banks"): 200, ("GET", "/banks"): 200,
              ("POST", "/api/banks/no-such-bank/entries"): 422,
              ("DELETE", "/api/banks/no-such-bank/entries/" + "0" * 64): 404,
              ("GET", "/api/security-log"): 200, ("GET", "/api/tokens"): 200, ("POST", "/api/tokens"): 422,
              ("DELETE", "/api/tokens/" + "0" * 16): 404, ("GET", "/metrics"): 200}


async def test_every_endpoint_answers_401_without_a_token_and_403_for_the_wrong_role(servers: Servers) -> None:
    # Many wrong tokens from one address: throttling (tested on its own) is kept out of the way here.
    async with review_app(make_settings(servers, review_login_free_attempts=10_000)) as review:
        client = review.client
        calls = _calls(client._transport.app.routes)  # type: ignore[attr-defined]
        assert len(calls) >= 23 and set(ADMIN_ONLY) <= set(calls)
        for method, path in calls:
            for headers in ({}, {"Authorization": "Bearer not-a-real-token-at-all"}, {"Authorization": "Basic eA=="}):
                response = await client.request(method, path, headers=headers)
                assert response.status_code == 401, (method, path, headers, response.status_code)
            if (method, path) in ADMIN_ONLY:
                response = await client.request(method, path, headers=review.bearer("alice"))
                assert response.status_code == 403, (method, path)
                response = await client.request(method, path, headers=review.bearer("root"))
                assert response.status_code == ADMIN_ONLY[(method, path)], (method, path, response.text)
        image = await client.get("/api/items/" + "0" * 32 + "/image")
        assert image.status_code == 401 and image.headers["content-type"] != "image/jpeg"


async def test_browser_session_login_and_csrf(review_settings: Settings) -> None:
    async with review_app(review_settings) as review:
        item_id = await enqueue(review.context, "rv-session-1", image=False)
        client = review.client
        page = await client.get("/")
        assert page.status_code == 401 and 'action="/login"' in page.text
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
        assert csrf is not None
        forged = await client.post("/login", data={"username": "alice", "token": review.tokens["alice"],
                                                   "csrf": "forged"})
        assert forged.status_code == 403 and "moderator_session" not in forged.cookies
        wrong = await client.post("/login", data={"username": "bob", "token": review.tokens["alice"],
                                                  "csrf": csrf.group(1)})
        assert wrong.status_code == 401
        login = await client.post("/login", data={"username": "alice", "token": review.tokens["alice"],
                                                  "csrf": csrf.group(1)})
        assert login.status_code == 303
        cookie = login.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie
        session_csrf = re.search(r'data-csrf="([^"]+)"', (await client.get("/")).text)
        assert session_csrf is not None

        assert (await client.get("/api/me")).json() == {"name": "alice", "role": "reviewer"}
        assert (await client.post(f"/api/items/{item_id}/claim")).status_code == 403
        wrong_csrf = await client.post(f"/api/items/{item_id}/claim", headers={"X-CSRF-Token": "x" * 43})
        assert wrong_csrf.status_code == 403
        ok = await client.post(f"/api/items/{item_id}/claim", headers={"X-CSRF-Token": session_csrf.group(1)})
        assert ok.status_code == 200
        assert (await client.get("/audit")).status_code == 403
        assert (await client.post("/logout", data={"csrf": "nope"})).status_code == 403
        assert (await client.post("/logout", data={"csrf": session_csrf.group(1)})).status_code == 303
        assert (await client.get("/api/me")).status_code == 401
        audit = (await client.get("/api/audit", headers=review.bearer("root"))).json()["entries"]
        assert [(e["actor"], e["action"]) for e in audit[:3]] == [
            ("alice", "logout"), ("alice", "claim"), ("alice", "login")]
        refused = (await client.get("/api/security-log", headers=review.bearer("root"))).json()["entries"]
        assert [(e["actor"], e["action"], e["attempted"]) for e in refused] == [
            ("(unauthenticated)", "login_failed", "bob")]


async def test_a_decision_left_in_the_outbox_is_published_by_the_drain(review_settings: Settings) -> None:
    keys = isolated_keys()
    async with review_app(review_settings, keys) as review:
        item_id = await enqueue(review.context, "rv-outbox-1", image=False)
        await review.context.queue.claim(item_id, "alice")
        decision = await review.context.queue.decide(item_id, "alice", ReviewVerdict(action="allow", label="benign"))
        # As if the app died before publishing: the entry is in the outbox and older than a drain round.
        stale = decision.model_copy(update={"decided_at": decision.decided_at - timedelta(minutes=1)})
        redis = review.context.queue.redis
        await redis.hset(keys.outbox, item_id, stale.model_dump_json())
        drain = asyncio.create_task(review.context.outbox.drain(0.05, 5.0))
        try:
            overrides = await _reviewer_decisions(review_settings, "rv-outbox-1")
        finally:
            drain.cancel()
        assert len(overrides) == 1 and overrides[0].action == "allow"
        assert await redis.hlen(keys.outbox) == 0
