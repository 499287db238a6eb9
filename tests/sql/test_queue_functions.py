"""The five queue functions and their set-based companions, on a real PostgreSQL, including concurrency."""

from __future__ import annotations

import random
import threading
import time
import uuid
from decimal import Decimal
from typing import Any

import psycopg
from psycopg.rows import dict_row
from support.helpers import USER_A, USER_B, as_service, batch_row, claim, job_counts, make_batch, report


def test_claim_hands_out_pending_jobs_with_a_claim_token_and_starts_the_batch(conn: psycopg.Connection) -> None:
    batch = make_batch(conn, 3)
    jobs = claim(conn, "w1", limit=2)
    assert [j["row_number"] for j in jobs] == [1, 2]
    assert all(j["attempt"] == 1 and j["batch_id"] == batch and j["user_id"] == USER_A for j in jobs)
    assert jobs[0]["product"]["title"] == "Product 1"
    assert batch_row(conn, batch)["status"] == "processing"
    single = conn.execute("SELECT * FROM claim_next_csv_row_job('w2', %s)", [batch]).fetchall()
    assert [j["row_number"] for j in single] == [3]
    assert conn.execute("SELECT * FROM claim_next_csv_row_job('w3')").fetchall() == []
    assert job_counts(conn, batch) == {"claimed": 3}


