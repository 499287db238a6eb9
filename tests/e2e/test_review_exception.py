"""Review by exception on the page, in Chromium: the products that need eyes have their own tab, a spot-check shows
a sample of the rest, a rejection there stands, and one button approves every other image that needs no eyes."""

from __future__ import annotations

import shutil

import pytest
from support.helpers import REVIEW_OF_ROW, USER_A, completed_batch
from support.review import review_server

pytestmark = pytest.mark.slow
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def test_spot_check_then_approve_everything_that_needs_no_eyes(pool_env, conn) -> None:
    if CHROMIUM is None:
        pytest.skip("Chromium is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    batch = completed_batch(conn, 30)
    with conn.transaction():  # rows 4 and 9 need eyes: a flagged image, an unusable photo
        conn.execute("UPDATE csv_row_jobs SET generated_images = jsonb_set(generated_images, '{0,flagged}', 'true')"
                     " WHERE batch_id = %s AND row_number = 4", [batch])
        conn.execute("UPDATE csv_row_jobs SET checkpoint = '{\"reference_error\": \"HTTP 404\"}'"
                     " WHERE batch_id = %s AND row_number = 9", [batch])
    env = dict(pool_env, CSVJOBS_USER_ID=str(USER_A))
    with review_server(env, str(batch)) as url, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.on("dialog", lambda dialog: dialog.accept())
        page.goto(url)
        page.wait_for_selector("section.row")
        page.wait_for_function("document.body.dataset.live === 'yes'")
        page.click(".tab[data-filter=needs_eyes]")
        page.wait_for_function("document.querySelector('#rows > [data-filter]').dataset.filter === 'needs_eyes'")
        assert page.eval_on_selector_all("section.row", "s => s.map(r => r.dataset.row)") == ["4", "9"]
        page.fill("#sample-size", "6")
        page.click("#spot-check")
        page.wait_for_selector("#sample-note")
        sampled = page.eval_on_selector_all("section.row", "s => s.map(r => Number(r.dataset.row))")
        assert len(sampled) == 6 and not {4, 9} & set(sampled)
        # One image of the sample is wrong: rejected with its key.
        page.locator(f"section.row[data-row='{sampled[0]}'] figure.image").first.focus()
        page.keyboard.press("r")
        page.wait_for_function("document.body.dataset.unsent === '0'")
        page.click("#approve-unflagged")
        page.wait_for_function("document.getElementById('status').textContent.includes('approved')")
        said = page.text_content("#status")
        browser.close()
    assert said is not None and said.startswith(f"{2 * 28 - 1} image(s) approved")
    states = {}
    for row in conn.execute(f"SELECT row_number, {REVIEW_OF_ROW}"
                            " FROM csv_row_jobs WHERE batch_id = %s", [batch]).fetchall():
        for style in ("lifestyle_emotional", "single_white_background"):
            states[(row["row_number"], style)] = ((row["review"] or {}).get(style) or {}).get("state", "unreviewed")
    assert states.pop((sampled[0], "lifestyle_emotional")) == "rejected"
    assert {s for (row, _style), s in states.items() if row in (4, 9)} == {"unreviewed"}
    assert {s for (row, _style), s in states.items() if row not in (4, 9)} == {"approved"}
