"""The review page in headless Chromium (Debian's package, driven by Playwright): open it with the printed URL,
approve and reject with the keyboard, redo an image with a note and see the new version appear while a worker
runs, checking the database after each action; and the refusals: no secret, a foreign Host, a foreign Origin,
another user's batch, a used launch URL, cookies sent to another local port, slow headers, malformed changes."""

from __future__ import annotations

import json
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.helpers import REVIEW_OF_ROW, USER_A, USER_B, cli
from support.pool import finish, start_pool
from support.review import review_server, wait_until_listening

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
    with review_server(env, str(batch)) as url:
        yield url


def redeem(url: str) -> tuple[str, str]:
    """Open the launch URL as the browser does: (base URL, the session secret the page gets)."""
    with urllib.request.urlopen(url, timeout=10) as response:
        page = response.read().decode()
    secret = re.search(r'name="csvjobs-session" content="([^"]*)"', page)
    assert secret and secret.group(1), "the launch URL gave no session secret"
    return url.split("/?", 1)[0], secret.group(1)


def _status(request: urllib.request.Request) -> int:
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def test_the_page_refuses_requests_without_the_secret_host_or_origin(review: str) -> None:
    base, token = redeem(review)
    port = base.rsplit(":", 1)[1]
    secret = {"X-Review-Token": token}
    assert _status(urllib.request.Request(base + "/api/rows")) == 403
    assert _status(urllib.request.Request(base + "/api/rows", headers={"X-Review-Token": "x" * len(token)})) == 403
    assert _status(urllib.request.Request(base + "/api/rows?token=" + token)) == 403  # never in a URL
    assert _status(urllib.request.Request(base + "/api/rows", headers=secret)) == 200
    foreign = secret | {"Host": f"attacker.example:{port}"}
    assert _status(urllib.request.Request(base + "/api/rows", headers=foreign)) == 403
    body = json.dumps({"rows": [1], "style": "lifestyle_emotional", "action": "approve"}).encode()
    for origin in (None, "http://attacker.example", f"http://evil.test:{port}"):
        headers = {"Content-Type": "application/json"} | secret | ({"Origin": origin} if origin else {})
        request = urllib.request.Request(base + "/api/change", data=body, headers=headers)
        assert _status(request) == 403, origin
    same = {"Content-Type": "application/json", "Origin": base} | secret
    assert _status(urllib.request.Request(base + "/api/change", data=body, headers=same)) == 200
    # Malformed changes are the client's fault (4xx), never a 500.
    for bad in (b'{"rows": [1e999], "action": "approve"}', b'{"rows": [-1], "action": "approve"}',
                b'{"rows": "1", "action": "approve"}', b"[1]", b"not json", b'{"rows": [1], "style": 7}'):
        assert _status(urllib.request.Request(base + "/api/change", data=bad, headers=same)) == 400, bad
    # An image needs the grant for exactly its path.
    rows = json.loads(urllib.request.urlopen(urllib.request.Request(base + "/api/rows", headers=secret)).read())
    path = rows[0]["images"][0]["path"]
    page = urllib.request.urlopen(urllib.request.Request(base + "/api/page", headers=secret)).read().decode()
    grant = re.search(r'/image\?path=[^"&]*&amp;sig=([0-9a-f]+)', page)
    assert grant is not None
    assert _status(urllib.request.Request(base + "/image?path=" + urllib.parse.quote(path))) == 403
    signed = [m.replace("&amp;", "&") for m in re.findall(r'src="(/image\?[^"]+)"', page)]
    assert signed and all(_status(urllib.request.Request(base + m)) == 200 for m in signed)
    other = signed[0].split("&sig=")[0] + "&sig=" + "0" * 32
    assert _status(urllib.request.Request(base + other)) == 403


def test_the_launch_url_works_once(review: str) -> None:
    _base, _secret = redeem(review)
    with pytest.raises(urllib.error.HTTPError) as again:
        urllib.request.urlopen(review, timeout=10)
    assert again.value.code == 403
    assert re.search(r'name="csvjobs-session" content=""', again.value.read().decode())


