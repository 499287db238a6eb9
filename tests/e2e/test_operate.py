"""Watching and steering: progress, logs, cleanup, workers, retry / cancel / pause / resume, export."""

from __future__ import annotations

import base64
import csv
import io
import json
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psycopg
import pytest
from PIL import Image
from support.helpers import USER_A, USER_B, batch_row, claim, cli, job_counts, make_batch, report
from support.pool import finish, start_pool
from support.shop_apis import pushable_batch

# These start worker pools, servers or CLI processes: run by CI, left out by `pytest -m "not slow"`.
pytestmark = pytest.mark.slow


@pytest.fixture
def user_env(pool_env: dict[str, str]) -> dict[str, str]:
    return dict(pool_env, CSVJOBS_USER_ID=str(USER_A))


def processed_batch(conn: psycopg.Connection, pool_env: dict[str, str], rows: int = 6) -> uuid.UUID:
    batch = make_batch(conn, rows)
    code, err = finish(start_pool(pool_env, "--until-done", "--concurrency", "2", "--max-dedicated", "0"))
    assert code == 0, err
    return batch


def test_progress_json_matches_the_database(user_env, conn) -> None:
    batch = processed_batch(conn, user_env)
    result = cli(user_env, "progress", str(batch), "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    row = batch_row(conn, batch)
    assert data["batch_id"] == str(batch) and data["status"] == "completed"
    for key in ("total_rows", "processed_rows", "successful_rows", "failed_rows"):
        assert data[key] == row[key]
    assert data["pending_rows"] == 0 and data["in_flight_rows"] == 0 and data["percentage"] == 100.0


def test_progress_watch_ends_by_itself_when_the_batch_completes(user_env, conn) -> None:
    batch = make_batch(conn, 20)
    watcher = subprocess.Popen([sys.executable, "-m", "csvjobs", "progress", str(batch), "--watch"],
                               env=user_env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    pool = start_pool(user_env, "--until-done", "--concurrency", "4", "--provider", "noop:0.1",
                      "--max-dedicated", "0")
    code, err = finish(pool)
    assert code == 0, err
    out, err = watcher.communicate(timeout=30)
    assert watcher.returncode == 0, err
    lines = [line for line in out.splitlines() if line.strip()]
    assert len(lines) >= 2
    assert "completed 20/20" in lines[-1]


def test_logs_filters_and_json(user_env, conn) -> None:
    batch = make_batch(conn, 3, max_retries=0)
    [job, *_] = claim(conn, "w", limit=3)
    report(conn, "w", [{"job_id": job["job_id"], "attempt": job["attempt"], "status": "failed",
                        "error_message": "bad image"}])
    errors = cli(user_env, "logs", str(batch), "--level", "ERROR", "--json")
    assert errors.returncode == 0, errors.stderr
    entries = [json.loads(line) for line in errors.stdout.splitlines()]
    assert [e["operation"] for e in entries] == ["row_failed"] and "bad image" in entries[0]["message"]
    by_row = cli(user_env, "logs", str(batch), "--row", str(job["row_number"]), "--json")
    assert {json.loads(line)["row_number"] for line in by_row.stdout.splitlines()} == {job["row_number"]}
    by_op = cli(user_env, "logs", "--operation", "batch_started", "--json", "--since", "10m")
    assert [json.loads(line)["operation"] for line in by_op.stdout.splitlines()] == ["batch_started"]
    assert cli(user_env, "logs", "--since", "5 fortnights").returncode == 2
    plain = cli(user_env, "logs", str(batch))
    assert "row_failed: row failed: bad image" in plain.stdout


def test_logs_follow_shows_a_row_written_by_another_connection(user_env, conn) -> None:
    batch = make_batch(conn, 1)
    conn.execute("INSERT INTO csv_processing_logs (batch_id, log_level, message, operation)"
                 " VALUES (%s, 'INFO', 'written before', 'test_marker')", [batch])
    follower = subprocess.Popen([sys.executable, "-m", "csvjobs", "logs", str(batch), "--follow", "--json"],
                                env=user_env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert follower.stdout is not None
        # The follower LISTENs before it prints what was there: once the earlier row is out, it is subscribed.
        assert "written before" in follower.stdout.readline()
        conn.execute("INSERT INTO csv_processing_logs (batch_id, log_level, message, operation)"
                     " VALUES (%s, 'WARN', 'written elsewhere', 'test_marker')", [batch])
        deadline = time.monotonic() + 15
        seen = ""
        while time.monotonic() < deadline and "written elsewhere" not in seen:
            seen += follower.stdout.readline()
        assert "written elsewhere" in seen
    finally:
        follower.kill()
        follower.communicate()


def test_cleanup_releases_a_killed_workers_rows_and_is_quiet_for_cron(user_env, conn) -> None:
    make_batch(conn, 6)
    conn.execute("SELECT * FROM update_csv_worker_heartbeat('ghost', 'processing', 2)")
    claim(conn, "ghost", limit=2)
    conn.execute("UPDATE csv_processing_workers SET last_heartbeat = now() - interval '10 minutes'")
    results = [subprocess.Popen([sys.executable, "-m", "csvjobs", "cleanup", "--json"], env=user_env, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]
    outputs = [p.communicate(timeout=60) for p in results]
    assert all(p.returncode == 0 for p in results), outputs
    reports = [json.loads(out) for out, _ in outputs]
    assert sum(r["jobs_released"] for r in reports) == 2 and sum(r["workers_stopped"] for r in reports) == 1
    again = cli(user_env, "cleanup")
    assert again.returncode == 0 and again.stdout.strip() == (
        "cleanup: 0 worker(s) stopped, 0 job(s) released, 0 job(s) failed") and again.stderr == ""


def test_workers_shows_health_and_marks_stale_ones(user_env, conn) -> None:
    conn.execute("SELECT * FROM update_csv_worker_heartbeat('fresh-1', 'processing', 1, 5)")
    conn.execute("SELECT * FROM update_csv_worker_heartbeat('silent-2', 'idle', 0, 9)")
    conn.execute("UPDATE csv_processing_workers SET last_heartbeat = now() - interval '2 minutes'"
                 " WHERE instance_id = 'silent-2'")
    data = json.loads(cli(user_env, "workers", "--json").stdout)
    stale = {w["instance_id"]: w["stale"] for w in data}
    assert stale == {"fresh-1": False, "silent-2": True}


def test_retry_pause_resume_and_cancel_change_what_workers_claim(user_env, conn) -> None:
    batch = make_batch(conn, 4, max_retries=0)
    jobs = claim(conn, "w", limit=2)
    report(conn, "w", [{"job_id": j["job_id"], "attempt": j["attempt"], "status": "failed",
                        "error_message": "boom"} for j in jobs])
    assert cli(user_env, "pause", str(batch)).returncode == 0
    assert claim(conn, "w2", limit=10) == []
    assert cli(user_env, "resume", str(batch)).returncode == 0
    assert len(claim(conn, "w2", limit=1)) == 1
    result = cli(user_env, "retry", str(batch), "--rows", str(jobs[0]["row_number"]))
    assert result.returncode == 0 and "1 failed row(s)" in result.stdout
    assert job_counts(conn, batch) == {"pending": 2, "claimed": 1, "failed": 1}
    row = batch_row(conn, batch)
    assert (row["failed_rows"], row["processed_rows"]) == (1, 1)
    assert cli(user_env, "cancel", str(batch)).returncode == 0
    assert claim(conn, "w3", limit=10) == []
    assert batch_row(conn, batch)["status"] == "cancelled"
    twice = cli(user_env, "cancel", str(batch))
    assert twice.returncode == 2 and "already cancelled" in twice.stderr


def test_another_users_batch_is_no_such_batch(user_env, conn) -> None:
    other = make_batch(conn, 2, user_id=USER_B)
    for args in (["progress", str(other), "--json"], ["logs", str(other)], ["export", str(other)],
                 ["retry", str(other)], ["cancel", str(other)], ["pause", str(other)]):
        result = cli(user_env, *args)
        assert result.returncode == 2, (args, result.stderr)
        assert "no such batch" in result.stderr and "Traceback" not in result.stderr
    assert batch_row(conn, other)["status"] == "queued"


def test_export_has_every_row_and_neutralises_formulas(user_env, conn, home: Path, tmp_path: Path) -> None:
    source = tmp_path / "evil.csv"
    source.write_text("title,description,product_type\n=HYPERLINK(\"http://x\"),+1+2,@SUM(A1)\nMug,-3,Cup\n"
                      "Bowl,Plain,Kitchen\n")
    up = cli(user_env, "upload", str(source), "--json")
    assert up.returncode == 0, up.stderr
    batch = json.loads(up.stdout)["batch_id"]
    pending = [json.loads(line) for line in cli(user_env, "export", batch, "--format", "jsonl").stdout.splitlines()]
    assert pending[2]["status"] == "pending" and pending[2]["trigger_text"] == "Kitchen Plain"
    code, err = finish(start_pool(user_env, "--until-done", "--concurrency", "2", "--max-dedicated", "0"))
    assert code == 0, err
    out_csv = tmp_path / "out.csv"
    assert cli(user_env, "export", batch, "-o", str(out_csv)).returncode == 0
    rows = list(csv.DictReader(io.StringIO(out_csv.read_text())))
    assert len(rows) == 3
    assert rows[0]["title"] == "'=HYPERLINK(\"http://x\")" and rows[0]["description"] == "'+1+2"
    assert rows[0]["product_type"] == "'@SUM(A1)" and rows[1]["description"] == "'-3"
    assert all(r["status"] == "completed" and r["lifestyle_emotional_image"].endswith(".png") for r in rows)
    jsonl = cli(user_env, "export", batch, "--format", "jsonl")
    records = [json.loads(line) for line in jsonl.stdout.splitlines()]
    assert [r["row_number"] for r in records] == [1, 2, 3] and records[2]["columns"]["title"] == "Bowl"
    assert cli(user_env, "export", batch, "--format", "pdf").returncode == 2


def test_html_gallery_renders_in_headless_chromium(user_env, conn, tmp_path: Path) -> None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("Chromium is not installed (apt-get install chromium)")
    batch = make_batch(conn, 3, max_retries=0)
    code, err = finish(start_pool(user_env, "--until-done", "--concurrency", "2", "--max-dedicated", "0",
                                  "--provider", "support.worker_test_providers:exploding"))
    assert code == 0, err
    conn.execute("UPDATE csv_row_jobs SET status = 'pending', retry_count = 0 WHERE row_number = 1"
                 " AND batch_id = %s", [batch])
    conn.execute("UPDATE csv_batches SET failed_rows = failed_rows - 1, processed_rows = processed_rows - 1,"
                 " status = 'processing' WHERE id = %s", [batch])
    code, err = finish(start_pool(user_env, "--until-done", "--concurrency", "2", "--max-dedicated", "0"))
    assert code == 0, err
    page = tmp_path / "gallery.html"
    assert cli(user_env, "export", str(batch), "--format", "html", "-o", str(page)).returncode == 0
    shot = tmp_path / "shot.png"
    dom = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", page.as_uri()],
                         capture_output=True, text=True, timeout=60)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert dom.stdout.count('<section class="product') == 3
    assert dom.stdout.count("<img ") == 2 and "data:image/webp;base64," in dom.stdout
    assert "failed: content policy violation on row 2" in dom.stdout
    subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", f"--screenshot={shot}",
                    "--window-size=1000,1400", page.as_uri()], capture_output=True, timeout=60, check=True)
    assert shot.stat().st_size > 5000


def test_the_gallery_embeds_each_image_once_as_a_small_thumbnail(user_env, conn, home: Path, tmp_path: Path) -> None:
    """Look-alike rows share their images: the gallery holds each distinct image's bytes once, as a thumbnail no
    larger than 512 px, and every use of it shows in Chromium."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    rows = [{"title": f"Lamp {n}"} for n in range(1, 9)]
    batch = pushable_batch(conn, home, USER_A, ["title"], rows, preset="plain", title="title", side=1536)
    # Rows 2-4 are look-alike variants of row 1: they show row 1's images.
    with conn.transaction():
        conn.execute("UPDATE csv_row_jobs j SET generated_images = o.generated_images FROM csv_row_jobs o"
                     " WHERE j.batch_id = %s AND o.batch_id = j.batch_id AND o.row_number = 1"
                     " AND j.row_number BETWEEN 2 AND 4", [batch])
    page = tmp_path / "gallery.html"
    result = cli(user_env, "export", str(batch), "--format", "html", "-o", str(page))
    assert result.returncode == 0, result.stderr
    text = page.read_text()
    embedded = re.findall(r'src="data:image/webp;base64,([^"]+)"', text)
    assert len(embedded) == 2 * 5 and text.count("data-same=") == 2 * 3  # 5 distinct rows' images, 3 reusing
    originals = sum(p.stat().st_size for p in (home / "storage").rglob("*.png"))
    assert len(text.encode()) < originals / 10, (len(text.encode()), originals)
    for data in embedded[:2]:
        with Image.open(io.BytesIO(base64.b64decode(data))) as thumb:
            assert max(thumb.size) <= 512
    if browser is None:
        pytest.skip("Chromium is not installed (apt-get install chromium)")
    dom = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", page.as_uri()],
                         capture_output=True, text=True, timeout=60)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert dom.stdout.count('src="data:image/webp;base64,') == 2 * 8  # every use shows its image


def test_export_reads_results_written_in_the_documents_shapes(user_env, conn, tmp_path: Path) -> None:
    """A worker written from the single-call contract stores {"prompts": [...]}, {"images": [{url, model}]} and
    {"tags": [...]}; every export format reads them."""
    batch = make_batch(conn, 2)
    conn.execute("SET ROLE service_role")
    for _ in range(2):
        [job] = conn.execute("SELECT * FROM claim_next_csv_row_job('worker-instance-123')").fetchall()
        conn.execute(
            "SELECT update_csv_row_job_result(%s, 'completed', 'Generated trigger text', %s, %s, %s, 45.2)",
            [job["job_id"], json.dumps({"prompts": ["prompt1", "prompt2"]}),
             json.dumps({"images": [{"url": "https://cdn.example/a.png", "model": "gpt-image-1"}]}),
             json.dumps({"tags": ["tag1", "tag2"]})])
    conn.execute("RESET ROLE")
    out_csv = tmp_path / "out.csv"
    result = cli(user_env, "export", str(batch), "-o", str(out_csv))
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(io.StringIO(out_csv.read_text())))
    assert [r["lifestyle_emotional_prompt"] for r in rows] == ["prompt1", "prompt1"]
    assert [r["single_white_background_prompt"] for r in rows] == ["prompt2", "prompt2"]
    assert rows[0]["lifestyle_emotional_image"] == "https://cdn.example/a.png"
    assert rows[0]["single_white_background_image"] == "" and rows[0]["tags"] == "tag1, tag2"
    jsonl = cli(user_env, "export", str(batch), "--format", "jsonl")
    assert jsonl.returncode == 0, jsonl.stderr
    records = [json.loads(line) for line in jsonl.stdout.splitlines()]
    assert records[1]["tags"] == ["tag1", "tag2"] and records[1]["trigger_text"] == "Generated trigger text"
    page = tmp_path / "gallery.html"
    result = cli(user_env, "export", str(batch), "--format", "html", "-o", str(page))
    assert result.returncode == 0, result.stderr
    html = page.read_text()
    assert html.count('src="https://cdn.example/a.png"') == 2 and "<span>tag2</span>" in html
    assert "prompt2" in html


def test_logs_of_one_moment_come_in_the_order_they_were_written(user_env, conn) -> None:
    batch = make_batch(conn, 1)
    with conn.transaction():  # one transaction: every line has the same created_at
        for n in range(12):
            conn.execute("INSERT INTO csv_processing_logs (batch_id, log_level, message, operation)"
                         " VALUES (%s, 'INFO', %s, 'test_marker')", [batch, f"step {n}"])
    shown = cli(user_env, "logs", str(batch), "--operation", "test_marker", "--json")
    assert shown.returncode == 0, shown.stderr
    entries = [json.loads(line) for line in shown.stdout.splitlines()]
    assert [e["message"] for e in entries] == [f"step {n}" for n in range(12)]
    assert len({e["created_at"] for e in entries}) == 1
    processed = processed_batch(conn, user_env, rows=2)
    ops = [json.loads(line)["operation"] for line in
           cli(user_env, "logs", str(processed), "--row", "1", "--json").stdout.splitlines()]
    # A row's steps were logged before its result, and that is the order shown.
    assert ops[-1] == "row_completed" and "image_stored" in ops and ops.index("image_stored") < ops.index(
        "row_completed")


def test_export_never_writes_through_a_planted_link(run_cli, conn, tmp_path, monkeypatch) -> None:
    """A symlink planted where a predictable temporary name would be (.NAME.PID.tmp, the old scheme) or at any
    name in the folder is never followed: the export writes a new file beside the target and renames it."""
    monkeypatch.setenv("CSVJOBS_USER_ID", str(USER_A))
    batch = make_batch(conn, 2)
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    (out_dir / f".rows.csv.{os.getpid()}.tmp").symlink_to(victim)
    result = run_cli("export", str(batch), "-o", str(out_dir / "rows.csv"))
    assert result.code == 0, result.stderr
    assert victim.read_text() == "keep me"
    assert (out_dir / "rows.csv").read_text().startswith("title,country,description,row_number")
    assert sorted(p.name for p in out_dir.iterdir()) == [f".rows.csv.{os.getpid()}.tmp", "rows.csv"]
