"""`csvjobs work`: the multiprocess pool against a real PostgreSQL, run as a user would run it."""

from __future__ import annotations

import os
import signal
import time
import uuid

import psycopg
import pytest
from support.helpers import batch_row, job_counts, make_batch
from support.pool import finish, start_pool, wait_for

# These start worker pools, servers or CLI processes: run by CI, left out by `pytest -m "not slow"`.
pytestmark = pytest.mark.slow

def completions_per_job(conn: psycopg.Connection, batch: uuid.UUID) -> dict[int, int]:
    rows = conn.execute(
        "SELECT j.id, count(l.id) AS n FROM csv_row_jobs j LEFT JOIN csv_processing_logs l"
        " ON l.row_job_id = j.id AND l.operation = 'row_completed' WHERE j.batch_id = %s GROUP BY j.id",
        [batch]).fetchall()
    return {r["id"]: r["n"] for r in rows}


def test_four_processes_complete_every_row_exactly_once(pool_env, conn, home) -> None:
    batch = make_batch(conn, 40)
    code, err = finish(start_pool(pool_env, "--concurrency", "8", "--processes", "4", "--until-done",
                                  "--max-dedicated", "0"))
    assert code == 0, err
    assert "offline provider" in err
    assert job_counts(conn, batch) == {"completed": 40}
    row = batch_row(conn, batch)
    assert (row["status"], row["processed_rows"], row["successful_rows"], row["failed_rows"]) == (
        "completed", 40, 40, 0)
    assert set(completions_per_job(conn, batch).values()) == {1}
    images = sorted((home / "storage" / "csv-images").rglob("*.png"))
    assert len(images) == 80
    job = conn.execute("SELECT generated_images, generated_prompts, generated_tags FROM csv_row_jobs"
                       " WHERE row_number = 7 AND batch_id = %s", [batch]).fetchone()
    assert job is not None
    styles = {image["style"] for image in job["generated_images"]}
    assert styles == {"lifestyle_emotional", "single_white_background"}
    for image in job["generated_images"]:
        data = (home / "storage" / image["storage_path"]).read_bytes()
        assert data.startswith(b"\x89PNG") and len(data) == image["bytes"]
        assert image["storage_path"].startswith(f"csv-images/{row['user_id']}/{batch}/7/product-7-")
    assert "Product 7" in job["generated_prompts"]["lifestyle_emotional"]["prompt"]
    assert "product" in job["generated_tags"]
    workers = conn.execute("SELECT status FROM csv_processing_workers").fetchall()
    assert len(workers) == 4 and {w["status"] for w in workers} == {"stopped"}


def test_kill_9_of_a_worker_loses_and_repeats_no_row(pool_env, conn) -> None:
    batch = make_batch(conn, 150)
    proc = start_pool(pool_env, "--concurrency", "8", "--processes", "4", "--until-done", "--max-dedicated", "0",
                      "--provider", "noop:0.1")
    wait_for(lambda: batch_row(conn, batch)["processed_rows"] >= 20, what="20 rows done")
    victim = conn.execute(
        "SELECT w.pid FROM csv_processing_workers w WHERE w.status <> 'stopped' AND EXISTS ("
        " SELECT 1 FROM csv_row_jobs j WHERE j.claimed_by = w.instance_id) LIMIT 1").fetchone()
    assert victim is not None
    os.kill(victim["pid"], signal.SIGKILL)
    code, err = finish(proc)
    assert code == 0, err
    assert "exited with code -9" in err
    assert job_counts(conn, batch) == {"completed": 150}
    assert set(completions_per_job(conn, batch).values()) == {1}
    row = batch_row(conn, batch)
    assert (row["processed_rows"], row["successful_rows"]) == (150, 150)
    retried = conn.execute("SELECT count(*) AS n FROM csv_row_jobs WHERE batch_id = %s AND retry_count = 1",
                           [batch]).fetchone()
    assert retried is not None and retried["n"] >= 1
    died = conn.execute("SELECT count(*) AS n FROM csv_processing_logs WHERE operation = 'worker_died'").fetchone()
    assert died == {"n": 1}


