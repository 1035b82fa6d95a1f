"""The review app under attack, on the real Redis and broker: big and chunked bodies, guessing, audit
flooding, stolen or leaked tokens, plain HTTP behind proxies, queue hoarding, echoing 422s."""

from __future__ import annotations

import ipaddress
import re
import ssl
import tracemalloc
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from typer.testing import CliRunner

from moderator.cli import build_app
from moderator.review.app import create_app
from moderator.review.context import open_review
from moderator.review.middleware import MAX_BODY_BYTES
from moderator.review.server import bind, demo_review_app, serving
from tests.conftest import Servers, make_settings
from tests.review_helpers import TOKEN_SECRET, ReviewApp, enqueue, isolated_keys, review_app, with_secret

pytestmark = pytest.mark.integration

CHUNK = 64 * 1024


class Drip:
    """A chunked request body (no Content-Length) of ``total`` bytes that counts what was taken from it."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.sent = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while self.sent < self.total:
            self.sent += CHUNK
            yield b"username=a&token=" + b"x" * (CHUNK - 17)


async def _login(review: ReviewApp, name: str, token: str, headers: dict[str, str] | None = None) -> httpx.Response:
    page = await review.client.get("/login", headers=headers)
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert csrf is not None
    return await review.client.post("/login", data={"username": name, "token": token, "csrf": csrf.group(1)},
                                    headers=headers)


async def test_a_chunked_upload_to_login_is_cut_off_at_the_limit_with_bounded_memory(servers: Servers) -> None:
    async with review_app(make_settings(servers)) as review:
        body = Drip(200 * 1024 * 1024)
        tracemalloc.start()
        try:
            response = await review.client.post("/login", content=body)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert "content-length" not in response.request.headers  # it really was chunked
        assert response.status_code == 413
        assert body.sent <= MAX_BODY_BYTES + 2 * CHUNK, "reading stopped at the limit"
        assert peak < 8 * 1024 * 1024, f"peak {peak} bytes while 200 MB were offered"
        declared = await review.client.post("/login", content=b"x" * (MAX_BODY_BYTES + 1))
        assert declared.status_code == 413


async def test_decide_with_a_chunked_body_and_no_auth_is_401_and_the_body_is_never_read(servers: Servers) -> None:
    async with review_app(make_settings(servers)) as review:
        item_id = await enqueue(review.context, "rv-sec-chunk", image=False)
        body = Drip(10 * 1024)
        response = await review.client.post(f"/api/items/{item_id}/decide", content=body)
        assert response.status_code == 401 and body.sent == 0
        big = Drip(10 * 1024 * 1024)
        refused = await review.client.post(f"/api/items/{item_id}/decide", content=big, headers=review.bearer("alice"))
        assert refused.status_code == 413 and big.sent <= MAX_BODY_BYTES + 2 * CHUNK


async def test_wrong_tokens_are_throttled_and_then_even_the_right_token_waits(servers: Servers) -> None:
    settings = make_settings(servers, review_login_free_attempts=3, review_login_backoff_s=60.0)
    async with review_app(settings) as review:
        answers = [await review.client.get("/api/me", headers={"Authorization": f"Bearer wrong-{i}"})
                   for i in range(6)]
        assert [a.status_code for a in answers] == [401, 401, 401, 401, 429, 429]
        assert int(answers[-1].headers["retry-after"]) > 0
        right = await review.client.get("/api/me", headers=review.bearer("alice"))
        assert right.status_code == 429, "the right token is refused while the address must wait"

        async with review_app(settings, client_address="10.9.8.7") as elsewhere:  # another address is not slowed
            assert (await elsewhere.client.get("/api/me", headers=elsewhere.bearer("alice"))).status_code == 200
        refused = await review.context.audit.recent(security=True)
        assert [e.action for e in refused[0]] == ["token_refused"] * 4
        assert all(e.detail == "from 127.0.0.1" and e.attempted is None for e in refused[0])
        metrics = review.context.auth.metrics.render().decode()
        assert 'moderator_review_auth_failures_total{kind="token"} 4.0' in metrics
        assert 'moderator_review_auth_throttled_total{kind="token"} 3.0' in metrics


async def test_failed_logins_back_off_per_account_and_per_address(servers: Servers) -> None:
    settings = make_settings(servers, review_login_free_attempts=2, review_login_backoff_s=30.0)
    async with review_app(settings, client_address="10.0.0.1") as first:
        codes = [(await _login(first, "alice", f"guess-{i}")).status_code for i in range(3)]
        assert codes == [401, 401, 401]
        throttled = await _login(first, "alice", first.tokens["alice"])
        assert throttled.status_code == 429 and "try again in" in throttled.text
        wait = int(throttled.headers["retry-after"])
        assert 0 < wait <= 30
        # From another address: the account still waits, another account does not.
        second = ReviewApp(first.context, httpx.AsyncClient(
            transport=httpx.ASGITransport(app=first.client._transport.app, client=("10.0.0.2", 1)),  # type: ignore[attr-defined]
            base_url="http://review.test"), first.tokens)
        async with second.client:
            assert (await _login(second, "alice", first.tokens["alice"])).status_code == 429
            assert (await _login(second, "bob", first.tokens["bob"])).status_code == 303
        await first.context.queue.redis.delete(f"{first.context.queue.keys.throttle}lock:account:alice",
                                               f"{first.context.queue.keys.throttle}lock:addr:10.0.0.1")
        again = await _login(first, "alice", "guess-again")  # one more failure: the wait doubles
        assert again.status_code == 401
        longer = int((await _login(first, "alice", "x")).headers["retry-after"])
        assert longer > wait
        metrics = first.context.auth.metrics.render().decode()
        assert 'moderator_review_auth_failures_total{kind="login"} 4.0' in metrics


async def test_failed_logins_cannot_push_an_admins_change_out_of_the_audit_log(servers: Servers) -> None:
    settings = make_settings(servers, review_audit_max=100, review_security_log_max=100,
                             review_login_free_attempts=10_000)
    async with review_app(settings) as review:
        bank = await review.client.post("/api/banks/sec-bank/entries", headers=review.bearer("root"),
                                        json={"hash": "ab" * 32, "kind": "sha256", "label": "known bad"})
        assert bank.status_code == 200, bank.text
        for i in range(300):
            assert (await _login(review, "root" if i % 2 else "ana", f"guess-{i}")).status_code == 401
        audit = (await review.client.get("/api/audit", headers=review.bearer("root"))).json()["entries"]
        assert [e["action"] for e in audit] == ["bank_add"] and audit[0]["actor"] == "root"
        refused = await review.context.audit.recent(1000, security=True)
        assert 100 <= len(refused[0]) < 300, "the security stream is capped on its own"
        assert {e.actor for e in refused[0]} == {"(unauthenticated)"}
        assert {e.attempted for e in refused[0]} == {"root", "ana"}
        await review.context.banks.remove("sec-bank", "ab" * 32, "root")


async def test_tokens_are_issued_and_revoked_at_runtime_and_revoking_ends_sessions(servers: Servers) -> None:
    async with review_app(make_settings(servers)) as review:
        issued = await review.client.post("/api/tokens", headers=review.bearer("root"),
                                          json={"name": "cy", "role": "reviewer", "label": "night shift"})
        assert issued.status_code == 201
        token, token_id = issued.json()["token"], issued.json()["record"]["token_id"]
        listed = (await review.client.get("/api/tokens", headers=review.bearer("root"))).json()
        assert token_id in {t["token_id"] for t in listed} and token not in str(listed)
        assert (await review.client.get("/api/me", headers={"Authorization": f"Bearer {token}"})).json()["name"] == "cy"
        assert (await _login(review, "cy", token)).status_code == 303
        assert (await review.client.get("/api/me")).json()["name"] == "cy"  # the session cookie

        revoked = await review.client.delete(f"/api/tokens/{token_id}", headers=review.bearer("root"))
        assert revoked.status_code == 200
        assert (await review.client.get("/api/me", headers={"Authorization": f"Bearer {token}"})).status_code == 401
        assert (await review.client.get("/api/me")).status_code == 401, "the session ended with its token"
        audit = (await review.client.get("/api/audit", headers=review.bearer("root"))).json()["entries"]
        assert [e["action"] for e in audit[:2]] == ["token_revoke", "login"]


def test_the_cli_adds_a_user_prints_the_token_once_lists_and_revokes(servers: Servers,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODERATOR_REDIS_URL", servers.redis_url)
    monkeypatch.setenv("MODERATOR_REVIEW_TOKEN_SECRET", TOKEN_SECRET.get_secret_value())
    runner = CliRunner()
    added = runner.invoke(build_app(), ["review", "user", "add", "cli-dana", "--role", "admin"])
    assert added.exit_code == 0, added.output
    token = added.stdout.strip().splitlines()[-1]
    listed = runner.invoke(build_app(), ["review", "token", "list", "--name", "cli-dana"])
    assert listed.exit_code == 0 and "cli-dana  admin" in listed.stdout and token not in listed.stdout
    token_id = listed.stdout.split()[0]
    assert runner.invoke(build_app(), ["review", "token", "revoke", token_id]).exit_code == 0
    assert runner.invoke(build_app(), ["review", "token", "list", "--name", "cli-dana"]).stdout == ""
    monkeypatch.setenv("MODERATOR_REVIEW_TOKEN_SECRET", "short")
    monkeypatch.setenv("MODERATOR_REVIEW_USERS", '[{"name": "old", "token": "configured-token-123"}]')
    refused = runner.invoke(build_app(), ["review", "user", "add", "cli-eve"])
    assert refused.exit_code == 2 and "MODERATOR_REVIEW_TOKEN_SECRET" in refused.output
    assert "MODERATOR_REVIEW_USERS(_FILE) is ignored" in refused.output


async def test_https_and_trusted_proxies_get_secure_cookies_and_hsts(servers: Servers) -> None:
    async with review_app(make_settings(servers), base_url="https://review.test") as direct:
        page = await direct.client.get("/login")
        assert "Secure" in page.headers["set-cookie"] and "max-age=" in page.headers["strict-transport-security"]
        assert (await _login(direct, "alice", direct.tokens["alice"])).headers["set-cookie"].count("Secure") == 1
    forwarded = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.9"}
    async with review_app(make_settings(servers)) as untrusted:
        page = await untrusted.client.get("/login", headers=forwarded)
        assert "Secure" not in page.headers["set-cookie"] and "strict-transport-security" not in page.headers
    async with review_app(make_settings(servers, review_trusted_proxies=["127.0.0.0/8"])) as proxied:
        page = await proxied.client.get("/login", headers=forwarded)
        assert "Secure" in page.headers["set-cookie"] and "strict-transport-security" in page.headers
        await proxied.client.get("/api/me", headers={**forwarded, "Authorization": "Bearer wrong"})
        refused = await proxied.context.audit.recent(security=True)
        assert refused[0][0].detail == "from 203.0.113.9", "the client address comes from the trusted proxy"


async def test_claims_per_reviewer_and_renewals_per_item_are_capped(servers: Servers) -> None:
    settings = make_settings(servers, review_max_claims=2, review_max_renewals=1)
    async with review_app(settings) as review:
        ids = [await enqueue(review.context, f"rv-sec-cap-{i}", image=False) for i in range(3)]
        alice = review.bearer("alice")
        assert (await review.client.post("/api/queues/default/claim", headers=alice)).status_code == 200
        assert (await review.client.post("/api/queues/default/claim", headers=alice)).status_code == 200
        third = await review.client.post("/api/queues/default/claim", headers=alice)
        assert third.status_code == 429 and "decide or release one first" in third.json()["detail"]
        held = [s.item.item_id for s in [await review.context.queue.get(i) for i in ids]
                if s is not None and s.reviewer == "alice"]
        free = next(i for i in ids if i not in held)
        assert (await review.client.post(f"/api/items/{free}/claim", headers=alice)).status_code == 429
        assert (await review.client.post(f"/api/items/{free}/claim", headers=review.bearer("bob"))).status_code == 200

        assert (await review.client.post(f"/api/items/{held[0]}/claim", headers=alice)).status_code == 200  # renewal
        limit = await review.client.post(f"/api/items/{held[0]}/claim", headers=alice)
        assert limit.status_code == 429 and "renewed as often as allowed" in limit.json()["detail"]
        decided = await review.client.post(f"/api/items/{held[0]}/decide", headers=alice,
                                           json={"action": "allow", "label": "benign"})
        assert decided.status_code == 200
        await review.client.post(f"/api/items/{free}/release", headers=review.bearer("bob"))
        assert (await review.client.post(f"/api/items/{free}/claim", headers=alice)).status_code == 200


async def test_422_answers_say_where_and_why_without_echoing_the_input(servers: Servers) -> None:
    async with review_app(make_settings(servers)) as review:
        item_id = await enqueue(review.context, "rv-sec-422", image=False)
        await review.client.post(f"/api/items/{item_id}/claim", headers=review.bearer("alice"))
        marker = "ECHO-" + "z" * 5000
        answer = await review.client.post(f"/api/items/{item_id}/decide", headers=review.bearer("alice"),
                                          json={"action": marker, "label": marker, "note": marker})
        assert answer.status_code == 422
        assert "ECHO" not in answer.text and len(answer.content) < 2000
        assert {tuple(e["loc"]) for e in answer.json()["detail"]} == {("action",), ("label",), ("note",)}
        path = await review.client.get("/api/queues/" + "p" * 300 + "/items", headers=review.bearer("alice"))
        assert path.status_code == 422 and "ppp" not in path.text


async def test_the_audit_page_shows_failed_sign_ins_apart_with_the_attempted_name(servers: Servers) -> None:
    async with review_app(make_settings(servers)) as review:
        await _login(review, "<b>ana</b>", "guess")
        page = await review.client.get("/audit?security=true", headers=review.bearer("root"))
        assert page.status_code == 200 and "Failed sign-ins" in page.text
        assert "(unauthenticated)" in page.text and "tried “&lt;b&gt;ana&lt;/b&gt;”" in page.text
        audit = await review.client.get("/audit", headers=review.bearer("root"))
        assert "ana" not in audit.text


async def test_the_demo_gets_an_admin_with_a_fresh_token_revoked_when_it_ends(servers: Servers) -> None:
    settings = make_settings(servers, review_port=0)
    logins = []
    for _ in range(2):
        async with demo_review_app(settings) as demo:
            name, token = demo.login.split(" / ")
            logins.append(token)
            async with httpx.AsyncClient(base_url=demo.url) as client:
                me = await client.get("/api/me", headers={"Authorization": f"Bearer {token}"})
                assert me.json() == {"name": "demo", "role": "admin"}
                tokens = (await client.get("/api/tokens", headers={"Authorization": f"Bearer {token}"})).json()
                assert [t["subject"] for t in tokens if t["label"] == "demo run"] == ["demo"], "the last run's was revoked"
    assert logins[0] != logins[1]


def _self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate and key for 127.0.0.1, valid for a day."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now).not_valid_after(now + timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .sign(key, hashes.SHA256()))
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_file, key_file


async def test_served_over_tls_the_app_sets_secure_cookies_and_hsts(servers: Servers, tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    settings = with_secret(make_settings(servers), review_tls_certfile=cert, review_tls_keyfile=key)
    async with open_review(settings, isolated_keys()) as context, \
            serving(create_app(context), bind("127.0.0.1", 0), settings) as url:
        assert url.startswith("https://")
        async with httpx.AsyncClient(base_url=url, verify=ssl.create_default_context(cafile=str(cert))) as client:
            page = await client.get("/login")
        assert page.status_code == 200 and "Secure" in page.headers["set-cookie"]
        assert page.headers["strict-transport-security"].startswith("max-age=")
