"""reserve_csv_row_cost and set_csv_batch_budget on a real PostgreSQL: a reservation counts while its row is in
flight; a row waits when rows in flight hold the rest; the batch pauses (once, with its reason and a WARN line)
when even nothing in flight would leave room; the daily cap the same way; only the owner sets a budget."""

from __future__ import annotations

import psycopg
import pytest
from support.helpers import USER_A, USER_B, as_user, claim, job_counts, make_batch, report


def reserve(conn, job: dict, amount: float, daily: float | None = None, worker: str = "w") -> str | None:
    row = conn.execute("SELECT reserve_csv_row_cost(%s::bigint, %s, %s::integer, %s::numeric, %s::numeric) AS r",
                       [job["job_id"], worker, job["attempt"], amount, daily]).fetchone()
    return row["r"]


def complete(conn, job: dict, cost: float, worker: str = "w") -> None:
    assert report(conn, worker, [{"job_id": job["job_id"], "attempt": job["attempt"], "status": "completed",
                                  "cost_usd": cost}]) == {job["job_id"]: True}


def status(conn, batch) -> dict:
    return conn.execute("SELECT status, pause_reason FROM csv_batches WHERE id = %s", [batch]).fetchone()


def test_a_budget_lets_rows_wait_then_pauses_the_batch(conn) -> None:
    batch = make_batch(conn, 6)
    conn.execute("UPDATE csv_batches SET max_cost_usd = 1.0 WHERE id = %s", [batch])
    conn.execute("SELECT * FROM update_csv_worker_heartbeat('w', 'idle')")
    first, second, third = claim(conn, "w", 3, batch)
    assert reserve(conn, first, 0.4) is None and reserve(conn, second, 0.4) is None
    # 0.8 held: the third would fit on its own, so it waits (back to pending, no retry, no pause).
    assert reserve(conn, third, 0.4).startswith("wait:")
    assert job_counts(conn, batch) == {"claimed": 2, "pending": 4} and status(conn, batch)["status"] != "paused"
    complete(conn, first, 0.3)
    complete(conn, second, 0.3)  # spent 0.6, nothing held
    (again,) = claim(conn, "w", 1, batch)
    assert reserve(conn, again, 0.4) is None  # 0.6 + 0.4 = the budget exactly
    (next_row,) = claim(conn, "w", 1, batch)
    assert reserve(conn, next_row, 0.4).startswith("wait:")
    complete(conn, again, 0.35)  # spent 0.95: no row of 0.4 fits any more
    (last,) = claim(conn, "w", 1, batch)
    refused = reserve(conn, last, 0.4)
    assert refused.startswith("budget reached: $0.9500 spent and $0.0000 held by rows in flight of a $1.0000 budget")
    assert status(conn, batch) == {"status": "paused", "pause_reason": refused}
    assert job_counts(conn, batch) == {"completed": 3, "pending": 3}
    assert conn.execute("SELECT max(retry_count) AS n FROM csv_row_jobs WHERE batch_id = %s", [batch]).fetchone() == {
        "n": 0}
    logged = conn.execute("SELECT log_level, operation FROM csv_processing_logs WHERE batch_id = %s"
                          " AND operation = 'budget_reached'", [batch]).fetchall()
    assert logged == [{"log_level": "WARN", "operation": "budget_reached"}]
    assert claim(conn, "w", 1, batch) == []  # a paused batch hands out nothing
    conn.execute("SELECT set_csv_batch_budget(%s, 5)", [batch])
    conn.execute("SELECT set_csv_batch_state(%s, 'resume')", [batch])
    assert status(conn, batch) == {"status": "processing", "pause_reason": None}


def test_without_a_budget_nothing_is_reserved(conn) -> None:
    batch = make_batch(conn, 1)
    conn.execute("SELECT * FROM update_csv_worker_heartbeat('w', 'idle')")
    (job,) = claim(conn, "w", 1, batch)
    assert reserve(conn, job, 1000.0) is None
    assert conn.execute("SELECT reserved_cost_usd FROM csv_row_jobs WHERE id = %s", [job["job_id"]]).fetchone() == {
        "reserved_cost_usd": None}


def test_the_daily_cap_counts_every_batch_of_the_day(conn) -> None:
    one, two = make_batch(conn, 2), make_batch(conn, 2)
    conn.execute("SELECT * FROM update_csv_worker_heartbeat('w', 'idle')")
    (a,) = claim(conn, "w", 1, one)
    assert reserve(conn, a, 0.3, daily=0.5) is None
    complete(conn, a, 0.3)
    (b,) = claim(conn, "w", 1, two)
    refused = reserve(conn, b, 0.3, daily=0.5)
    assert refused.startswith("daily budget reached: $0.3000 spent today")
    assert status(conn, two)["status"] == "paused" and status(conn, one)["status"] != "paused"


def test_only_the_owner_sets_a_budget(conn) -> None:
    batch = make_batch(conn, 1, user_id=USER_A)
    as_user(conn, USER_B)
    with pytest.raises(psycopg.errors.NoDataFound, match="no such batch"):
        conn.execute("SELECT set_csv_batch_budget(%s, 5)", [batch])
    as_user(conn, USER_A)
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="cannot be negative"):
        conn.execute("SELECT set_csv_batch_budget(%s, -1)", [batch])
    conn.execute("SELECT set_csv_batch_budget(%s, 5)", [batch])
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute("SELECT reserve_csv_row_cost(1, 'w', 1, 1, NULL)")