def test_slow_headers_are_cut_off_and_streams_share_one_listen_connection(review: str, conn) -> None:
    redeemed_page = urllib.request.urlopen(review, timeout=10).read().decode()
    base = review.split("/?", 1)[0]
    token = re.search(r'name="csvjobs-session" content="([^"]+)"', redeemed_page).group(1)  # type: ignore[union-attr]
    host, port = base.removeprefix("http://").split(":")
    slow = []
    for _ in range(40):  # a slowloris: connections that never finish their headers
        sock = socket.create_connection((host, int(port)), timeout=30)
        sock.sendall(b"GET /api/rows HTTP/1.1\r\nHost: " + f"{host}:{port}".encode() + b"\r\nX-Slow: ")
        slow.append(sock)
    streams = []
    shell = urllib.request.urlopen(base + "/").read().decode()
    assert 'data-events=""' in shell  # the shell anyone may fetch grants nothing
    grant = re.search(r'data-events="([0-9a-f]+)"', redeemed_page)
    assert grant is not None
    for _ in range(4):
        stream = urllib.request.urlopen(base + "/events?sig=" + grant.group(1), timeout=30)
        assert stream.readline().startswith(b"event: ready")
        streams.append(stream)
    listening = conn.execute("SELECT count(*) AS n FROM pg_stat_activity"
                             " WHERE application_name = 'csvjobs-review-listen' AND datname = current_database()"
                             ).fetchone()
    assert listening == {"n": 1}
    started = time.monotonic()
    for sock in slow:
        assert sock.recv(1024) in (b"", b"HTTP/1.1 408 Request Timeout")  # closed by the server
        sock.close()
    assert time.monotonic() - started < 30
    assert _status(urllib.request.Request(base + "/api/rows", headers={"X-Review-Token": token})) == 200
    for stream in streams:
        stream.close()


def test_the_shell_shows_nothing_of_the_batch_and_asks_nothing_of_the_database(review: str, conn) -> None:
    base = review.split("/?", 1)[0]
    before = conn.execute("SELECT count(*) AS n FROM pg_stat_activity WHERE application_name = 'csvjobs-review'"
                          " AND datname = current_database()").fetchone()["n"]
    for _ in range(20):
        shell = urllib.request.urlopen(base + "/", timeout=10).read().decode()
        assert "p.csv" not in shell and "row(s)" not in shell and "<title>Review</title>" in shell
    # (the page's own connections: none opened for the shell; a connection a request left would show here)
    after = conn.execute("SELECT count(*) AS n FROM pg_stat_activity WHERE application_name = 'csvjobs-review'"
                         " AND datname = current_database()").fetchone()["n"]
    assert after <= before
    # The heading arrives with the rows, through the guarded API.
    base, token = redeem(review)
    rows = urllib.request.urlopen(urllib.request.Request(base + "/api/page", headers={"X-Review-Token": token}),
                                  timeout=10).read().decode()
    assert 'data-title="Review p.csv"' in rows and "3 row(s)" in rows


def test_two_hundred_half_open_sockets_do_not_lock_the_reviewer_out(review: str) -> None:
    host, port = review.split("/?", 1)[0].removeprefix("http://").split(":")
    stop = threading.Event()
    opened = [0]

    def half_open() -> socket.socket:
        sock = socket.create_connection((host, int(port)), timeout=30)
        sock.sendall(b"GET /api/rows HTTP/1.1\r\nHost: " + f"{host}:{port}".encode() + b"\r\nX-Slow: ")
        opened[0] += 1
        return sock

    def hold() -> None:  # 200 connections that never finish their headers, reopened as the server closes them
        socks = [half_open() for _ in range(200)]
        ready.set()
        while not stop.is_set():
            for i, sock in enumerate(socks):
                sock.setblocking(False)
                try:
                    sock.recv(1024)  # an answer (408) or the end: the server let it go
                    closed = True
                except BlockingIOError:
                    closed = False
                except OSError:
                    closed = True
                if closed:
                    sock.close()
                    socks[i] = half_open()
            stop.wait(0.2)
        for sock in socks:
            sock.close()

    ready = threading.Event()
    holder = threading.Thread(target=hold, daemon=True)
    holder.start()
    try:
        assert ready.wait(30)

        def timed(request: urllib.request.Request | str) -> float:
            started = time.monotonic()
            with urllib.request.urlopen(request, timeout=10) as response:
                assert response.status == 200
                response.read()
            return time.monotonic() - started

        started = time.monotonic()
        base, secret = redeem(review)  # the launch URL
        assert time.monotonic() - started < 2.0
        for _ in range(3):  # across the server's closing of the slow ones (after 10 s) and their reopening
            assert timed(urllib.request.Request(base + "/api/page", headers={"X-Review-Token": secret})) < 2.0
            assert timed(base + "/") < 2.0
            stop.wait(5)
        assert opened[0] > 200  # the server closed slow ones, and they were opened again
    finally:
        stop.set()
        holder.join(timeout=30)


