"""Hash banks from the review app: admins upload, list and remove entries on the real Redis; the
service's matcher then matches (and stops matching) a re-encoded copy; reviewers and strangers are refused."""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import pytest
from playwright.async_api import async_playwright
from redis.asyncio import Redis

from moderator.banks.hashing import sha256_hex
from moderator.banks.matcher import BankMatcher
from moderator.banks.schema import BankEntry
from moderator.banks.store import BankStore
from moderator.ingest.images import decode_image
from moderator.ingest.validate import IngestLimits
from moderator.review.app import create_app
from moderator.review.context import open_review
from moderator.review.server import bind, serving
from moderator.settings import Settings
from moderator.testing.samples import render_image
from tests.conftest import Servers, make_settings
from tests.review_helpers import isolated_keys, issue_accounts, review_app, with_secret
from tests.test_banks import near_duplicate, pdq_of
from tests.test_review_browser import CHROMIUM, CHROMIUM_ARGS

pytestmark = pytest.mark.integration


@pytest.fixture
def review_settings(servers: Servers) -> Settings:
    """Settings on the test servers; review needs no model."""
    return make_settings(servers)


async def test_admin_uploads_lists_and_removes_and_the_matcher_follows(review_settings: Settings) -> None:
    bank = f"review-{uuid.uuid4().hex[:8]}"
    original = render_image("known bad upload", 31)
    copy = near_duplicate(original, scale=0.6, quality=60)
    assert sha256_hex(copy) != sha256_hex(original)
    limits = IngestLimits.from_settings(review_settings).image
    redis = Redis.from_url(review_settings.redis_url)
    matcher = BankMatcher(BankStore(redis), refresh_s=0.0)  # the service's matcher on the service's store

    async def matches() -> list[tuple[str, str]]:
        found = await matcher.match(copy, sha256_hex(copy), {bank: 31}, lambda data: decode_image(data, limits))
        return [(m.bank, m.label) for m in found]

    try:
        async with review_app(review_settings) as review:
            client = review.client
            added = await client.post(f"/api/banks/{bank}/entries", headers=review.bearer("root"),
                                      data={"kind": "pdq", "label": "scam creative"},
                                      files={"image": ("bad.png", original, "image/png")})
            assert added.status_code == 200, added.text
            digest = added.json()["hash"]
            assert digest == pdq_of(original) and added.json()["changed"] is True

            listed = {b["name"]: b for b in (await client.get("/api/banks", headers=review.bearer("root"))).json()}
            assert listed[bank]["kind"] == "pdq"
            [entry] = [BankEntry.model_validate(e) for e in listed[bank]["entries"]]
            assert (entry.hash, entry.label, entry.added_by) == (digest, "scam creative", "root")
            assert await matches() == [(bank, "scam creative")]

            page = await client.get("/banks", headers=review.bearer("root"))
            assert page.status_code == 200 and digest in page.text and 'href="/banks"' in page.text
            assert 'href="/banks"' not in (await client.get("/", headers=review.bearer("alice"))).text

            # A known hash from elsewhere, as JSON, into an exact bank created on first use.
            exact = f"{bank}-exact"
            by_hash = await client.post(f"/api/banks/{exact}/entries", headers=review.bearer("root"),
                                        json={"hash": sha256_hex(original).upper(), "kind": "sha256"})
            assert by_hash.status_code == 200 and by_hash.json()["hash"] == sha256_hex(original)
            wrong_kind = await client.post(f"/api/banks/{exact}/entries", headers=review.bearer("root"),
                                           data={"kind": "pdq"}, files={"image": ("bad.png", original, "image/png")})
            assert wrong_kind.status_code == 409
            not_image = await client.post(f"/api/banks/{bank}/entries", headers=review.bearer("root"),
                                          files={"image": ("x.png", b"not an image", "image/png")})
            assert not_image.status_code == 422

            removed = await client.delete(f"/api/banks/{bank}/entries/{digest}", headers=review.bearer("root"))
            assert removed.status_code == 200 and removed.json()["changed"] is True
            listed = {b["name"]: b for b in (await client.get("/api/banks", headers=review.bearer("root"))).json()}
            assert listed[bank]["entries"] == []
            assert await matches() == []
            assert (await client.delete(f"/api/banks/{bank}/entries/{digest}", headers=review.bearer("root"))).status_code \
                == 404

            audit = (await client.get("/api/audit", headers=review.bearer("root"))).json()["entries"]
            bank_audit = [(e["actor"], e["action"], e["detail"]) for e in audit if e["action"].startswith("bank_")]
            assert bank_audit == [
                ("root", "bank_remove", f"{bank} (pdq) {digest}"),
                ("root", "bank_add", f"{exact} (sha256) {sha256_hex(original)}"),
                ("root", "bank_add", f"{bank} (pdq) {digest} label='scam creative'"),
            ]
    finally:
        store = BankStore(redis)
        for name in (bank, f"{bank}-exact"):
            await store.drop(name)
        await redis.aclose()


