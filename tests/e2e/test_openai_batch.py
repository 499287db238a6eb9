"""OpenAI's Batch API, end to end: `csvjobs work` drives batches uploaded with --openai-batch through the Files and
Batch APIs of the loopback OpenAI-compatible server (fake_openai.py), which runs each batch after a delay."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
from pathlib import Path

import pytest
from PIL import Image
from support.fake_openai import FakeOpenAI
from support.helpers import USER_A, batch_row, cli, job_counts, make_batch
from support.pool import finish, start_pool, wait_for
from support.pool import work as pool_work

pytestmark = pytest.mark.slow

SECRET = "sk-test-batch-0123456789-do-not-log"
SYNC_CALLS = ("chat", "image", "edit")


@pytest.fixture
def batch_env(pool_env: dict[str, str], fake: FakeOpenAI) -> dict[str, str]:
    return dict(pool_env, OPENAI_API_KEY=SECRET, OPENAI_BASE_URL=fake.base_url,
                CSVJOBS_OPENAI_BATCH_POLL_SECONDS="0.3", CSVJOBS_POLL_SECONDS="0.3")


def work(env: dict[str, str], *args: str, timeout: float = 120) -> str:
    """Through the Batch API, dedicated workers included."""
    return pool_work(env, *args, timeout=timeout, dedicated=True)


def sync_calls(fake: FakeOpenAI) -> int:
    return sum(fake.count(endpoint) for endpoint in SYNC_CALLS)


def test_a_batch_goes_through_both_steps_with_no_synchronous_call(batch_env, fake, conn, home: Path) -> None:
    batch = make_batch(conn, 12, mode="openai_batch")
    other = make_batch(conn, 3)  # an ordinary batch beside it is processed call by call as before
    err = work(batch_env, "--concurrency", "4")
    assert SECRET not in err
    assert job_counts(conn, batch) == {"completed": 12}
    assert job_counts(conn, other) == {"completed": 3}
    assert fake.count("chat") == 3 and fake.count("image") == 6  # the ordinary batch's calls, and no more
    assert fake.count("batch_chat") == 12 and fake.count("batch_image") == 24
    creates = [c.body for c in fake.calls if c.endpoint == "batches.create"]
    assert sorted(c["endpoint"] for c in creates) == ["/v1/chat/completions", "/v1/images/generations"]
    rows = conn.execute("SELECT generated_prompts, generated_images, generated_tags, cost_usd, usage"
                        " FROM csv_row_jobs WHERE batch_id = %s", [batch]).fetchall()
    sync_cost = conn.execute("SELECT cost_usd FROM csv_row_jobs WHERE batch_id = %s LIMIT 1", [other]).fetchone()
    for row in rows:
        assert row["generated_prompts"]["lifestyle_emotional"]["prompt"].startswith("LIFESTYLE: US product")
        assert {image["style"] for image in row["generated_images"]} == {"lifestyle_emotional",
                                                                         "single_white_background"}
        for image in row["generated_images"]:
            data = (home / "storage" / image["storage_path"]).read_bytes()
            Image.open(io.BytesIO(data)).verify()
            if image["style"] == "single_white_background":
                assert image["pure_white"] is True
        # The same usage as a synchronous row, at half the price.
        assert float(row["cost_usd"]) == pytest.approx(float(sync_cost["cost_usd"]) / 2)
    assert float(batch_row(conn, batch)["cost_usd"]) == pytest.approx(sum(float(r["cost_usd"]) for r in rows))
    subs = conn.execute("SELECT step, state, openai_status, request_count, request_counts FROM csv_openai_submissions"
                        " WHERE batch_id = %s ORDER BY id", [batch]).fetchall()
    assert [(s["step"], s["state"], s["openai_status"], s["request_count"]) for s in subs] == [
        ("prompts", "done", "completed", 12), ("images", "done", "completed", 24)]
    assert batch_row(conn, batch)["status"] == "completed"


def _kill_pool(proc, conn) -> None:
    """kill -9 the supervisor and every worker it started (they run in process groups of their own)."""
    for row in conn.execute("SELECT pid FROM csv_processing_workers WHERE status <> 'stopped'").fetchall():
        with contextlib.suppress(ProcessLookupError):
            os.kill(row["pid"], signal.SIGKILL)
    proc.kill()
    proc.communicate()


def submissions(conn, batch) -> list[dict]:
    return conn.execute("SELECT * FROM csv_openai_submissions WHERE batch_id = %s ORDER BY id", [batch]).fetchall()


def test_a_killed_driver_is_replaced_without_submitting_or_paying_twice(batch_env, fake, conn) -> None:
    batch = make_batch(conn, 4, mode="openai_batch")
    fake.batch_delay = 60  # OpenAI is slow: the pool dies while the batch runs
    proc = start_pool(batch_env, "--until-done", "--concurrency", "2")
    wait_for(lambda: any(s["state"] == "submitted" for s in submissions(conn, batch)), what="the submission")
    _kill_pool(proc, conn)
    held = conn.execute("SELECT DISTINCT claimed_by, claimed_at FROM csv_row_jobs WHERE batch_id = %s",
                        [batch]).fetchall()
    assert [(h["claimed_by"], h["claimed_at"]) for h in held] == [(f"openai-batch:{submissions(conn, batch)[0]['id']}",
                                                                   None)]
    # cleanup knows a dead worker from rows waiting on OpenAI: the workers are declared dead, the rows stay held.
    result = cli(batch_env, "cleanup", "--timeout-minutes", "0")
    assert result.returncode == 0, result.stderr
    assert "4 row(s) are waiting on OpenAI's Batch API" in result.stdout
    assert job_counts(conn, batch) == {"processing": 4}
    # A kill between creating the OpenAI batch and recording it: the restart finds it by its submission key.
    with conn.transaction():
        conn.execute("UPDATE csv_openai_submissions SET state = 'uploaded', openai_batch_id = NULL,"
                     " openai_status = NULL, locked_by = NULL, locked_until = NULL WHERE batch_id = %s", [batch])
    fake.batch_delay = 0
    work(batch_env, "--concurrency", "2")
    assert job_counts(conn, batch) == {"completed": 4}
    assert fake.count("batches.create") == 2 and fake.count("files.create") == 2  # prompts once, images once
    assert fake.count("batch_chat") == 4 and fake.count("batch_image") == 8 and sync_calls(fake) == 0
    # The ledger holds what OpenAI served, once each, at Batch prices, and it is the rows' cost.
    paid = conn.execute("SELECT kind, count(*) AS n, sum(cost_usd)::float AS cost, min(price_factor)::float AS f,"
                        " max(price_factor)::float AS g FROM csv_paid_calls WHERE batch_id = %s GROUP BY kind"
                        " ORDER BY kind", [batch]).fetchall()
    assert [(p["kind"], p["n"], p["f"], p["g"]) for p in paid] == [("image", 8, 0.5, 0.5), ("prompts", 4, 0.5, 0.5)]
    rows_cost = conn.execute("SELECT sum(cost_usd)::float AS c FROM csv_row_jobs WHERE batch_id = %s",
                             [batch]).fetchone()
    assert rows_cost["c"] == pytest.approx(sum(p["cost"] for p in paid), abs=1e-9)
    retries = conn.execute("SELECT sum(retry_count) AS n FROM csv_row_jobs WHERE batch_id = %s", [batch]).fetchone()
    assert retries["n"] == 0
    logs = conn.execute("SELECT message FROM csv_processing_logs WHERE operation = 'openai_batch_submitted'"
                        " AND batch_id = %s ORDER BY id", [batch]).fetchall()
    # (the killed pool's own line may have died with it: log lines are written with the next report)
    found = [log["message"] for log in logs if "found (it was created before a restart)" in log["message"]]
    assert len(found) == 1 and "prompts request(s)" in found[0]


def test_failed_lines_are_retried_in_a_later_openai_batch_counting_a_retry(batch_env, fake, conn) -> None:
    batch = make_batch(conn, 3, mode="openai_batch")
    fake.batch_fail_when = "US product 2"
    fake.batch_fail_times = 1
    work(batch_env)
    assert job_counts(conn, batch) == {"completed": 3}
    rows = {r["row_number"]: r["retry_count"] for r in conn.execute(
        "SELECT row_number, retry_count FROM csv_row_jobs WHERE batch_id = %s", [batch])}
    assert rows == {1: 0, 2: 1, 3: 0}
    steps = [(s["step"], s["request_count"]) for s in submissions(conn, batch)]
    assert sorted(steps) == sorted([("prompts", 3), ("prompts", 1), ("images", 4), ("images", 2)])
    assert sync_calls(fake) == 0
    # A line that fails every time fails its row once its retries are spent.
    again = make_batch(conn, 2, mode="openai_batch", max_retries=1)
    fake.batch_fail_when, fake.batch_fail_times = "US product 1", 1_000
    work(batch_env)
    failed = conn.execute("SELECT row_number, status, error_message FROM csv_row_jobs WHERE batch_id = %s"
                          " ORDER BY row_number", [again]).fetchall()
    assert [r["status"] for r in failed] == ["failed", "completed"]
    assert "the OpenAI batch request failed (server_error)" in failed[0]["error_message"]


def test_an_expired_batch_keeps_what_finished_and_resubmits_the_rest(batch_env, fake, conn) -> None:
    batch = make_batch(conn, 4, mode="openai_batch")
    fake.batch_expire_after = 2
    work(batch_env)
    assert job_counts(conn, batch) == {"completed": 4}
    assert fake.count("batch_chat") == 4  # the two that ran were kept, not paid again
    retries = conn.execute("SELECT sum(retry_count) AS n FROM csv_row_jobs WHERE batch_id = %s", [batch]).fetchone()
    assert retries["n"] == 0  # OpenAI never ran them: no retry counted
    first = submissions(conn, batch)[0]
    assert first["openai_status"] == "expired"
    assert first["outcome"] == {"openai_status": "expired", "onward": 2, "completed": 0, "failed": 0,
                                "retried": 0, "not_run": 2}


def test_cancel_cancels_the_openai_batches_and_keeps_the_rows(batch_env, fake, conn) -> None:
    batch = make_batch(conn, 3, mode="openai_batch")
    fake.batch_delay = 60
    proc = start_pool(batch_env, "--until-done")
    wait_for(lambda: any(s["state"] == "submitted" for s in submissions(conn, batch)), what="the submission")
    result = cli(dict(batch_env, CSVJOBS_USER_ID=str(USER_A)), "cancel", str(batch))
    assert result.returncode == 0, result.stderr
    assert "cancelled its OpenAI batches batch_1" in result.stdout
    assert SECRET not in result.stdout + result.stderr
    code, err = finish(proc)
    assert code == 0, err
    assert fake.count("batches.cancel") >= 1  # the command's, and the driver's if it saw the cancel first
    (sub,) = submissions(conn, batch)
    assert (sub["state"], sub["openai_status"]) == ("done", "cancelled")
    assert job_counts(conn, batch) == {"pending": 3}
    assert batch_row(conn, batch)["status"] == "cancelled"
    assert sync_calls(fake) == 0


def test_input_files_are_cut_at_the_request_limit(batch_env, fake, conn) -> None:
    batch = make_batch(conn, 6, mode="openai_batch")
    work(dict(batch_env, CSVJOBS_OPENAI_BATCH_MAX_REQUESTS="4"))
    assert job_counts(conn, batch) == {"completed": 6}
    counts = [s["request_count"] for s in submissions(conn, batch)]
    assert max(counts) == 4 and sum(c for c, s in zip(counts, submissions(conn, batch), strict=True)
                                    if s["step"] == "images") == 12
    assert fake.count("batch_image") == 12 and sync_calls(fake) == 0


def test_a_redo_goes_through_the_batch_api_with_the_note(batch_env, fake, conn) -> None:
    batch = make_batch(conn, 2, mode="openai_batch")
    work(batch_env)
    user_env = dict(batch_env, CSVJOBS_USER_ID=str(USER_A))
    result = cli(user_env, "regenerate", str(batch), "--rows", "2", "--style", "white", "--note", "bigger logo")
    assert result.returncode == 0, result.stderr
    before = fake.count("batch_image")
    work(batch_env)
    assert job_counts(conn, batch) == {"completed": 2}
    redone = [c for c in fake.calls if c.endpoint == "batch_image"][before:]
    assert len(redone) == 1 and redone[0].body["prompt"].endswith("Changes the reviewer asked for: bigger logo")
    assert fake.count("batch_chat") == 2 and sync_calls(fake) == 0  # the prompts were reused
    row = conn.execute("SELECT generated_images, checkpoint FROM csv_row_jobs WHERE batch_id = %s AND row_number = 2",
                       [batch]).fetchone()
    white = next(i for i in row["generated_images"] if i["style"] == "single_white_background")
    assert white["storage_path"].endswith("-r2.png") and "regenerate" not in row["checkpoint"]
    kept = conn.execute("SELECT count(*) AS n FROM csv_image_versions WHERE batch_id = %s", [batch]).fetchone()
    assert kept["n"] == 1


def test_progress_shows_the_openai_batch_while_it_runs(batch_env, fake, conn) -> None:
    batch = make_batch(conn, 2, mode="openai_batch")
    fake.batch_delay = 60
    proc = start_pool(batch_env, "--until-done")
    try:
        wait_for(lambda: any(s["openai_status"] == "in_progress" for s in submissions(conn, batch)),
                 what="OpenAI to report in_progress")
        user_env = dict(batch_env, CSVJOBS_USER_ID=str(USER_A))
        shown = json.loads(cli(user_env, "progress", str(batch), "--json").stdout)
        assert shown["processing_mode"] == "openai_batch"
        (info,) = shown["openai_batches"]
        assert (info["step"], info["openai_batch_id"], info["openai_status"], info["requests"]) == \
            ("prompts", "batch_1", "in_progress", 2)
        assert info["request_counts"] == {"total": 2, "completed": 0, "failed": 0}
        plain = cli(user_env, "progress", str(batch)).stdout
        assert ("prompts: 2 row(s), prepared 2, submitted 2, collected 0, completed 0; OpenAI batch batch_1 "
                "in_progress, 0/2 request(s) done, 0 failed") in plain
        listed = cli(user_env, "batches").stdout
        assert "mode=openai_batch" in listed
    finally:
        _kill_pool(proc, conn)


def test_a_worker_without_the_openai_provider_leaves_openai_batches_alone(batch_env, conn) -> None:
    batch = make_batch(conn, 2, mode="openai_batch")
    err = work(batch_env, "--provider", "offline")
    assert "need" in err and "--openai-batch" in err
    assert job_counts(conn, batch) == {"pending": 2}
    # The contract's single-job claim never hands such a row out either.
    assert conn.execute("SELECT * FROM claim_next_csv_row_job('w', NULL, 5)").fetchall() == []


def test_variants_reuse_their_leaders_images_at_no_cost(batch_env, fake, conn, tmp_path: Path) -> None:
    csv_file = tmp_path / "variants.csv"
    csv_file.write_text("Handle,Title,Body (HTML),Type,Option1 Name,Option1 Value,Variant SKU\n"
                        "shirt,Shirt,<p>cotton tee</p>,Apparel,Size,S,SH-S\nshirt,,,,,M,SH-M\nshirt,,,,,L,SH-L\n"
                        "mug,Mug,<p>big mug</p>,Kitchen,Size,One,MU-1\n", encoding="utf-8")
    user_env = dict(batch_env, CSVJOBS_USER_ID=str(USER_A))
    uploaded = cli(user_env, "upload", str(csv_file), "--openai-batch", "--json")
    assert uploaded.returncode == 0, uploaded.stderr
    batch = json.loads(uploaded.stdout)["batch_id"]
    work(batch_env)
    rows = {r["row_number"]: r for r in conn.execute(
        "SELECT row_number, status, cost_usd, generated_images FROM csv_row_jobs WHERE batch_id = %s", [batch])}
    assert {r["status"] for r in rows.values()} == {"completed"}
    assert fake.count("batch_chat") == 2 and fake.count("batch_image") == 4 and sync_calls(fake) == 0
    for number in (2, 3):
        assert float(rows[number]["cost_usd"]) == 0
        assert [i["storage_path"] for i in rows[number]["generated_images"]] == \
            [i["storage_path"] for i in rows[1]["generated_images"]]


def test_a_refused_key_stops_the_pool_without_printing_it(batch_env, fake, conn) -> None:
    batch = make_batch(conn, 2, mode="openai_batch")
    fake.reject_key = True
    code, err = finish(start_pool(batch_env, "--until-done"))
    assert code == 2 and "rejected the API key" in err
    assert SECRET not in err
    assert fake.count("batches.create") == 0
    logs = conn.execute("SELECT string_agg(message || details::text, ' ') AS all FROM csv_processing_logs").fetchone()
    assert SECRET not in str(logs)
    assert all(r["claimed_by"] is None or r["claimed_by"].startswith("openai-batch:") for r in conn.execute(
        "SELECT claimed_by FROM csv_row_jobs WHERE batch_id = %s", [batch]))


def test_a_batch_openai_refuses_sends_its_rows_back_until_their_retries_run_out(batch_env, fake, conn) -> None:
    batch = make_batch(conn, 2, mode="openai_batch", max_retries=1)
    fake.refuse_batches = True
    work(batch_env)
    rows = conn.execute("SELECT status, retry_count, error_message FROM csv_row_jobs WHERE batch_id = %s",
                        [batch]).fetchall()
    assert [(r["status"], r["retry_count"]) for r in rows] == [("failed", 1), ("failed", 1)]
    assert all("OpenAI refused the batch" in r["error_message"] and "line 1 is malformed" in r["error_message"]
               for r in rows)
    assert fake.count("batches.create") == 2 and sync_calls(fake) == 0
    assert {s["state"] for s in submissions(conn, batch)} == {"done"}


def test_rows_complete_while_the_output_is_read_and_a_kill_mid_read_applies_nothing_twice(batch_env, fake,
                                                                                          conn) -> None:
    """Results land as they are read: while a (slow) output file is read, completed rows rise; a pool killed then
    and started again finishes every row with each image stored and paid once."""
    rows = 24
    batch = make_batch(conn, rows, mode="openai_batch")
    fake.content_line_seconds = 0.15  # the images' output: 48 lines, about 7 s to read

    def partly_collected() -> bool:
        done = job_counts(conn, batch).get("completed", 0)
        reading = any(s["step"] == "images" and s["state"] == "submitted" for s in submissions(conn, batch))
        return 0 < done < rows and reading

    proc = start_pool(batch_env, "--until-done", "--concurrency", "2")
    wait_for(partly_collected, timeout=120, what="rows completed while the output file is still being read")
    # progress follows the collection of that OpenAI batch: rows read and completed so far, and an ETA.
    user_env = dict(batch_env, CSVJOBS_USER_ID=str(USER_A))
    wait_for(lambda: any(i["step"] == "images" and i["completed_rows"] > 0 for i in json.loads(
        cli(user_env, "progress", str(batch), "--json").stdout)["openai_batches"]), what="progress to count them")
    (info,) = [i for i in json.loads(cli(user_env, "progress", str(batch), "--json").stdout)["openai_batches"]
               if i["step"] == "images"]
    assert 0 < info["completed_rows"] <= info["collected_rows"] <= rows and info["collecting_seconds"] > 0
    plain = cli(user_env, "progress", str(batch)).stdout
    assert "(being collected, ETA " in plain
    _kill_pool(proc, conn)
    assert 0 < job_counts(conn, batch).get("completed", 0) < rows
    with conn.transaction():  # the dead pool's lease on its submissions runs out (5 minutes, here at once)
        conn.execute("UPDATE csv_openai_submissions SET locked_by = NULL, locked_until = NULL WHERE batch_id = %s",
                     [batch])
    fake.content_line_seconds = 0
    work(batch_env, "--concurrency", "2")
    assert job_counts(conn, batch) == {"completed": rows}
    stored = conn.execute("SELECT row_number, details ->> 'style' AS style, count(*) AS n FROM csv_processing_logs"
                          " WHERE batch_id = %s AND operation = 'image_stored' GROUP BY 1, 2", [batch]).fetchall()
    assert stored and max(s["n"] for s in stored) == 1, stored  # (lines of the killed pool may be lost, not doubled)
    paid = conn.execute("SELECT kind, count(*) AS n FROM csv_paid_calls WHERE batch_id = %s GROUP BY kind"
                        " ORDER BY kind", [batch]).fetchall()
    assert [(p["kind"], p["n"]) for p in paid] == [("image", 2 * rows), ("prompts", rows)]
    assert fake.count("batch_image") == 2 * rows  # OpenAI ran each image once


def test_a_large_batch_is_prepared_in_chunks_by_every_worker_process(batch_env, fake, conn, photos) -> None:
    """Rows are taken into submissions a bounded number at a time, so a large batch becomes several OpenAI batches
    that both worker processes prepare (each photo here takes a while to fetch, as real ones do)."""
    rows, chunk = 40, 4
    env = dict(batch_env, CSVJOBS_OPENAI_BATCH_ROWS_PER_SUBMISSION=str(chunk),
               CSVJOBS_ALLOW_PRIVATE_IMAGE_HOSTS="127.0.0.1/32")
    proc = start_pool(env, "--concurrency", "2", "--processes", "2", "--max-dedicated", "0")
    try:
        # Both processes are up before there is anything to take: which one starts first is no part of the test.
        wait_for(lambda: conn.execute("SELECT count(*) AS n FROM csv_processing_workers WHERE status <> 'stopped'")
                 .fetchone()["n"] == 2, what="both worker processes")
        batch = make_batch(conn, rows, mode="openai_batch", status="paused")
        with conn.transaction():  # every row has a (slow) photo; then the batch may be taken
            conn.execute("UPDATE csv_batches SET column_mapping = jsonb_set(jsonb_set(column_mapping,"
                         " '{fields,image_url}', '\"image_url\"'), '{row_data_keys,image_url}', '\"image_url\"')"
                         " WHERE id = %s", [batch])
            conn.execute("UPDATE csv_row_jobs SET row_data = (row_data::jsonb || jsonb_build_object('image_url', %s"
                         " || '?row=' || row_number))::json WHERE batch_id = %s", [photos.base + "/slow.png", batch])
            conn.execute("UPDATE csv_batches SET status = 'queued' WHERE id = %s", [batch])
        photos.slow_seconds = 0.3
        wait_for(lambda: job_counts(conn, batch) == {"completed": rows}, timeout=180, what="every row completed")
    finally:
        proc.send_signal(signal.SIGTERM)
        code, err = finish(proc)
    assert code == 0, err
    prompts = conn.execute("SELECT request_count FROM csv_openai_submissions WHERE batch_id = %s"
                           " AND step = 'prompts'", [batch]).fetchall()
    assert len(prompts) == rows // chunk and {p["request_count"] for p in prompts} == {chunk}
    drivers = conn.execute("SELECT DISTINCT worker_instance FROM csv_processing_logs WHERE batch_id = %s"
                           " AND operation = 'openai_batch_submitted'", [batch]).fetchall()
    assert len(drivers) == 2, drivers
    # A prompt and a lifestyle edit per row, once each; the white images were cut out of the plain photos.
    assert (fake.count("batch_chat"), fake.count("batch_edit"), fake.count("batch_image")) == (rows, rows, 0)