def test_sigterm_releases_claims_without_counting_a_retry(pool_env, conn) -> None:
    batch = make_batch(conn, 10)
    proc = start_pool(pool_env, "--concurrency", "4", "--processes", "2", "--provider", "noop:60",
                      "--grace-period", "0.5", "--max-dedicated", "0")
    # Whatever the provider, a row is 'processing' from the moment its worker starts on it.
    wait_for(lambda: job_counts(conn, batch).get("processing", 0) == 4, what="4 rows in flight")
    proc.send_signal(signal.SIGTERM)
    code, err = finish(proc, timeout=30)
    assert code == 0, err
    assert job_counts(conn, batch) == {"pending": 10}
    assert conn.execute("SELECT max(retry_count) AS m FROM csv_row_jobs").fetchone() == {"m": 0}
    workers = conn.execute("SELECT status FROM csv_processing_workers").fetchall()
    assert workers and {w["status"] for w in workers} == {"stopped"}


def test_a_row_whose_processing_raises_is_retried_then_failed_with_its_reason(pool_env, conn) -> None:
    batch = make_batch(conn, 4, max_retries=2)
    code, err = finish(start_pool(pool_env, "--concurrency", "2", "--until-done", "--max-dedicated", "0",
                                  "--provider", "support.worker_test_providers:exploding"))
    assert code == 0, err
    rows = {r["row_number"]: r for r in conn.execute(
        "SELECT row_number, status, retry_count, error_message FROM csv_row_jobs ORDER BY row_number")}
    for odd in (1, 3):
        assert rows[odd]["status"] == "failed" and rows[odd]["retry_count"] == 2
        assert "kaboom on row" in rows[odd]["error_message"] and "gave up after 2 retries" in rows[odd]["error_message"]
    for even in (2, 4):
        assert rows[even]["status"] == "failed" and rows[even]["retry_count"] == 0
        assert rows[even]["error_message"] == f"content policy violation on row {even}"
    assert batch_row(conn, batch)["failed_rows"] == 4
    logged = conn.execute("SELECT count(*) AS n FROM csv_processing_logs WHERE operation = 'row_failed'"
                          " AND message LIKE '%%content policy%%'").fetchone()
    assert logged == {"n": 2}


def test_transient_errors_are_retried_inside_the_worker(pool_env, conn) -> None:
    batch = make_batch(conn, 3)
    code, err = finish(start_pool(pool_env, "--concurrency", "3", "--until-done", "--max-dedicated", "0",
                                  "--provider", "support.worker_test_providers:flaky"))
    assert code == 0, err
    assert job_counts(conn, batch) == {"completed": 3}
    assert conn.execute("SELECT max(retry_count) AS m FROM csv_row_jobs").fetchone() == {"m": 0}
    transient = conn.execute("SELECT count(*) AS n FROM csv_processing_logs WHERE operation = 'transient_error'"
                             ).fetchone()
    assert transient == {"n": 6}


def test_a_dedicated_worker_starts_for_a_big_batch_only(pool_env, conn) -> None:
    big = make_batch(conn, 25)
    small = make_batch(conn, 5)
    code, err = finish(start_pool(pool_env, "--concurrency", "2", "--processes", "1", "--until-done",
                                  "--provider", "noop:0.2"))
    assert code == 0, err
    dedicated = {r["batch_id"] for r in conn.execute(
        "SELECT batch_id FROM csv_processing_workers WHERE batch_id IS NOT NULL")}
    assert dedicated == {big}
    assert small not in dedicated
    assert job_counts(conn, big) == {"completed": 25} and job_counts(conn, small) == {"completed": 5}


def test_a_small_batch_is_not_stuck_behind_a_big_one(pool_env, conn) -> None:
    big = make_batch(conn, 400)
    proc = start_pool(pool_env, "--concurrency", "4", "--processes", "2", "--until-done", "--max-dedicated", "0",
                      "--provider", "noop:0.05")
    wait_for(lambda: batch_row(conn, big)["processed_rows"] >= 20, what="the big batch to run")
    small = make_batch(conn, 10)
    code, err = finish(proc)
    assert code == 0, err
    # Bound to the order of events, not to the clock: once the small batch was there, it finished while most of
    # the big one was still to do (behind it, every big row would have finished first).
    small_done = batch_row(conn, small)["completed_at"]
    big_after = conn.execute("SELECT count(*) AS n FROM csv_row_jobs WHERE batch_id = %s AND completed_at > %s",
                             [big, small_done]).fetchone()["n"]
    assert big_after >= 200, big_after