async def test_bank_routes_refuse_reviewers_strangers_and_missing_csrf(review_settings: Settings) -> None:
    bank = f"review-{uuid.uuid4().hex[:8]}"
    image = render_image("refused", 32)
    digest = pdq_of(image)
    calls = [("GET", "/api/banks", {}), ("GET", "/banks", {}),
             ("POST", f"/api/banks/{bank}/entries", {"data": {"kind": "pdq"}, "files": {"image": ("a.png", image)}}),
             ("POST", f"/api/banks/{bank}/entries", {"json": {"hash": digest, "kind": "pdq"}}),
             ("DELETE", f"/api/banks/{bank}/entries/{digest}", {})]
    redis = Redis.from_url(review_settings.redis_url)
    store = BankStore(redis)
    try:
        async with review_app(review_settings) as review:
            client = review.client
            for method, path, body in calls:
                assert (await client.request(method, path, **body)).status_code == 401, (method, path)
                refused = await client.request(method, path, headers=review.bearer("alice"), **body)
                assert refused.status_code == 403, (method, path)
            assert bank not in {b.name for b in await store.banks()}

            # An admin's browser session: uploads need the session's CSRF token (form field or header).
            page = await client.get("/login")
            login_csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
            assert login_csrf is not None
            login = await client.post("/login", data={"username": "root", "token": review.tokens["root"],
                                                      "csrf": login_csrf.group(1)})
            assert login.status_code == 303
            banks_page = (await client.get("/banks")).text
            csrf = re.search(r'data-csrf="([^"]+)"', banks_page)
            assert csrf is not None and 'src="/static/banks.js"' in banks_page
            upload = {"files": {"image": ("a.png", image, "image/png")}}
            forged = await client.post(f"/api/banks/{bank}/entries", data={"kind": "pdq", "csrf": "x" * 43}, **upload)
            assert forged.status_code == 403
            assert bank not in {b.name for b in await store.banks()}
            ok = await client.post(f"/api/banks/{bank}/entries", data={"kind": "pdq", "csrf": csrf.group(1)}, **upload)
            assert ok.status_code == 200 and ok.json()["hash"] == digest
            assert (await client.delete(f"/api/banks/{bank}/entries/{digest}")).status_code == 403
            gone = await client.delete(f"/api/banks/{bank}/entries/{digest}", headers={"X-CSRF-Token": csrf.group(1)})
            assert gone.status_code == 200
            assert await store.entries(bank) == []
    finally:
        await store.drop(bank)
        await redis.aclose()


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium browser installed (.ci/run installs it)")
async def test_admin_page_uploads_and_removes_in_a_browser(servers: Servers, tmp_path: Path) -> None:
    settings = make_settings(servers)
    bank = f"review-{uuid.uuid4().hex[:8]}"
    image = tmp_path / "bad.png"
    image.write_bytes(render_image("browser upload", 33))
    redis = Redis.from_url(settings.redis_url)
    store = BankStore(redis)
    try:
        async with open_review(with_secret(settings), isolated_keys()) as context, \
                serving(create_app(context), bind("127.0.0.1", 0)) as url, async_playwright() as playwright:
            tokens = await issue_accounts(context)
            browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = await browser.new_page()
                await page.goto(url)
                await page.fill("input[name=username]", "root")
                await page.fill("input[name=token]", tokens["root"])
                await page.click("button[type=submit]")
                await page.click("nav a[href='/banks']")
                await page.fill("#bank-upload input[name=bank]", bank)
                await page.select_option("#bank-upload select[name=kind]", "pdq")
                await page.fill("#bank-upload input[name=label]", "from the browser")
                await page.set_input_files("#bank-upload input[name=image]", str(image))
                await page.click("#bank-upload button[type=submit]")
                row = page.locator(f"#bank-{bank} tbody tr", has_text=pdq_of(image.read_bytes()))
                await row.wait_for()
                assert "from the browser" in await row.inner_text() and "root" in await row.inner_text()
                page.once("dialog", lambda dialog: dialog.accept())
                await row.locator("button.remove").click()
                await page.locator(f"#bank-{bank} tbody", has_text="No entries.").wait_for()
            finally:
                await browser.close()
        assert await store.entries(bank) == []
    finally:
        await store.drop(bank)
        await redis.aclose()
