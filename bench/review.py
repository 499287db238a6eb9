"""Deciding on images with the review page: keystrokes and seconds to decide 100 products' images (200 images)
in headless Chromium, with a = approve and r = reject moving on to the next undecided image, against a baseline
measured in the same run (opening the page).

    python bench/review.py [--products 100] [--rounds 3]

Prints keystrokes per image (1.0 is the floor: one key a decision) and seconds per image, and the page's open time
for a 2,000-row batch. Needs Chromium (Debian's package) and the dev extra's Playwright.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
from harness import fresh_database, server
from psycopg.rows import dict_row

USER = uuid.UUID("aaaaaaaa-0000-4000-8000-000000000001")


def make_batch(url: str, rows: int) -> uuid.UUID:
    """A completed batch of `rows` products with two images each (their files need not exist to be decided on)."""
    batch = uuid.uuid4()
    prefix = f"csv-images/{USER}/{batch}"
    with psycopg.connect(url, autocommit=True, row_factory=dict_row) as conn:
        conn.execute("INSERT INTO csv_batches (id, user_id, filename, original_filename, total_rows, status,"
                     " column_mapping) VALUES (%s, %s, 'bench.csv', 'bench.csv', %s, 'processing', %s)",
                     [batch, USER, rows, json.dumps({"fields": {"title": "title"}, "row_data_keys": {}})])
        conn.execute(
            "INSERT INTO csv_row_jobs (batch_id, row_number, row_data, status, completed_at, generated_images)"
            " SELECT %s, g, json_build_object('title', 'Product ' || g), 'completed', now(), jsonb_build_array("
            " jsonb_build_object('style', 'lifestyle_emotional', 'storage_path', %s || '/' || g || '/a.png'),"
            " jsonb_build_object('style', 'single_white_background', 'storage_path', %s || '/' || g || '/b.png'))"
            " FROM generate_series(1, %s) g", [batch, prefix, prefix, rows])
    return batch


@contextlib.contextmanager
def review(url: str, batch: uuid.UUID, home: Path) -> Iterator[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CSVJOBS_", "OPENAI_"))}
    env.update(CSVJOBS_HOME=str(home), CSVJOBS_DATABASE_URL=url, CSVJOBS_USER_ID=str(USER))
    proc = subprocess.Popen([sys.executable, "-m", "csvjobs", "review", str(batch), "--no-browser"], env=env,
                            text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        page_url = line.split(" at ", 1)[1].split()[0]
        time.sleep(1.0)  # uvicorn starting
        yield page_url
    finally:
        proc.terminate()
        proc.communicate(timeout=20)


def open_page(playwright: Any, chromium: str, page_url: str) -> tuple[Any, Any, float]:
    """(browser, page, seconds until the page shows its first row) for the review page in headless Chromium."""
    browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
    page = browser.new_page(viewport={"width": 1440, "height": 900})
    started = time.monotonic()
    page.goto(page_url)
    page.wait_for_selector("section.row")
    return browser, page, time.monotonic() - started


def decide(url: str, batch: uuid.UUID, home: Path, products: int, chromium: str) -> tuple[int, float, float]:
    """(keystrokes, seconds to decide every image, seconds to open the page)."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import sync_playwright

    with review(url, batch, home) as page_url, sync_playwright() as playwright:
        browser, page, opened = open_page(playwright, chromium, page_url)
        page.wait_for_function("document.body.dataset.live === 'yes'")
        keys = 0
        started = time.monotonic()
        focused = "document.activeElement && document.activeElement.matches('figure.image.unreviewed')"
        settled = f"{focused} || !document.querySelector('figure.image.unreviewed')"
        for n in range(2 * products):
            with contextlib.suppress(PlaywrightTimeout):  # the page moves the focus on by itself, in a moment
                page.wait_for_function(settled, timeout=2000)
            if not page.evaluate(focused):
                if page.locator("figure.image.unreviewed").count() == 0:  # this page is done: the next one
                    page.click("text=Next page")
                    keys += 1
                    page.wait_for_selector("figure.image.unreviewed")
                page.locator("figure.image.unreviewed").first.focus()
                keys += 1
            page.keyboard.press("a" if n % 7 else "r")
            keys += 1
            page.wait_for_function("n => Number(document.body.dataset.decided || 0) > n", arg=n)
            page.wait_for_function("Number(document.body.dataset.refreshed || 0) > 0")
        seconds = time.monotonic() - started
        browser.close()
    return keys, seconds, opened


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--products", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        sys.exit("Chromium is not installed (apt-get install chromium)")
    results = []
    with server() as admin, tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.rounds):
            with fresh_database(admin) as url:
                batch = make_batch(url, args.products)
                results.append(decide(url, batch, Path(tmp), args.products, chromium))
        with fresh_database(admin) as url:
            big = make_batch(url, 2000)
            with review(url, big, Path(tmp)) as page_url:
                from playwright.sync_api import sync_playwright

                with sync_playwright() as playwright:
                    browser, _page, big_open = open_page(playwright, chromium, page_url)
                    browser.close()
    images = 2 * args.products
    keys = statistics.median(r[0] for r in results)
    seconds = statistics.median(r[1] for r in results)
    opened = statistics.median(r[2] for r in results)
    print(f"{args.products} products ({images} images), median of {args.rounds} rounds")
    print(f"  keystrokes: {keys:.0f} ({keys / images:.2f} per image; 1.00 is one key a decision)")
    print(f"  seconds to decide them all: {seconds:.1f} ({seconds / images:.3f} per image; the page's own round trip)")
    print(f"  baseline, opening the {args.products}-product page: {opened:.2f}s; deciding = {seconds / opened:.1f}x")
    print(f"  a 2,000-row batch opens in {big_open:.2f}s (target: under 2 s)")


if __name__ == "__main__":
    main()
