"""The review page in headless Chromium (Debian's package, driven by Playwright): open it with the printed URL,
approve and reject with the keyboard, redo an image with a note and see the new version appear while a worker
runs, checking the database after each action; and the refusals: no token, a foreign Host, a foreign Origin,
another user's batch."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import USER_A, USER_B, cli
from test_worker_pool import finish, start_pool

pytestmark = pytest.mark.slow
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture
def env(pool_env: dict[str, str]) -> dict[str, str]:
    return dict(pool_env, CSVJOBS_USER_ID=str(USER_A))


@pytest.fixture
def batch(env: dict[str, str], conn, tmp_path: Path) -> uuid.UUID:
    source = tmp_path / "p.csv"
    source.write_text("title,description\nMug,glazed mug\nBowl,salad bowl\nVase,tall vase\n")
    up = cli(env, "upload", str(source), "--json")
    assert up.returncode == 0, up.stderr
    code, err = finish(start_pool(env, "--until-done", "--max-dedicated", "0", "--concurrency", "3"))
    assert code == 0, err
    return uuid.UUID(json.loads(up.stdout)["batch_id"])


@pytest.fixture
def review(env: dict[str, str], batch: uuid.UUID) -> Iterator[str]:
    proc = subprocess.Popen([sys.executable, "-m", "csvjobs", "review", str(batch), "--no-browser"], env=env,
                            text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "http://127.0.0.1:" in line, line + (proc.stderr.read() if proc.stderr else "")
        url = line.split(" at ", 1)[1].split()[0]
        deadline = time.monotonic() + 20
        while True:  # until uvicorn listens
            try:
                urllib.request.urlopen(url.split("?")[0], timeout=2)
            except urllib.error.HTTPError:
                break
            except OSError:
                assert time.monotonic() < deadline, "the review server did not start"
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.communicate(timeout=20)


def _status(request: urllib.request.Request) -> int:
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def test_the_page_refuses_requests_without_the_token_host_or_origin(review: str) -> None:
    base, token = review.split("/?token=")
    port = base.rsplit(":", 1)[1]
    assert _status(urllib.request.Request(base + "/")) == 403
    assert _status(urllib.request.Request(base + "/api/rows?token=" + "x" * len(token))) == 403
    assert _status(urllib.request.Request(base + "/api/rows?token=" + token)) == 200
    assert _status(urllib.request.Request(base + "/api/rows?token=" + token,
                                          headers={"Host": f"attacker.example:{port}"})) == 403
    body = json.dumps({"rows": [1], "style": "lifestyle_emotional", "action": "approve"}).encode()
    for origin in (None, "http://attacker.example", f"http://evil.test:{port}"):
        headers = {"Content-Type": "application/json"} | ({"Origin": origin} if origin else {})
        request = urllib.request.Request(base + "/api/change?token=" + token, data=body, headers=headers)
        assert _status(request) == 403, origin
    same = urllib.request.Request(base + "/api/change?token=" + token, data=body,
                                  headers={"Content-Type": "application/json", "Origin": base})
    assert _status(same) == 200


def test_another_users_batch_is_refused(env: dict[str, str], batch: uuid.UUID) -> None:
    result = cli(dict(env, CSVJOBS_USER_ID=str(USER_B)), "review", str(batch), "--no-browser")
    assert result.returncode == 2 and "no such batch" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (apt-get install chromium)")
def test_review_with_the_keyboard_and_redo_while_a_worker_runs(env, batch, review: str, conn) -> None:
    from playwright.sync_api import sync_playwright

    def review_of(row: int) -> dict:
        found = conn.execute("SELECT review, status, checkpoint FROM csv_row_jobs WHERE batch_id = %s"
                             " AND row_number = %s", [batch, row]).fetchone()
        assert found is not None
        return found

    def wait(predicate, what: str) -> None:
        deadline = time.monotonic() + 30
        while not predicate():
            assert time.monotonic() < deadline, what
            time.sleep(0.1)

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page()
        page.goto(review)
        assert "token" not in page.url  # swapped for a cookie
        assert page.locator("section.row").count() == 3
        page.wait_for_function("document.body.dataset.live === 'yes'")
        page.keyboard.press("j")  # row 1, lifestyle
        page.keyboard.press("a")
        wait(lambda: (review_of(1)["review"] or {}).get("lifestyle_emotional", {}).get("state") == "approved",
             "row 1's lifestyle image approved")
        page.wait_for_selector('.row[data-row="1"] figure.approved[data-style="lifestyle_emotional"]')
        page.keyboard.press("j")  # row 1, white
        page.keyboard.press("r")
        wait(lambda: (review_of(1)["review"] or {}).get("single_white_background", {}).get("state") == "rejected",
             "row 1's white image rejected")
        # The page redraws after the change and puts the focus back on row 1's white image: let it, before
        # moving the focus on (else the redraw can take it back just before the key press).
        page.wait_for_selector('.row[data-row="1"] figure.rejected[data-style="single_white_background"]')

        page.on("dialog", lambda dialog: dialog.accept("warmer light, no people"))
        page.locator('.row[data-row="2"] figure[data-style="lifestyle_emotional"]').focus()
        page.keyboard.press("g")
        wait(lambda: review_of(2)["status"] == "pending", "row 2 queued for a new image")
        assert review_of(2)["checkpoint"]["regenerate"]["lifestyle_emotional"]["note"] == "warmer light, no people"

        old = page.locator('.row[data-row="2"] figure[data-style="lifestyle_emotional"] img').get_attribute("src")
        refreshed = int(page.evaluate("document.body.dataset.refreshed || '0'"))
        code, err = finish(start_pool(env, "--until-done", "--max-dedicated", "0"))
        assert code == 0, err
        # No reload: the new version arrives through the server-sent events.
        page.wait_for_function(
            "old => { const img = document.querySelector("
            "'.row[data-row=\"2\"] figure[data-style=\"lifestyle_emotional\"] img');"
            " return img && img.getAttribute('src') !== old; }", arg=old, timeout=30_000)
        assert int(page.evaluate("document.body.dataset.refreshed")) > refreshed
        new = page.locator('.row[data-row="2"] figure[data-style="lifestyle_emotional"] img').get_attribute("src")
        assert new is not None and "-r" in new
        assert "1 earlier version" in page.locator('.row[data-row="2"] h2').inner_text()
        browser.close()
    versions = conn.execute("SELECT row_number, style, replaced_note FROM csv_image_versions WHERE batch_id = %s",
                            [batch]).fetchall()
    assert versions == [{"row_number": 2, "style": "lifestyle_emotional", "replaced_note": "warmer light, no people"}]


def test_a_port_in_use_is_one_red_line(env: dict[str, str], batch: uuid.UUID) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = cli(env, "review", str(batch), "--no-browser", "--port", str(port))
    assert result.returncode == 2 and f"--port {port}" in result.stderr and "Traceback" not in result.stderr


def test_stopping_the_page_does_not_wait_for_an_open_browser(env: dict[str, str], batch: uuid.UUID) -> None:
    """An open page holds its event stream; Ctrl-C must still stop the server promptly."""
    proc = subprocess.Popen([sys.executable, "-m", "csvjobs", "review", str(batch), "--no-browser"], env=env,
                            text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().split(" at ", 1)[1].split()[0]
        base, token = url.split("/?token=")
        deadline = time.monotonic() + 20
        while True:
            try:
                stream = urllib.request.urlopen(base + "/events?token=" + token, timeout=10)  # the page's stream
                break
            except OSError:
                assert time.monotonic() < deadline, "the review server did not start"
                time.sleep(0.1)
        assert stream.readline().startswith(b"event: ready")
        started = time.monotonic()
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
        assert time.monotonic() - started < 8, "Ctrl-C waited for the open page"
        stream.close()
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