def test_another_users_batch_is_refused(env: dict[str, str], batch: uuid.UUID) -> None:
    result = cli(dict(env, CSVJOBS_USER_ID=str(USER_B)), "review", str(batch), "--no-browser")
    assert result.returncode == 2 and "no such batch" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (apt-get install chromium)")
def test_review_with_the_keyboard_and_redo_while_a_worker_runs(env, batch, review: str, conn) -> None:
    from playwright.sync_api import sync_playwright

    def review_of(row: int) -> dict:
        found = conn.execute(f"SELECT status, checkpoint, {REVIEW_OF_ROW}"
                             " FROM csv_row_jobs WHERE batch_id = %s"
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
        cookies: list[str] = []
        other = CookieCatcher(cookies)  # another local server the browser visits
        page.goto(review)
        page.wait_for_selector("section.row")
        assert "code" not in page.url  # the launch code is spent and gone from the address bar
        assert page.locator("section.row").count() == 3
        assert browser.contexts[0].cookies() == []  # nothing another local port would receive
        page2 = browser.new_page()
        page2.goto(other.url)
        page2.close()
        other.stop()
        base = review.split("/?", 1)[0]
        for cookie in cookies:  # whatever the browser sent there grants nothing here
            assert _status(urllib.request.Request(base + "/api/rows", headers={"Cookie": cookie})) == 403
        page.wait_for_function("document.body.dataset.live === 'yes'")
        page.keyboard.press("j")  # row 1, lifestyle
        page.keyboard.press("a")
        wait(lambda: (review_of(1)["review"] or {}).get("lifestyle_emotional", {}).get("state") == "approved",
             "row 1's lifestyle image approved")
        page.wait_for_selector('.row[data-row="1"] figure.approved[data-style="lifestyle_emotional"]')
        # A decision moves the focus on to the next undecided image: row 1's white one.
        page.wait_for_function("document.activeElement && document.activeElement.dataset.style === "
                               "'single_white_background'"
                               " && document.activeElement.closest('.row').dataset.row === '1'")
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
        versions = conn.execute("SELECT row_number, style, replaced_note FROM csv_image_versions"
                                " WHERE batch_id = %s", [batch]).fetchall()
        assert versions == [{"row_number": 2, "style": "lifestyle_emotional",
                             "replaced_note": "warmer light, no people"}]
        # The earlier version can be seen and brought back; the image it replaces is kept in its turn.
        page.locator('.row[data-row="2"] details.versions summary').click()
        page.locator('.row[data-row="2"] button[data-restore="lifestyle_emotional:1"]').click()

        def current_path() -> str:
            images = review_of(2)
            row = conn.execute("SELECT generated_images FROM csv_row_jobs WHERE batch_id = %s AND row_number = 2",
                               [batch]).fetchone()
            assert images is not None and row is not None
            return next(i["storage_path"] for i in row["generated_images"] if i["style"] == "lifestyle_emotional")

        wait(lambda: "-r" not in current_path(), "version 1 restored")
        kept = conn.execute("SELECT version, image ->> 'storage_path' AS path FROM csv_image_versions"
                            " WHERE batch_id = %s ORDER BY version", [batch]).fetchall()
        assert [k["version"] for k in kept] == [1, 2] and "-r" in kept[1]["path"]
        browser.close()


class CookieCatcher:
    """A second local HTTP server that records the Cookie headers a browser sends it."""

    def __init__(self, cookies: list[str]) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.headers.get("Cookie"):
                    cookies.append(self.headers["Cookie"])
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.end_headers()
                self.wfile.write(b"<html><body>another local site</body></html>")

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


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
        wait_until_listening(url)
        base = url.split("/?", 1)[0]
        page = urllib.request.urlopen(url, timeout=10).read().decode()
        grant = re.search(r'data-events="([0-9a-f]+)"', page)
        assert grant is not None
        stream = urllib.request.urlopen(base + "/events?sig=" + grant.group(1), timeout=10)  # the page's stream
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