def test_lost_database_connections_are_survived(pool_env, conn) -> None:
    batch = make_batch(conn, 120)
    proc = start_pool(pool_env, "--concurrency", "4", "--processes", "2", "--until-done", "--max-dedicated", "0",
                      "--provider", "noop:0.05")
    for threshold in (10, 40, 80):
        wait_for(lambda t=threshold: batch_row(conn, batch)["processed_rows"] >= t, what=f"{threshold} rows")
        conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                     " WHERE application_name LIKE 'csvjobs-worker%%'")
    code, err = finish(proc)
    assert code == 0, err
    assert "database unavailable" in err
    assert job_counts(conn, batch) == {"completed": 120}
    assert set(completions_per_job(conn, batch).values()) == {1}


def test_until_done_on_an_empty_queue_exits_at_once(pool_env, conn) -> None:
    """Without waiting for a poll or a heartbeat (ten minutes each here): only process start-up takes time."""
    slow_timers = dict(pool_env, CSVJOBS_POLL_SECONDS="600", CSVJOBS_HEARTBEAT_SECONDS="600")
    started = time.monotonic()
    code, err = finish(start_pool(slow_timers, "--until-done", "--concurrency", "2"), timeout=60)
    assert code == 0, err
    assert time.monotonic() - started < 30


def test_bad_options_are_one_line_errors(pool_env) -> None:
    for args, message in ((["--processes", "5", "--concurrency", "2"], "--processes"),
                          (["--provider", "gpt-magic"], "unknown provider"),
                          (["--batch", "nope"], "is not a batch id")):
        code, err = finish(start_pool(pool_env, *args), timeout=60)
        assert code == 2, err
        assert message in err and "Traceback" not in err


def test_a_batchs_concurrency_request_never_beats_the_operators_limit(pool_env, conn, tmp_path) -> None:
    """upload --max-concurrent-jobs 100000 asks; work --concurrency 1 decides: with one dedicated worker, at
    most 1 x (1 + 1) rows are being processed. In the database a worker may also hold rows it has finished
    while their report is on its way (reports go on a connection of their own), at most four reports' worth:
    with one row a report, 2 x (1 + 4) rows of the 30."""
    batch = make_batch(conn, 30)
    conn.execute("UPDATE csv_batches SET max_concurrent_jobs = 100000 WHERE id = %s", [batch])
    counts = tmp_path / "processing"
    # Reports of one row each: a worker's finished rows held unreported are then at most 4, so the bound below
    # (2 workers x (1 in flight + 4 held)) is a third of the batch, and a worker that ignored the limit fails it.
    proc = start_pool(dict(pool_env, CSVJOBS_TEST_COUNT_FILE=str(counts), CSVJOBS_REPORT_BATCH_SIZE="1"),
                      "--concurrency", "1", "--until-done", "--dedicated-threshold", "5",
                      "--provider", "support.worker_test_providers:counting")
    peak = 0
    while proc.poll() is None:
        row = conn.execute("SELECT count(*) AS n FROM csv_row_jobs WHERE status IN ('claimed', 'processing')"
                           ).fetchone()
        peak = max(peak, row["n"] if row else 0)
        time.sleep(0.02)
    code, err = finish(proc)
    assert code == 0, err
    assert job_counts(conn, batch) == {"completed": 30}
    dedicated = conn.execute("SELECT max_concurrent_jobs FROM csv_processing_workers WHERE batch_id = %s",
                             [batch]).fetchall()
    assert dedicated and {w["max_concurrent_jobs"] for w in dedicated} == {1}
    assert 1 <= int(counts.read_text().split()[1]) <= 2  # the pool and the dedicated worker, a row each at most
    assert 1 <= peak <= 2 * (1 + 4 * 1) < 30, peak


def test_a_pool_for_one_batch_says_which_batch(pool_env, conn) -> None:
    batch = make_batch(conn, 3)
    code, err = finish(start_pool(pool_env, "--batch", str(batch), "--until-done", "--concurrency", "2"))
    assert code == 0, err
    assert f"batch {batch}" in err and "any batch" not in err
    assert job_counts(conn, batch) == {"completed": 3}


def test_a_provider_of_ones_own_loads_by_module_and_attribute(pool_env, conn) -> None:
    batch = make_batch(conn, 3)
    code, err = finish(start_pool(pool_env, "--until-done", "--max-dedicated", "0", "--provider",
                                  "support.own_provider:make"))
    assert code == 0, err
    tags = conn.execute("SELECT DISTINCT generated_tags::text AS t FROM csv_row_jobs WHERE batch_id = %s",
                        [batch]).fetchall()
    assert tags == [{"t": '["own"]'}]
