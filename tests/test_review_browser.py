"""The review UI in a real browser (Debian's chromium driven by playwright) on the real Redis and broker.

Set MODERATOR_REVIEW_SCREENSHOT=docs/review.png to save the review page as the README shows it.
"""

from __future__ import annotations

import os
import re
import shutil

import pytest
from playwright.async_api import async_playwright

from moderator.review.app import create_app
from moderator.review.context import ReviewContext, open_review
from moderator.review.server import bind, serving
from tests.conftest import Servers, make_settings
from tests.review_helpers import enqueue, enqueue_url_post, isolated_keys, issue_accounts, with_secret

CHROMIUM = shutil.which("chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(CHROMIUM is None, reason="no chromium browser installed (apt-get install -y chromium; "
                                                ".ci/run installs it)"),
]

ALL_IMAGES_LOADED = "[...document.images].every((i) => i.hidden || (i.complete && i.naturalWidth > 0))"


LONG_TEXT = "Cheap pills and coke, fast delivery: order at " + "www.totally-legit-pharmacy-" * 6 + "example"
UTC_TIME = r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC"


async def _queue(context: ReviewContext) -> dict[str, str]:
    """Six posts of four users: name -> item id (severity order: phish, pills, repost, url, threat, picture)."""
    return {
        "phish": await enqueue(context, "rv-browser-phish", category="scam", score=0.91,
                               text="Click the link to verify your bank account", overlay="verify your account now",
                               metadata={"locale": "en", "surface": "feed"}),
        "pills": await enqueue(context, "rv-browser-pills", category="drugs", score=0.74, text=LONG_TEXT,
                               overlay="buy here"),
        "repost": await enqueue(context, "rv-browser-pills-again", category="drugs", score=0.74, text=LONG_TEXT,
                                overlay="buy here", user_id="u-2"),
        "url": await enqueue_url_post(context, "rv-browser-url", "https://images.example/p/123.jpg", user_id="u-4"),
        "threat": await enqueue(context, "rv-browser-threat", category="violence", score=0.66,
                                text="I will find you and hurt you", image=False),
        "picture": await enqueue(context, "rv-browser-picture", category="nudity", score=0.61, text=None,
                                 user_id="u-3"),
    }


async def test_reviewer_sees_what_they_decide_with_blocks_and_the_item_leaves_the_queue(servers: Servers) -> None:
    settings = make_settings(servers)
    async with open_review(with_secret(settings), isolated_keys()) as context, \
            serving(create_app(context), bind("127.0.0.1", 0)) as url:
        tokens = await issue_accounts(context)
        items = await _queue(context)
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = await browser.new_page(viewport={"width": 1280, "height": 900})
                response = await page.goto(url)
                assert response is not None and response.status == 401  # signed out: the login form
                await page.fill("input[name=username]", "alice")
                await page.fill("input[name=token]", tokens["alice"])
                await page.click("button[type=submit]")
                await page.wait_for_selector(f".queue-entry[data-item-id='{items['phish']}']")
                assert await page.locator(".queue-entry").count() == 6
                # A post and its repost: same text, told apart by post id and user, both marked alike.
                for name, shown in (("pills", "rv-browser-pills · u-1"), ("repost", "rv-browser-pills-again · u-2")):
                    entry = page.locator(f".queue-entry[data-item-id='{items[name]}']")
                    assert shown in await entry.inner_text() and "1 of 2 alike" in await entry.inner_text()

                await page.keyboard.press("n")  # claim next: the most severe item
                await page.wait_for_selector("#item:not([hidden])")
                assert await page.inner_text("#meta-post") == "rv-browser-phish"
                assert await page.inner_text("#meta-created") == "2026-11-25 10:00:00 UTC"
                assert await page.inner_text("#meta-image-url") == "sent inline"
                assert "since" in await page.inner_text("#meta-waited")
                assert (await page.inner_text("#metadata")).split() == ["locale", "en", "surface", "feed"]
                assert "scam-review" in await page.inner_text("#rules")
                await page.wait_for_selector("#history li")
                assert re.match(UTC_TIME + " moderator enqueue", await page.inner_text("#history li >> nth=0"))
                await page.wait_for_function(ALL_IMAGES_LOADED)
                size = await page.eval_on_selector("#item-image", "(i) => [i.naturalWidth, i.naturalHeight]")
                assert size[0] > 100 and size[1] > 100, "the post's image is shown"
                await page.wait_for_selector(f"#user-posts li[data-item-id='{items['pills']}']")
                assert "rv-browser-pills-again" not in await page.inner_text("#user-posts"), "only this user's posts"
                if target := os.environ.get("MODERATOR_REVIEW_SCREENSHOT"):
                    await page.screenshot(path=target, full_page=True)

                await page.keyboard.press("b")  # block, labelled with the rule's category
                await page.wait_for_selector("#toast.show")
                assert await page.inner_text("#toast") == "Blocked rv-browser-phish (scam)"
                await page.wait_for_selector("#empty:not([hidden])")

                await page.keyboard.press("n")  # the pills: same user, so the phish shows with its verdict
                await page.wait_for_selector(f"#user-posts li[data-item-id='{items['phish']}']")
                assert await page.inner_text("#meta-post") == "rv-browser-pills"
                mine = await page.inner_text("#user-posts")
                assert "reviewed: block (scam) by alice" in mine and "rv-browser-threat" in mine
                overflow = await page.eval_on_selector(
                    "#item-text", "(t) => [t.scrollWidth - t.clientWidth, document.documentElement.scrollWidth "
                                  "- window.innerWidth]")
                assert overflow == [0, 0], "long text wraps inside its panel"

                await page.click(f".queue-entry[data-item-id='{items['picture']}']")
                await page.wait_for_selector("#meta-post:text-is('rv-browser-picture')")
                assert await page.is_hidden("#item-text") and await page.is_visible("#image-only")
                assert "(no text)" not in await page.inner_text("#item")
                await page.click(f".queue-entry[data-item-id='{items['url']}']")
                await page.wait_for_selector("#meta-post:text-is('rv-browser-url')")
                assert await page.inner_text("#meta-image-url") == "https://images.example/p/123.jpg"
                await page.keyboard.press("r")
                await page.wait_for_selector("#empty:not([hidden])")
                await page.reload()  # what any reviewer now sees: the blocked item is gone from the queue
                await page.wait_for_selector(".queue-entry")
                remaining = await page.eval_on_selector_all(".queue-entry", "(rows) => rows.map((r) => r.dataset.itemId)")
                assert set(remaining) == set(items.values()) - {items["phish"]}  # the others were released
            finally:
                await browser.close()

        state = await context.queue.get(items["phish"])
        assert state is not None and state.status == "decided"
        assert state.outcome is not None and (state.outcome.action, state.outcome.label) == ("block", "scam")