def test_eight_connections_claiming_at_once_never_share_a_job(database_url: str, conn: psycopg.Connection) -> None:
    batch = make_batch(conn, 400)
    claimed: dict[str, list[int]] = {}
    barrier = threading.Barrier(8)

    def worker(name: str) -> None:
        got: list[int] = []
        with psycopg.connect(database_url, autocommit=True, row_factory=dict_row) as c:
            as_service(c)
            barrier.wait()
            while True:
                rows = claim(c, name, limit=random.choice([1, 3, 7]))
                if not rows:
                    break
                got.extend(r["job_id"] for r in rows)
        claimed[name] = got

    threads = [threading.Thread(target=worker, args=(f"w{i}",)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    every = [job for jobs in claimed.values() for job in jobs]
    assert len(every) == 400
    assert len(set(every)) == 400
    assert job_counts(conn, batch) == {"claimed": 400}


def test_results_are_fenced_by_the_claim_token(conn: psycopg.Connection) -> None:
    """A stale worker whose claim timed out and was reclaimed cannot overwrite the new holder's result."""
    batch = make_batch(conn, 1)
    [first] = claim(conn, "slow-worker")
    conn.execute("UPDATE csv_row_jobs SET claimed_at = now() - interval '10 minutes'")
    [second] = claim(conn, "fresh-worker", timeout=5)
    assert second["job_id"] == first["job_id"] and second["attempt"] == first["attempt"] + 1
    assert second["retry_count"] == 1

    stale = report(conn, "slow-worker", [{"job_id": first["job_id"], "attempt": first["attempt"],
                                          "status": "completed", "generated_tags": ["stale"]}])
    assert stale == {first["job_id"]: False}
    # Same worker name but an old attempt is refused too.
    assert report(conn, "fresh-worker", [{"job_id": first["job_id"], "attempt": first["attempt"],
                                          "status": "completed"}]) == {first["job_id"]: False}
    fresh = report(conn, "fresh-worker", [{"job_id": second["job_id"], "attempt": second["attempt"],
                                           "status": "completed", "generated_tags": ["fresh"]}])
    assert fresh == {second["job_id"]: True}
    job = conn.execute("SELECT status, generated_tags FROM csv_row_jobs").fetchone()
    assert job == {"status": "completed", "generated_tags": ["fresh"]}
    assert batch_row(conn, batch)["status"] == "completed"
    # The single-result call reports the fence the same way.
    assert conn.execute(
        "SELECT update_csv_row_job_result(%s, 'failed', p_worker_id => 'slow-worker', p_attempt => 1) AS ok",
        [first["job_id"]],
    ).fetchone() == {"ok": False}


def test_the_single_job_claim_takes_back_a_timed_out_claim(conn: psycopg.Connection) -> None:
    """claim_next_csv_row_job looks for timed-out claims only when one is old enough, and then takes it back."""
    make_batch(conn, 1)
    [first] = claim(conn, "silent-worker")
    assert conn.execute("SELECT * FROM claim_next_csv_row_job('w', NULL, 5)").fetchall() == []
    conn.execute("UPDATE csv_row_jobs SET claimed_at = now() - interval '6 minutes'")
    [again] = conn.execute("SELECT * FROM claim_next_csv_row_job('w', NULL, 5)").fetchall()
    assert (again["job_id"], again["attempt"], again["retry_count"]) == (first["job_id"], 2, 1)


def test_a_live_worker_keeps_its_jobs_past_the_timeout(conn: psycopg.Connection) -> None:
    make_batch(conn, 1)
    conn.execute("SELECT * FROM update_csv_worker_heartbeat('busy', 'processing', 1)")
    claim(conn, "busy")
    conn.execute("UPDATE csv_row_jobs SET claimed_at = now() - interval '10 minutes'")
    assert claim(conn, "thief", timeout=5) == []


def test_counters_equal_the_real_counts_after_a_mixed_run(database_url: str, conn: psycopg.Connection) -> None:
    batches = [make_batch(conn, 150, max_retries=1), make_batch(conn, 90, user_id=USER_B, max_retries=1)]

    def worker(name: str, seed: int) -> None:
        rng = random.Random(seed)
        with psycopg.connect(database_url, autocommit=True, row_factory=dict_row) as c:
            as_service(c)
            while jobs := claim(c, name, limit=rng.randint(1, 6)):
                results = [
                    {"job_id": j["job_id"], "attempt": j["attempt"],
                     "status": rng.choice(["completed", "completed", "failed", "pending"]),
                     "error_message": "boom", "cost_usd": 0.01}
                    for j in jobs
                ]
                report(c, name, results)

    threads = [threading.Thread(target=worker, args=(f"w{i}", i)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for batch in batches:
        row = batch_row(conn, batch)
        counts = job_counts(conn, batch)
        assert row["successful_rows"] == counts.get("completed", 0)
        assert row["failed_rows"] == counts.get("failed", 0)
        assert row["processed_rows"] == row["total_rows"] == sum(counts.values())
        assert row["status"] == "completed"
        progress = conn.execute("SELECT * FROM get_csv_batch_progress(%s)", [batch]).fetchone()
        assert progress is not None
        assert progress["pending_rows"] == 0 and progress["in_flight_rows"] == 0
        assert float(progress["percentage"]) == 100.0
    retried = conn.execute("SELECT count(*) AS n FROM csv_row_jobs WHERE retry_count > 0").fetchone()
    assert retried is not None and retried["n"] > 0
    over = conn.execute("SELECT count(*) AS n FROM csv_row_jobs WHERE retry_count > max_retries").fetchone()
    assert over == {"n": 0}


def test_retry_past_max_retries_fails_the_job_with_its_reason(conn: psycopg.Connection) -> None:
    batch = make_batch(conn, 1, max_retries=1)
    for expected in ("pending", "failed"):
        [job] = claim(conn, "w")
        report(conn, "w", [{"job_id": job["job_id"], "attempt": job["attempt"], "status": "pending",
                            "error_message": "provider exploded"}])
        assert job_counts(conn, batch) == {expected: 1}
    row = conn.execute("SELECT error_message, retry_count FROM csv_row_jobs").fetchone()
    assert row is not None and row["retry_count"] == 1
    assert row["error_message"].startswith("provider exploded")
    assert batch_row(conn, batch)["failed_rows"] == 1


def test_cleanup_releases_exactly_the_dead_workers_jobs(conn: psycopg.Connection) -> None:
    batch = make_batch(conn, 10)
    for worker in ("alive", "dead"):
        conn.execute("SELECT * FROM update_csv_worker_heartbeat(%s, 'processing', 3)", [worker])
    alive_jobs = {j["job_id"] for j in claim(conn, "alive", limit=3)}
    dead_jobs = {j["job_id"] for j in claim(conn, "dead", limit=4)}
    conn.execute("UPDATE csv_processing_workers SET last_heartbeat = now() - interval '1 hour'"
                 " WHERE instance_id = 'dead'")
    result = conn.execute("SELECT * FROM cleanup_stale_csv_workers(5)").fetchone()
    assert result == {"workers_stopped": 1, "jobs_released": 4, "jobs_failed": 0}
    rows = conn.execute("SELECT id, status, claimed_by, retry_count FROM csv_row_jobs").fetchall()
    for row in rows:
        if row["id"] in alive_jobs:
            assert row["status"] == "claimed" and row["claimed_by"] == "alive"
        elif row["id"] in dead_jobs:
            assert row["status"] == "pending" and row["retry_count"] == 1 and row["claimed_by"] is None
    assert conn.execute("SELECT status FROM csv_processing_workers WHERE instance_id = 'dead'").fetchone() == {
        "status": "stopped"}
    assert conn.execute("SELECT * FROM cleanup_stale_csv_workers(5)").fetchone() == {
        "workers_stopped": 0, "jobs_released": 0, "jobs_failed": 0}
    assert batch_row(conn, batch)["processed_rows"] == 0


def test_two_cleanups_at_once_release_each_job_once(database_url: str, conn: psycopg.Connection) -> None:
    make_batch(conn, 60, max_retries=5)
    for i in range(6):
        conn.execute("SELECT * FROM update_csv_worker_heartbeat(%s, 'processing', 10)", [f"dead{i}"])
        claim(conn, f"dead{i}", limit=10)
    conn.execute("UPDATE csv_processing_workers SET last_heartbeat = now() - interval '1 hour'")
    results: list[dict[str, Any]] = []
    barrier = threading.Barrier(2)

    def run() -> None:
        with psycopg.connect(database_url, autocommit=True, row_factory=dict_row) as c:
            as_service(c)
            barrier.wait()
            row = c.execute("SELECT * FROM cleanup_stale_csv_workers(5)").fetchone()
            assert row is not None
            results.append(row)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(r["workers_stopped"] for r in results) == 6
    assert sum(r["jobs_released"] for r in results) == 60
    assert conn.execute("SELECT max(retry_count) AS m FROM csv_row_jobs").fetchone() == {"m": 1}


def test_release_on_shutdown_does_not_count_a_retry(conn: psycopg.Connection) -> None:
    make_batch(conn, 3)
    claim(conn, "w", limit=3)
    assert conn.execute("SELECT * FROM release_csv_worker_jobs('w', false)").fetchone() == {
        "released": 3, "failed": 0}
    assert conn.execute("SELECT DISTINCT status, retry_count FROM csv_row_jobs").fetchall() == [
        {"status": "pending", "retry_count": 0}]


def test_cancelled_and_paused_batches_hand_out_nothing(conn: psycopg.Connection) -> None:
    make_batch(conn, 2, status="cancelled")
    make_batch(conn, 2, status="paused")
    make_batch(conn, 2, status="uploaded")
    assert claim(conn, "w", limit=10) == []


def test_claims_are_fair_across_batches(conn: psycopg.Connection) -> None:
    """A small batch uploaded beside a huge one gets its share at once."""
    big = make_batch(conn, 1000)
    claim(conn, "early", limit=8)  # the big batch is already running
    small = make_batch(conn, 10)
    jobs = claim(conn, "w", limit=8)
    per_batch = {b: sum(1 for j in jobs if j["batch_id"] == b) for b in (big, small)}
    assert per_batch[small] == 8  # it has fewer in flight, so it goes first
    jobs = claim(conn, "w", limit=8)
    assert sum(1 for j in jobs if j["batch_id"] == small) == 2


def test_dedicated_claims_take_only_their_batch(conn: psycopg.Connection) -> None:
    make_batch(conn, 5)
    mine = make_batch(conn, 5)
    jobs = claim(conn, "dedicated", limit=10, batch_id=mine)
    assert len(jobs) == 5 and {j["batch_id"] for j in jobs} == {mine}


def test_heartbeat_registers_updates_and_reports_being_declared_dead(conn: psycopg.Connection) -> None:
    row = conn.execute(
        "SELECT * FROM update_csv_worker_heartbeat('w', 'processing', 2, 10, 1, 4, NULL, NULL, 'host', 42)"
    ).fetchone()
    assert row == {"instance_id": "w", "status": "processing", "was_stopped": False}
    worker = conn.execute("SELECT * FROM csv_processing_workers").fetchone()
    assert worker is not None
    assert (worker["current_job_count"], worker["total_jobs_processed"], worker["hostname"], worker["pid"]) == (
        2, 10, "host", 42)
    conn.execute("UPDATE csv_processing_workers SET status = 'stopped'")
    row = conn.execute("SELECT * FROM update_csv_worker_heartbeat('w', 'processing', 0)").fetchone()
    assert row is not None and row["was_stopped"] is True
    ops = [r["operation"] for r in conn.execute("SELECT operation FROM csv_processing_logs ORDER BY id")]
    assert ops == ["worker_started"]


def test_progress_reads_counters_and_in_flight_jobs(conn: psycopg.Connection) -> None:
    batch = make_batch(conn, 10)
    jobs = claim(conn, "w", limit=4)
    report(conn, "w", [{"job_id": j["job_id"], "attempt": j["attempt"], "status": s, "cost_usd": 0.5}
                       for j, s in zip(jobs[:3], ["completed", "completed", "failed"], strict=True)])
    p = conn.execute("SELECT * FROM get_csv_batch_progress(%s)", [batch]).fetchone()
    assert p is not None
    assert (p["total_rows"], p["processed_rows"], p["successful_rows"], p["failed_rows"]) == (10, 3, 2, 1)
    assert (p["in_flight_rows"], p["pending_rows"], p["active_workers"]) == (1, 6, 1)
    assert float(p["percentage"]) == 30.0 and float(p["cost_usd"]) == 1.5
    assert p["status"] == "processing" and p["eta_seconds"] is not None
    assert conn.execute("SELECT * FROM get_csv_batch_progress(%s)", [uuid.uuid4()]).fetchall() == []


def test_state_changes_are_logged_and_notified(database_url: str, conn: psycopg.Connection) -> None:
    with psycopg.connect(database_url, autocommit=True) as listener:
        listener.execute("LISTEN csv_batch_progress")
        listener.execute("LISTEN csv_processing_logs")
        batch = make_batch(conn, 1)
        [job] = claim(conn, "w")
        report(conn, "w", [{"job_id": job["job_id"], "attempt": job["attempt"], "status": "completed"}])
        channels = {n.channel for n in listener.notifies(timeout=1.0, stop_after=2)}
    assert channels == {"csv_batch_progress", "csv_processing_logs"}
    ops = [r["operation"] for r in conn.execute(
        "SELECT operation FROM csv_processing_logs WHERE batch_id = %s ORDER BY id", [batch])]
    assert ops == ["batch_started", "row_completed", "batch_completed"]


def test_a_real_claim_reads_the_pending_index_not_the_table(conn: psycopg.Connection) -> None:
    """A real claim (the function, not a copy of its query) reads the partial pending index and never scans the
    table or walks the primary key over finished rows, even with statistics that still say every row is pending
    (which once made the planner walk the primary key from the start). Counted by the server's own per-transaction
    scan statistics around the call."""
    batch = make_batch(conn, 20_000)
    # Statistics taken while every row was pending, as right after an upload; then most rows finish.
    conn.execute("ANALYZE csv_row_jobs")
    conn.execute("UPDATE csv_row_jobs SET status = 'completed', completed_at = now() WHERE row_number <= 19000")
    counters = (
        "SELECT pg_stat_get_xact_numscans('csv_row_jobs'::regclass) AS table_scans,"
        " pg_stat_get_xact_numscans('csv_row_jobs_pending_idx'::regclass) AS pending_scans,"
        " pg_stat_get_xact_tuples_returned('csv_row_jobs_pkey'::regclass) AS pkey_entries"
    )
    with conn.transaction():
        before = conn.execute(counters).fetchone()
        jobs = claim(conn, "w", limit=5, batch_id=batch)
        after = conn.execute(counters).fetchone()
    assert before is not None and after is not None
    assert [j["row_number"] for j in jobs] == [19001, 19002, 19003, 19004, 19005]
    assert after["table_scans"] == before["table_scans"], "the claim scanned csv_row_jobs sequentially"
    assert after["pending_scans"] > before["pending_scans"], "the claim did not use csv_row_jobs_pending_idx"
    assert after["pkey_entries"] - before["pkey_entries"] < 100, "the claim walked the primary key"


# The single-call contract, exactly as its design document writes the calls.
DOCUMENT_RESULT_CALL = (
    "SELECT update_csv_row_job_result('{job_id}', 'completed', 'Generated trigger text', "
    "'{{\"prompts\": [\"prompt1\", \"prompt2\"]}}', "
    "'{{\"images\": [{{\"url\": \"...\", \"model\": \"gpt-image-1\"}}]}}', "
    "'{{\"tags\": [\"tag1\", \"tag2\"]}}', 45.2)"
)


def test_the_documents_calls_process_a_whole_batch(conn: psycopg.Connection) -> None:
    batch = make_batch(conn, 2)
    as_service(conn)
    for _ in range(2):
        [job] = conn.execute("SELECT * FROM claim_next_csv_row_job('worker-instance-123')").fetchall()
        assert conn.execute("SELECT update_csv_row_job_result(%s, 'processing')", [job["job_id"]]).fetchone() == {
            "update_csv_row_job_result": True}
        assert job_counts(conn, batch).get("processing") == 1
        applied = conn.execute(DOCUMENT_RESULT_CALL.format(job_id=job["job_id"])).fetchone()
        assert applied == {"update_csv_row_job_result": True}
        stored = conn.execute("SELECT status, trigger_text, generated_prompts, generated_images, generated_tags,"
                              " processing_time_seconds, claimed_by FROM csv_row_jobs WHERE id = %s",
                              [job["job_id"]]).fetchone()
        assert stored == {"status": "completed", "trigger_text": "Generated trigger text",
                          "generated_prompts": {"prompts": ["prompt1", "prompt2"]},
                          "generated_images": {"images": [{"url": "...", "model": "gpt-image-1"}]},
                          "generated_tags": {"tags": ["tag1", "tag2"]},
                          "processing_time_seconds": Decimal("45.2"), "claimed_by": None}
        # Applied once: the job is no longer held, so a repeat changes nothing.
        assert conn.execute(DOCUMENT_RESULT_CALL.format(job_id=job["job_id"])).fetchone() == {
            "update_csv_row_job_result": False}
    row = batch_row(conn, batch)
    assert (row["status"], row["processed_rows"], row["successful_rows"]) == ("completed", 2, 2)
    logged = conn.execute("SELECT worker_instance, message, details FROM csv_processing_logs"
                          " WHERE operation = 'row_completed' AND batch_id = %s", [batch]).fetchall()
    assert len(logged) == 2
    assert all(e["worker_instance"] == "worker-instance-123" and "unfenced" in e["message"]
               and e["details"]["unfenced"] is True for e in logged)


def test_a_worker_that_passes_its_id_is_still_fenced(conn: psycopg.Connection) -> None:
    make_batch(conn, 1)
    as_service(conn)
    [job] = conn.execute("SELECT * FROM claim_next_csv_row_job('w1')").fetchall()
    call = "SELECT update_csv_row_job_result(%s, 'completed', NULL, NULL, NULL, NULL, 1, NULL, %s, %s) AS ok"
    assert conn.execute(call, [job["job_id"], "w2", None]).fetchone() == {"ok": False}
    assert conn.execute(call, [job["job_id"], "w1", job["attempt"] + 1]).fetchone() == {"ok": False}
    assert conn.execute("SELECT update_csv_row_job_result(%s, 'processing', p_worker_id => 'w2') AS ok",
                        [job["job_id"]]).fetchone() == {"ok": False}
    assert conn.execute(call, [job["job_id"], "w1", job["attempt"]]).fetchone() == {"ok": True}


def test_a_row_that_reuses_another_waits_for_it_and_its_finish_wakes_the_workers(
    database_url: str, conn: psycopg.Connection
) -> None:
    batch = make_batch(conn, 3)
    ids = {r["row_number"]: r["id"] for r in conn.execute(
        "SELECT id, row_number FROM csv_row_jobs WHERE batch_id = %s", [batch])}
    conn.execute("UPDATE csv_row_jobs SET reuses_job = %s WHERE id IN (%s, %s)", [ids[1], ids[2], ids[3]])
    as_service(conn)
    first = claim(conn, "w", limit=10)
    assert [j["row_number"] for j in first] == [1]  # rows 2 and 3 wait for row 1
    assert claim(conn, "w2", limit=10) == []
    with psycopg.connect(database_url, autocommit=True) as listener:
        listener.execute("LISTEN csv_row_jobs")
        report(conn, "w", [{"job_id": first[0]["job_id"], "attempt": first[0]["attempt"], "status": "completed"}])
        woken = list(listener.notifies(timeout=5, stop_after=1))
    assert woken, "finishing a row that others wait for must wake the workers"
    assert sorted(j["row_number"] for j in claim(conn, "w", limit=10)) == [2, 3]


def test_the_one_job_calls_keep_counters_and_completion_exact_under_concurrency(
    database_url: str, conn: psycopg.Connection
) -> None:
    """Sixteen connections through the contract's one-job calls over many small batches, so that batches keep
    ending while other rows still finish: each batch completes exactly once, only when its last row is done (a
    watcher checks progress all along), with counters, cost and logs equal to what the rows say."""
    batches = [make_batch(conn, 9, max_retries=1) for _ in range(14)]
    wrong: list[str] = []
    running = threading.Event()
    running.set()

    def watcher() -> None:
        with psycopg.connect(database_url, autocommit=True, row_factory=dict_row) as c:
            while running.is_set():
                for batch in batches:
                    p = c.execute("SELECT * FROM get_csv_batch_progress(%s)", [batch]).fetchone()
                    assert p is not None
                    if p["processed_rows"] > p["total_rows"] or (
                            p["status"] == "completed" and (p["processed_rows"], p["in_flight_rows"], p["pending_rows"])
                            != (p["total_rows"], 0, 0)):
                        wrong.append(f"{batch}: {p}")

    deadline = time.monotonic() + 90  # a row nobody can claim any more fails the test here, with what is left

    def worker(name: str, seed: int) -> None:
        rng = random.Random(seed)
        with psycopg.connect(database_url, autocommit=True, row_factory=dict_row) as c:
            as_service(c)
            while time.monotonic() < deadline:
                job = c.execute("SELECT job_id, attempt FROM claim_next_csv_row_job(%s)", [name]).fetchone()
                if job is None:
                    left = c.execute("SELECT count(*) AS n FROM csv_row_jobs"
                                     " WHERE status IN ('pending', 'claimed', 'processing')").fetchone()
                    if left == {"n": 0}:
                        return
                    time.sleep(0.005)  # rows still in flight may come back for a retry
                    continue
                status = rng.choice(["completed", "completed", "failed", "pending"])
                assert c.execute(
                    "SELECT update_csv_row_job_result(%s, %s, p_error_message => 'boom', p_worker_id => %s,"
                    " p_attempt => %s) AS ok", [job["job_id"], status, name, job["attempt"]]).fetchone() == {"ok": True}

    watching = threading.Thread(target=watcher)
    watching.start()
    threads = [threading.Thread(target=worker, args=(f"w{i}", i)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    running.clear()
    watching.join()
    stuck = conn.execute("SELECT j.batch_id, j.row_number, j.status, j.claimed_by, j.attempt, j.retry_count,"
                         " b.status AS batch_status, b.processed_rows FROM csv_row_jobs j JOIN csv_batches b"
                         " ON b.id = j.batch_id WHERE j.status IN ('pending', 'claimed', 'processing')").fetchall()
    assert stuck == [] and wrong == [], "\n".join([str(stuck), *wrong[:3]])
    for batch in batches:
        row = batch_row(conn, batch)
        counts = job_counts(conn, batch)
        assert row["status"] == "completed"
        assert (row["successful_rows"], row["failed_rows"], row["processed_rows"]) == (
            counts.get("completed", 0), counts.get("failed", 0), 9)
        completions = conn.execute("SELECT details FROM csv_processing_logs"
                                   " WHERE batch_id = %s AND operation = 'batch_completed'", [batch]).fetchall()
        assert [c["details"]["successful_rows"] for c in completions] == [row["successful_rows"]]
    assert conn.execute("SELECT count(*) AS n FROM csv_batch_counters").fetchone() == {"n": 0}


def test_counts_wait_in_shards_until_folded_and_a_users_action_folds_them_first(conn: psycopg.Connection) -> None:
    """Finished rows of a batch with work left go to counter shards: progress adds them up at once, and retrying
    failed rows (which takes them off the counters) folds them in before it subtracts."""
    batch = make_batch(conn, 5)
    # The periodic fold waits for the batch row to be a second old; keep it younger for the whole test.
    conn.execute("UPDATE csv_batches SET updated_at = now() + interval '1 hour' WHERE id = %s", [batch])
    jobs = claim(conn, "w", limit=4)
    report(conn, "w", [{"job_id": j["job_id"], "attempt": j["attempt"], "status": s, "cost_usd": 0.25}
                       for j, s in zip(jobs, ["completed", "failed", "failed", "completed"], strict=True)])
    assert batch_row(conn, batch)["processed_rows"] == 0
    assert conn.execute("SELECT count(*) AS n FROM csv_batch_counters WHERE batch_id = %s", [batch]).fetchone() != {
        "n": 0}
    p = conn.execute("SELECT * FROM get_csv_batch_progress(%s)", [batch]).fetchone()
    assert p is not None
    assert (p["processed_rows"], p["successful_rows"], p["failed_rows"], float(p["cost_usd"])) == (4, 2, 2, 1.0)
    assert conn.execute("SELECT retry_csv_batch_rows(%s) AS n", [batch]).fetchone() == {"n": 2}
    row = batch_row(conn, batch)
    assert (row["processed_rows"], row["successful_rows"], row["failed_rows"], float(row["cost_usd"])) == (
        2, 2, 0, 1.0)
    assert conn.execute("SELECT count(*) AS n FROM csv_batch_counters WHERE batch_id = %s", [batch]).fetchone() == {
        "n": 0}
    while jobs := claim(conn, "w", limit=5):
        report(conn, "w", [{"job_id": j["job_id"], "attempt": j["attempt"], "status": "completed"} for j in jobs])
    row = batch_row(conn, batch)
    assert (row["status"], row["processed_rows"], row["successful_rows"]) == ("completed", 5, 5)


def test_counting_rows_made_without_their_photo_reads_only_those_rows(conn) -> None:
    """rows_without_photo (batches, progress) comes from a partial index of such rows, not a scan of the batch."""
    from csvjobs.operate.queries import PROGRESS_SQL

    batch = make_batch(conn, 3)
    conn.execute("SET enable_seqscan = off")
    plan = "\n".join(r["QUERY PLAN"] for r in conn.execute("EXPLAIN " + PROGRESS_SQL, [batch]).fetchall())
    conn.execute("RESET enable_seqscan")
    assert "csv_row_jobs_without_photo_idx" in plan


def test_seventeen_reporters_at_once_never_wait_for_each_other(database_url: str, conn: psycopg.Connection) -> None:
    """Each backend adds to a counter shard of its own: 17 transactions that each report a row of the same batch
    and stay open do not wait for one another (with 16 shards by pid, two of any 17 shared one, and the second
    waited for the first to commit)."""
    batch = make_batch(conn, 40)
    jobs = claim(conn, "w", limit=17)
    open_reporters: list[psycopg.Connection] = []
    try:
        for job in jobs:
            c = psycopg.connect(database_url, row_factory=dict_row)
            open_reporters.append(c)
            as_service(c)
            c.execute("SET lock_timeout = '2s'")
            report(c, "w", [{"job_id": job["job_id"], "attempt": job["attempt"], "status": "completed"}])
        for c in open_reporters:
            c.commit()
    finally:
        for c in open_reporters:
            c.close()
    assert job_counts(conn, batch) == {"completed": 17, "pending": 23}
    p = conn.execute("SELECT * FROM get_csv_batch_progress(%s)", [batch]).fetchone()
    assert p is not None and p["successful_rows"] == 17


def test_a_burst_of_log_writes_notifies_watchers_once_not_per_commit(database_url: str,
                                                                      conn: psycopg.Connection) -> None:
    """NOTIFY takes a cluster-wide lock at commit: a session notifies at most every 250 ms, not on every write
    (a watcher reads the rest of a burst at its next look)."""
    batch = make_batch(conn, 1)
    with psycopg.connect(database_url, autocommit=True) as listener, \
            psycopg.connect(database_url, autocommit=True) as writer:
        listener.execute("LISTEN csv_processing_logs")
        as_service(writer)
        started = time.monotonic()
        for n in range(20):  # 20 commits
            writer.execute("INSERT INTO csv_processing_logs (batch_id, log_level, message, operation)"
                           " VALUES (%s, 'INFO', %s, 'test_marker')", [batch, f"line {n}"])
        took = time.monotonic() - started
        first = list(listener.notifies(timeout=1.0, stop_after=20))
        time.sleep(0.3)
        writer.execute("INSERT INTO csv_processing_logs (batch_id, log_level, message, operation)"
                       " VALUES (%s, 'INFO', 'later', 'test_marker')", [batch])
        later = list(listener.notifies(timeout=5.0, stop_after=1))
    # At most one notification per 250 ms of the burst (however long this machine took to make 20 commits), and
    # never one per commit.
    assert 1 <= len(first) <= min(19, 2 + int(took / 0.25)), (len(first), took)
    assert len(later) == 1


def test_a_log_write_notifies_whatever_the_sessions_date_style_or_a_junk_setting(
        database_url: str, conn: psycopg.Connection) -> None:
    """The time of a session's last notification survives a change of DateStyle, and a value set by someone
    else in its setting neither breaks the write nor silences the notification."""
    batch = make_batch(conn, 1)
    with psycopg.connect(database_url, autocommit=True) as listener, \
            psycopg.connect(database_url, autocommit=True) as writer:
        listener.execute("LISTEN csv_processing_logs")
        as_service(writer)
        insert = ("INSERT INTO csv_processing_logs (batch_id, log_level, message, operation)"
                  " VALUES (%s, 'INFO', 'x', 'test_marker')")
        writer.execute("SET DateStyle = 'German, DMY'")
        writer.execute(insert, [batch])
        writer.execute("SET DateStyle = 'SQL, MDY'")
        time.sleep(0.3)
        writer.execute(insert, [batch])
        writer.execute("SELECT set_config('csvjobs.logs_notified_at', 'not a time', false)")
        writer.execute(insert, [batch])
        got = list(listener.notifies(timeout=5.0, stop_after=3))
    assert len(got) == 3


def test_quick_claims_skip_the_wait_for_the_disk_only_for_a_session_that_asks(conn: psycopg.Connection) -> None:
    """csvjobs.async_claims on: both claims turn synchronous_commit off for their own transaction, and only it;
    without it (any other caller) nothing changes, and another write in a caller's transaction still waits."""
    batch = make_batch(conn, 5)

    def commit_mode_after(call: str) -> str:
        with conn.transaction():
            conn.execute(call, [batch])
            row = conn.execute("SHOW synchronous_commit").fetchone()
        assert row is not None
        return str(row["synchronous_commit"])

    set_claim = "SELECT * FROM claim_csv_row_jobs('w1', %s, 5, 1)"
    one_claim = "SELECT * FROM claim_next_csv_row_job('w1', %s)"
    assert commit_mode_after(set_claim) == "on"
    assert commit_mode_after(one_claim) == "on"
    conn.execute("SET csvjobs.async_claims = on")
    assert commit_mode_after(set_claim) == "off"
    assert commit_mode_after(one_claim) == "off"
    assert conn.execute("SHOW synchronous_commit").fetchone() == {"synchronous_commit": "on"}  # the next one waits
    conn.execute("SET csvjobs.async_claims = off")
    assert commit_mode_after(set_claim) == "on"
    assert job_counts(conn, batch) == {"claimed": 5}
