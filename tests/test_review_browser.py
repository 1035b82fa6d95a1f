"""The review UI in a real browser (Debian's chromium driven by playwright) on the real Redis and broker.

Set MODERATOR_REVIEW_SCREENSHOT=docs/review.png to save the review page as the README shows it.
"""

from __future__ import annotations

import os
import shutil

import pytest
from playwright.async_api import async_playwright

from moderator.review.app import create_app
from moderator.review.context import open_review
from moderator.review.server import bind, serving
from tests.conftest import Servers, make_settings
from tests.review_helpers import enqueue, isolated_keys, issue_accounts, with_secret

CHROMIUM = shutil.which("chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(CHROMIUM is None, reason="no chromium browser installed (apt-get install -y chromium; "
                                                ".ci/run installs it)"),
]

ALL_IMAGES_LOADED = "[...document.images].every((i) => i.hidden || (i.complete && i.naturalWidth > 0))"


async def test_reviewer_logs_in_sees_the_flagged_image_blocks_it_and_it_leaves_the_queue(servers: Servers) -> None:
    settings = make_settings(servers)
    async with open_review(with_secret(settings), isolated_keys()) as context, \
            serving(create_app(context), bind("127.0.0.1", 0)) as url:
        tokens = await issue_accounts(context)
        flagged = await enqueue(context, "rv-browser-phish", category="scam", score=0.91,
                                text="Click the link to verify your bank account", overlay="verify your account now")
        others = [
            await enqueue(context, "rv-browser-pills", category="drugs", score=0.74,
                          text="Cheap pills and coke, fast delivery", overlay="buy here"),
            await enqueue(context, "rv-browser-threat", category="violence", score=0.66,
                          text="I will find you and hurt you", image=False),
        ]
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = await browser.new_page(viewport={"width": 1280, "height": 720})
                response = await page.goto(url)
                assert response is not None and response.status == 401  # signed out: the login form
                await page.fill("input[name=username]", "alice")
                await page.fill("input[name=token]", tokens["alice"])
                await page.click("button[type=submit]")
                await page.wait_for_selector(f".queue-entry[data-item-id='{flagged}']")
                assert await page.locator(".queue-entry").count() == 3

                await page.keyboard.press("n")  # claim next: the most severe item
                await page.wait_for_selector("#item:not([hidden])")
                assert await page.inner_text("#meta-post") == "rv-browser-phish"
                assert "scam-review" in await page.inner_text("#rules")
                await page.wait_for_function(ALL_IMAGES_LOADED)
                size = await page.eval_on_selector("#item-image", "(i) => [i.naturalWidth, i.naturalHeight]")
                assert size[0] > 100 and size[1] > 100, "the post's image is shown"
                if target := os.environ.get("MODERATOR_REVIEW_SCREENSHOT"):
                    await page.screenshot(path=target)

                await page.keyboard.press("b")  # block, labelled with the rule's category
                await page.wait_for_selector("#toast.show")
                assert await page.inner_text("#toast") == "Blocked rv-browser-phish (scam)"
                await page.wait_for_selector("#empty:not([hidden])")
                await page.reload()  # what any reviewer now sees: the item is gone from the queue
                await page.wait_for_selector(".queue-entry")
                remaining = await page.eval_on_selector_all(".queue-entry", "(rows) => rows.map((r) => r.dataset.itemId)")
                assert remaining == others
            finally:
                await browser.close()

        state = await context.queue.get(flagged)
        assert state is not None and state.status == "decided"
        assert state.outcome is not None and (state.outcome.action, state.outcome.label) == ("block", "scam")
        assert [e.item_id for e in await context.queue.waiting("default")] == others
