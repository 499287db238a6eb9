"""The review page built for volume, in headless Chromium: the heading's counts, look-alike variants that share an
image decided once for all of them, select-many and undo, an alt text edited on the page reaching the shop export,
a 2,000-row batch fetching a bounded number of images, and a phone's width. And the CLI agreeing with it: rows
that do not exist are refused by name, and a batch is named by the first characters of its id."""

from __future__ import annotations

import csv
import io
import json
import shutil
import time
import uuid
from pathlib import Path

import pytest
from support.helpers import REVIEW_OF_ROW, USER_A, cli, make_batch
from support.pool import finish, start_pool
from support.review import review_server

pytestmark = pytest.mark.slow
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (apt-get install chromium)")

SHOPIFY = ("Handle,Title,Body (HTML),Vendor,Type,Option1 Name,Option1 Value,Variant SKU,Variant Price,Image Src,"
           "Image Position,Image Alt Text\n"
           "mug,Blue Mug,<p>A glazed mug</p>,Acme,Mugs,Size,Small,MUG-S,10,,,\n"
           "mug,,,,,,Medium,MUG-M,11,,,\n"
           "mug,,,,,,Large,MUG-L,12,,,\n"
           "bowl,Salad Bowl,<p>A wide bowl</p>,Acme,Bowls,Title,Default Title,BOWL,20,,,\n")


@pytest.fixture
def env(pool_env: dict[str, str]) -> dict[str, str]:
    return dict(pool_env, CSVJOBS_USER_ID=str(USER_A))


@pytest.fixture
def shop_batch(env: dict[str, str], tmp_path: Path) -> str:
    source = tmp_path / "products_export.csv"
    source.write_text(SHOPIFY, encoding="utf-8")
    up = cli(env, "upload", str(source), "--json")
    assert up.returncode == 0, up.stderr
    assert json.loads(up.stdout)["reused_rows"] == 2
    code, err = finish(start_pool(env, "--until-done", "--max-dedicated", "0", "--concurrency", "2"))
    assert code == 0, err
    return str(json.loads(up.stdout)["batch_id"])


def states(conn, batch: str, style: str) -> dict[int, str]:
    return {r["row_number"]: (r["review"] or {}).get(style, {}).get("state", "unreviewed") for r in conn.execute(
        f"SELECT row_number, {REVIEW_OF_ROW}"
        " FROM csv_row_jobs WHERE batch_id = %s", [batch]).fetchall()}


def wait(predicate, what: str) -> None:
    deadline = time.monotonic() + 30
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


