"""sql/budget.sql on a real PostgreSQL: a call's reservation counts while its row is in flight and is given back when
the call is paid; a row waits when calls in flight hold the rest; the batch pauses (once, with its reason and a WARN
line, its counters folded) when even nothing in flight would leave room; every paid call lands once in the
append-only ledger, in the row's and batch's cost and in the day's running total, which the daily cap reads and
which regenerate, retry, restore and deleting a batch never lower; only the owner sets a budget."""

from __future__ import annotations

import json
import uuid

import psycopg
import pytest
from support.helpers import USER_A, USER_B, as_service, as_user, claim, job_counts, make_batch, report


def reserve(conn, job: dict, amount: float, daily: float | None = None, worker: str = "w",
            release: bool = True) -> str | None:
    row = conn.execute("SELECT reserve_csv_call_cost(%s::bigint, %s, %s::integer, %s::numeric, %s::numeric, %s) AS r",
                       [job["job_id"], worker, job["attempt"], amount, daily, release]).fetchone()
    return row["r"]


def pay(conn, job: dict, cost: float, reserved: float = 0.0, worker: str = "w", key: str | None = None) -> bool:
    call = {"key": key or uuid.uuid4().hex, "kind": "image", "style": "lifestyle_emotional", "model": "m",
            "cost_usd": cost, "reserved_usd": reserved}
    row = conn.execute("SELECT record_csv_paid_call(%s::bigint, %s, %s::integer, %s::jsonb) AS new",
                       [job["job_id"], worker, job["attempt"], json.dumps(call)]).fetchone()
    return row["new"]


def complete(conn, job: dict, worker: str = "w") -> None:
    assert report(conn, worker, [{"job_id": job["job_id"], "attempt": job["attempt"], "status": "completed",
                                  "generated_images": [{"style": "lifestyle_emotional", "storage_path": "x"}]}]
                  ) == {job["job_id"]: True}


def status(conn, batch) -> dict:
    return conn.execute("SELECT status, pause_reason FROM csv_batches WHERE id = %s", [batch]).fetchone()


def held(conn, job: dict) -> float:
    row = conn.execute("SELECT reserved_cost_usd::float FROM csv_row_jobs WHERE id = %s", [job["job_id"]]).fetchone()
    return float(row["reserved_cost_usd"] or 0)


def test_a_budget_lets_calls_wait_then_pauses_the_batch(conn) -> None:
    batch = make_batch(conn, 6)
    conn.execute("UPDATE csv_batches SET max_cost_usd = 1.0 WHERE id = %s", [batch])
    conn.execute("SELECT * FROM update_csv_worker_heartbeat('w', 'idle')")
    first, second, third = claim(conn, "w", 3, batch)
    assert reserve(conn, first, 0.4) is None and reserve(conn, second, 0.4) is None
    # 0.8 held: the third would fit on its own, so it waits (back to pending, no retry, no pause).
    assert reserve(conn, third, 0.4).startswith("wait:")
    assert job_counts(conn, batch) == {"claimed": 2, "pending": 4} and status(conn, batch)["status"] != "paused"
    # Paying a call gives its reservation back; the cost is spent at once, while the row is still in flight.
    assert pay(conn, first, 0.3, reserved=0.4) and held(conn, first) == 0.0
    assert pay(conn, second, 0.3, reserved=0.4)
    complete(conn, first)
    complete(conn, second)  # spent 0.6, nothing held
    (again,) = claim(conn, "w", 1, batch)
    assert reserve(conn, again, 0.4) is None  # 0.6 + 0.4 = the budget exactly
    (next_row,) = claim(conn, "w", 1, batch)
    assert reserve(conn, next_row, 0.4).startswith("wait:")
    assert pay(conn, again, 0.35, reserved=0.4)  # spent 0.95: no call of 0.4 fits any more
    complete(conn, again)
    (last,) = claim(conn, "w", 1, batch)
    refused = reserve(conn, last, 0.4)
    assert refused.startswith("budget reached: $0.9500 spent of a $1.0000 budget; the next call may cost up to $0.4000")
    assert status(conn, batch) == {"status": "paused", "pause_reason": refused}
    assert job_counts(conn, batch) == {"completed": 3, "pending": 3}
    assert conn.execute("SELECT max(retry_count) AS n FROM csv_row_jobs WHERE batch_id = %s", [batch]).fetchone() == {
        "n": 0}
    logged = conn.execute("SELECT log_level, operation FROM csv_processing_logs WHERE batch_id = %s"
                          " AND operation = 'budget_reached'", [batch]).fetchall()
    assert logged == [{"log_level": "WARN", "operation": "budget_reached"}]
    # The paused batch's own row is current: its counters are folded (no shard left), its cost what was paid.
    row = conn.execute("SELECT successful_rows, processed_rows, cost_usd::float AS cost_usd FROM csv_batches"
                       " WHERE id = %s", [batch]).fetchone()
    assert row == {"successful_rows": 3, "processed_rows": 3, "cost_usd": pytest.approx(0.95)}
    assert conn.execute("SELECT count(*) AS n FROM csv_batch_counters WHERE batch_id = %s", [batch]).fetchone() == {
        "n": 0}
    assert claim(conn, "w", 1, batch) == []  # a paused batch hands out nothing
    conn.execute("SELECT set_csv_batch_budget(%s, 5)", [batch])
    conn.execute("SELECT set_csv_batch_state(%s, 'resume')", [batch])
    assert status(conn, batch) == {"status": "processing", "pause_reason": None}


