"""Decisions at typing speed on the review page, in headless Chromium: a reviewer types a and r faster than the
server answers (40 ms a key, while the database makes each answer wait up to 300 ms), with an undo in the
middle; every decision lands as typed, in order, on the image it was typed on: the database's review states equal
those a simulation of the keys gives, and the page's own."""

from __future__ import annotations

import random
import shutil
import threading
import uuid

import psycopg
import pytest
from support.helpers import REVIEW_OF_ROW, completed_batch
from support.review import review_server

pytestmark = pytest.mark.slow
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
PRODUCTS = 48  # one page: 96 images
STATES = {"a": "approved", "r": "rejected"}


class SlowAnswers:
    """Holds the batch row's lock 300 ms at a time, over and over: every decision (which takes that lock) waits."""

    def __init__(self, database_url: str, batch: uuid.UUID) -> None:
        self.url, self.batch = database_url, batch
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        with psycopg.connect(self.url) as conn:
            while not self.stop.is_set():
                with conn.transaction():
                    conn.execute("SELECT 1 FROM csv_batches WHERE id = %s FOR UPDATE", [self.batch])
                    self.stop.wait(0.3)
                self.stop.wait(0.005)

    def __enter__(self) -> SlowAnswers:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()


def simulate(order: list[str], keys: list[str]) -> dict[str, str]:
    """What the keys decide: a / r on the focused image, then the focus on the next undecided one (wrapping);
    u takes the last decision back and focuses its image."""
    state = dict.fromkeys(order, "unreviewed")
    focus = order[0]
    undo: list[tuple[str, str]] = []
    for key in keys:
        if key == "u":
            if undo:
                focus, state[focus] = undo[-1][0], undo.pop()[1]
            continue
        undo.append((focus, state[focus]))
        state[focus] = STATES[key]
        start = order.index(focus)
        for step in range(1, len(order) + 1):
            candidate = order[(start + step) % len(order)]
            if candidate != focus and state[candidate] == "unreviewed":
                focus = candidate
                break
    return state


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (apt-get install chromium)")
def test_decisions_typed_faster_than_the_server_answers_all_land(pool_env, conn, database_url) -> None:
    from playwright.sync_api import sync_playwright
    from support.helpers import USER_A

    batch = completed_batch(conn, PRODUCTS)
    env = dict(pool_env, CSVJOBS_USER_ID=str(USER_A))
    rng = random.Random(35)
    keys = [rng.choice("aaar") for _ in range(2 * PRODUCTS + 1)]
    keys.insert(50, "u")  # an undo in the middle: the 50th decision is taken back and typed again
    with review_server(env, str(batch)) as url, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1440, "height": 900})
        page.goto(url)
        page.wait_for_selector("section.row")
        page.wait_for_function("document.body.dataset.live === 'yes'")
        order = page.evaluate("Array.from(document.querySelectorAll('figure.image')).map("
                              "f => f.closest('.row').dataset.row + ':' + f.dataset.style)")
        assert len(order) == 2 * PRODUCTS
        page.locator("figure.image").first.focus()
        with SlowAnswers(database_url, batch):
            for key in keys:
                page.keyboard.press(key)
                page.wait_for_timeout(40)
            page.wait_for_function("document.body.dataset.unsent === '0'", timeout=90_000)
        shown = page.evaluate("Object.fromEntries(Array.from(document.querySelectorAll('figure.image')).map("
                              "f => [f.closest('.row').dataset.row + ':' + f.dataset.style, f.dataset.review]))")
        browser.close()
    expected = simulate(order, keys)
    stored = {}
    for row in conn.execute(f"SELECT row_number, {REVIEW_OF_ROW}"
                            " FROM csv_row_jobs WHERE batch_id = %s", [batch]).fetchall():
        for style in ("lifestyle_emotional", "single_white_background"):
            stored[f"{row['row_number']}:{style}"] = ((row["review"] or {}).get(style) or {}).get("state",
                                                                                                   "unreviewed")
    assert sum(1 for v in expected.values() if v != "unreviewed") == 2 * PRODUCTS
    assert stored == expected
    assert shown == expected