@needs_chromium
def test_shared_images_select_many_undo_and_alt_text(env, conn, shop_batch: str, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    # The page opens for the id's first characters too.
    with review_server(env, shop_batch[:8]) as url, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page()
        page.goto(url)
        page.wait_for_selector("section.row")
        assert page.title() == "Review products_export.csv"
        counts = page.locator("#counts").inner_text()
        assert "2 products" in counts.replace("\n", " ") and "4 images" in counts.replace("\n", " ")
        mug = page.locator('section.row[data-row="1"]')
        assert mug.get_attribute("data-rows") == "1,2,3" and "with rows 2, 3 (same images)" in mug.inner_text()
        assert page.locator("section.row").count() == 2  # the variants are not shown again
        page.wait_for_function("document.body.dataset.live === 'yes'")
        # One key approves the mug's lifestyle image for all three variants, and moves on to the next undecided.
        page.locator('section.row[data-row="1"] figure[data-style="lifestyle_emotional"]').focus()
        page.keyboard.press("a")
        wait(lambda: states(conn, shop_batch, "lifestyle_emotional") == {1: "approved", 2: "approved", 3: "approved",
                                                                         4: "unreviewed"}, "shared approval")
        page.wait_for_function("document.activeElement && document.activeElement.dataset.style === "
                               "'single_white_background'"
                               " && document.activeElement.closest('.row').dataset.row === '1'")
        # Select everything on screen and reject it in one action; then undo.
        page.click("#select-screen")
        page.click("#reject-selected")
        wait(lambda: set(states(conn, shop_batch, "single_white_background").values()) == {"rejected"}, "all rejected")
        assert set(states(conn, shop_batch, "lifestyle_emotional").values()) == {"rejected"}
        page.wait_for_selector('section.row[data-row="4"] figure.rejected[data-style="lifestyle_emotional"]')
        page.keyboard.press("u")
        wait(lambda: states(conn, shop_batch, "lifestyle_emotional") == {1: "approved", 2: "approved", 3: "approved",
                                                                         4: "unreviewed"}, "undone")
        assert set(states(conn, shop_batch, "single_white_background").values()) == {"unreviewed"}
        # Shift-click selects a range.
        page.wait_for_selector('section.row[data-row="4"] figure.unreviewed[data-style="lifestyle_emotional"]')
        boxes = page.locator("input.select")
        boxes.nth(0).click()
        boxes.nth(3).click(modifiers=["Shift"])
        assert page.locator("figure.selected").count() == 4
        # The bowl's white image gets the merchant's alt text; the shop export uses it.
        alt = page.locator('section.row[data-row="4"] figure[data-style="single_white_background"] input.alt-text')
        alt.fill("Salad bowl, white, top view")
        alt.press("Tab")
        wait(lambda: ((conn.execute(f"SELECT {REVIEW_OF_ROW}"
                                    " FROM csv_row_jobs WHERE batch_id = %s AND row_number = 4",
                                    [shop_batch]).fetchone()["review"] or {}).get("single_white_background", {})
                      .get("alt_text")) == "Salad bowl, white, top view", "alt text saved")
        browser.close()
    out = tmp_path / "shopify.csv"
    exported = cli(env, "export", shop_batch[:8], "--format", "shopify", "--base-url", "https://cdn.example.test",
                   "--output", str(out), "--replace-images", "--all", "--include-placeholders")
    assert exported.returncode == 0, exported.stderr
    rows = list(csv.DictReader(io.StringIO(out.read_text(encoding="utf-8"))))
    assert "Salad bowl, white, top view" in [r.get("Image Alt Text") for r in rows]


@needs_chromium
def test_a_2000_row_batch_fetches_a_bounded_number_of_images(env, conn) -> None:
    from playwright.sync_api import sync_playwright

    from csvjobs.operate.review_view import PAGE_SIZE

    batch = make_batch(conn, 2000)
    prefix = f"csv-images/{USER_A}/{batch}"
    conn.execute(
        "UPDATE csv_row_jobs SET status = 'completed', completed_at = now(), generated_images = jsonb_build_array("
        " jsonb_build_object('style', 'lifestyle_emotional', 'storage_path', %s || '/' || row_number || '/a.png'),"
        " jsonb_build_object('style', 'single_white_background', 'storage_path', %s || '/' || row_number || '/b.png'))"
        " WHERE batch_id = %s", [prefix, prefix, batch])
    with review_server(env, str(batch)) as url, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        images: list[str] = []
        page.on("request", lambda r: images.append(r.url) if "/image?" in r.url else None)
        started = time.monotonic()
        page.goto(url)
        page.wait_for_selector("section.row")
        opened = time.monotonic() - started
        page.wait_for_timeout(500)
        assert page.locator("section.row").count() == PAGE_SIZE
        assert "2000 products" in page.locator("#counts").inner_text().replace("\n", " ")
        assert 0 < len(images) <= 2 * PAGE_SIZE, len(images)  # this page's images at most, never the batch's
        page.click("button[data-page='2']")
        page.wait_for_selector(f'section.row[data-row="{PAGE_SIZE + 1}"]')
        browser.close()
    print(f"2,000-row batch: page opened in {opened:.2f}s with {len(images)} image request(s)")


@needs_chromium
def test_the_page_works_at_a_phones_width(env, shop_batch: str) -> None:
    from playwright.sync_api import sync_playwright

    with review_server(env, shop_batch) as url, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
        page.goto(url)
        page.wait_for_selector("section.row")
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        assert page.locator('meta[name="viewport"]').count() == 1
        # Every control is a button or input with a name a screen reader reads out.
        names = page.evaluate("Array.from(document.querySelectorAll('button')).map(b => b.textContent.trim())")
        assert names and all(names)
        labels = page.evaluate("Array.from(document.querySelectorAll('input')).map(i => i.getAttribute('aria-label'))")
        assert labels and all(labels)
        box = page.locator("figure.image img").first.bounding_box()
        assert box is not None and box["width"] >= 150  # large enough to judge, on a phone too
        browser.close()


def test_the_cli_refuses_rows_that_do_not_exist_and_takes_id_prefixes(env, conn) -> None:
    batch = make_batch(conn, 17)
    conn.execute("UPDATE csv_row_jobs SET status = 'completed' WHERE batch_id = %s", [batch])
    refused = cli(env, "approve", str(batch)[:8], "--rows", "3,99-100")
    assert refused.returncode == 2 and f"batch {str(batch)[:8]} has no row 99, 100" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert cli(env, "approve", str(batch)[:8], "--rows", "3").returncode == 0
    # Two batches starting alike: the prefix is refused as ambiguous, a longer one works.
    twins = [uuid.UUID("abcd1234-0000-4000-8000-000000000001"), uuid.UUID("abcd1299-0000-4000-8000-000000000002")]
    for twin in twins:
        conn.execute("INSERT INTO csv_batches (id, user_id, filename, original_filename, status) VALUES"
                     " (%s, %s, 'f.csv', 'f.csv', 'completed')", [twin, USER_A])
    ambiguous = cli(env, "progress", "abcd12")
    assert ambiguous.returncode == 2 and "names 2 of your batches" in ambiguous.stderr
    assert cli(env, "logs", "abcd1234").returncode == 0
    missing = cli(env, "progress", "ffff0000")
    assert missing.returncode == 2 and "no batch of yours starts with 'ffff0000'" in missing.stderr