def test_reservations_add_up_per_attempt_and_a_failed_call_gives_its_back(conn) -> None:
    batch = make_batch(conn, 2)
    conn.execute("UPDATE csv_batches SET max_cost_usd = 1.0 WHERE id = %s", [batch])
    conn.execute("SELECT * FROM update_csv_worker_heartbeat('w', 'idle')")
    (job,) = claim(conn, "w", 1, batch)
    assert reserve(conn, job, 0.2) is None and reserve(conn, job, 0.3) is None
    assert held(conn, job) == pytest.approx(0.5)
    conn.execute("SELECT unreserve_csv_call_cost(%s, 'w', %s, 0.3)", [job["job_id"], job["attempt"]])
    assert held(conn, job) == pytest.approx(0.2)
    # A call the row can do without is refused without letting the row go or pausing the batch.
    assert reserve(conn, job, 0.9, release=False).startswith("wait:")
    assert reserve(conn, job, 1.1, release=False).startswith("budget reached")
    assert job_counts(conn, batch) == {"claimed": 1, "pending": 1} and status(conn, batch)["status"] != "paused"
    # The worker dies: its reservation is no longer held by anyone, and the next attempt starts from nothing.
    conn.execute("SELECT * FROM release_csv_worker_jobs('w', true)")
    conn.execute("SELECT * FROM update_csv_worker_heartbeat('w2', 'idle')")
    (again, _) = claim(conn, "w2", 2, batch)
    assert reserve(conn, again, 1.0, worker="w2") is None  # the dead attempt's 0.2 counts no more
    assert held(conn, again) == pytest.approx(1.0)


def test_without_a_budget_nothing_is_reserved(conn) -> None:
    batch = make_batch(conn, 1)
    conn.execute("SELECT * FROM update_csv_worker_heartbeat('w', 'idle')")
    (job,) = claim(conn, "w", 1, batch)
    assert reserve(conn, job, 1000.0) is None
    assert conn.execute("SELECT reserved_cost_usd FROM csv_row_jobs WHERE id = %s", [job["job_id"]]).fetchone() == {
        "reserved_cost_usd": None}


def test_a_paid_call_is_recorded_once_even_for_a_row_no_longer_held(conn) -> None:
    batch = make_batch(conn, 1)
    conn.execute("SELECT * FROM update_csv_worker_heartbeat('w', 'idle')")
    (job,) = claim(conn, "w", 1, batch)
    assert pay(conn, job, 0.04, key="line-1") is True
    assert pay(conn, job, 0.04, key="line-1") is False  # the same answer read again counts once
    conn.execute("SELECT * FROM release_csv_worker_jobs('w', false)")
    assert pay(conn, job, 0.01, key="late") is True  # paid after the worker let go: still paid
    ledger = conn.execute("SELECT call_key, cost_usd, row_number, user_id FROM csv_paid_calls ORDER BY id").fetchall()
    assert [(r["call_key"], float(r["cost_usd"])) for r in ledger] == [("line-1", 0.04), ("late", 0.01)]
    assert conn.execute("SELECT cost_usd::float FROM csv_row_jobs WHERE id = %s", [job["job_id"]]).fetchone() == {
        "cost_usd": pytest.approx(0.05)}
    progress = conn.execute("SELECT * FROM get_csv_batch_progress(%s)", [batch]).fetchone()
    assert float(progress["cost_usd"]) == pytest.approx(0.05)


def test_the_daily_cap_reads_what_was_paid_whatever_happens_to_the_rows(conn) -> None:
    one, two = make_batch(conn, 2, user_id=USER_A), make_batch(conn, 2)
    conn.execute("SELECT * FROM update_csv_worker_heartbeat('w', 'idle')")
    (a,) = claim(conn, "w", 1, one)
    assert reserve(conn, a, 0.3, daily=0.5) is None
    assert pay(conn, a, 0.3, reserved=0.3)
    complete(conn, a)
    # A second row of the batch pays and fails; the owner retries it, redoes the first, then deletes the whole
    # batch: what was paid stays paid.
    (c,) = claim(conn, "w", 1, one)
    assert pay(conn, c, 0.1)
    assert report(conn, "w", [{"job_id": c["job_id"], "attempt": c["attempt"], "status": "failed",
                               "error_message": "x"}]) == {c["job_id"]: True}
    as_user(conn, USER_A)
    assert conn.execute("SELECT retry_csv_batch_rows(%s, NULL) AS n", [one]).fetchone() == {"n": 1}
    assert conn.execute("SELECT request_csv_image_regeneration(%s, ARRAY[%s], NULL, NULL) AS n",
                        [one, a["row_number"]]).fetchone() == {"n": 1}
    conn.execute("DELETE FROM csv_batches WHERE id = %s", [one])
    as_service(conn)
    (b,) = claim(conn, "w", 1, two)
    refused = reserve(conn, b, 0.2, daily=0.5)
    assert refused.startswith("daily budget reached: $0.4000 paid today (UTC)")
    assert status(conn, two)["status"] == "paused"
    assert conn.execute("SELECT count(*) AS n FROM csv_paid_calls").fetchone() == {"n": 2}


def test_the_ledger_is_append_only_for_everyone(conn) -> None:
    batch = make_batch(conn, 1, user_id=USER_A)
    conn.execute("SELECT * FROM update_csv_worker_heartbeat('w', 'idle')")
    (job,) = claim(conn, "w", 1, batch)
    pay(conn, job, 0.1)
    # The owner of the tables (this connection) is stopped by the trigger; the service role by privileges too.
    conn.execute("RESET ROLE")
    for statement in ("UPDATE csv_paid_calls SET cost_usd = 0", "DELETE FROM csv_paid_calls",
                      "TRUNCATE csv_paid_calls"):
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(statement)
        conn.rollback()
    as_user(conn, USER_A)
    assert len(conn.execute("SELECT * FROM csv_paid_calls").fetchall()) == 1  # the owner sees their own calls
    as_user(conn, USER_B)
    assert conn.execute("SELECT * FROM csv_paid_calls").fetchall() == []


def test_a_cancelled_batch_and_a_stopped_pool_leave_the_batch_row_current(conn) -> None:
    batch = make_batch(conn, 4)
    conn.execute("SELECT * FROM update_csv_worker_heartbeat('w', 'idle')")
    first, second = claim(conn, "w", 2, batch)
    conn.execute("UPDATE csv_batches SET updated_at = now() + interval '1 hour' WHERE id = %s", [batch])
    complete(conn, first)  # pending rows left: the count goes to a shard (no fold within the second)
    assert conn.execute("SELECT successful_rows FROM csv_batches WHERE id = %s", [batch]).fetchone() == {
        "successful_rows": 0}
    complete(conn, second)
    conn.execute("SELECT * FROM update_csv_worker_heartbeat('w', 'stopped')")  # the last worker stops
    assert conn.execute("SELECT successful_rows FROM csv_batches WHERE id = %s", [batch]).fetchone() == {
        "successful_rows": 2}
    # A cancelled batch: rows in flight at the cancel add straight to its row when they finish.
    other = make_batch(conn, 4)
    conn.execute("SELECT * FROM update_csv_worker_heartbeat('w', 'idle')")
    (third,) = claim(conn, "w", 1, other, timeout=5)
    as_service(conn)
    conn.execute("SELECT set_csv_batch_state(%s, 'cancel')", [other])
    complete(conn, third)
    assert conn.execute("SELECT successful_rows FROM csv_batches WHERE id = %s", [other]).fetchone() == {
        "successful_rows": 1}


def test_only_the_owner_sets_a_budget(conn) -> None:
    batch = make_batch(conn, 1, user_id=USER_A)
    as_user(conn, USER_B)
    with pytest.raises(psycopg.errors.NoDataFound, match="no such batch"):
        conn.execute("SELECT set_csv_batch_budget(%s, 5)", [batch])
    as_user(conn, USER_A)
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="cannot be negative"):
        conn.execute("SELECT set_csv_batch_budget(%s, -1)", [batch])
    conn.execute("SELECT set_csv_batch_budget(%s, 5)", [batch])
    for call in ("reserve_csv_call_cost(1, 'w', 1, 1, NULL, true)", "record_csv_paid_call(1, 'w', 1, '{}')"):
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(f"SELECT {call}")
        conn.rollback()
        as_user(conn, USER_A)
