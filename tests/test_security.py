"""Row-level security: two users and an anonymous session try to read and change each other's rows."""

from __future__ import annotations

import uuid

import psycopg
import pytest
from helpers import USER_A, USER_B, as_user, claim, make_batch
from psycopg.rows import dict_row


@pytest.fixture
def two_users(conn: psycopg.Connection) -> tuple[uuid.UUID, uuid.UUID]:
    a = make_batch(conn, 3, user_id=USER_A)
    b = make_batch(conn, 2, user_id=USER_B)
    conn.execute("SELECT * FROM update_csv_worker_heartbeat('w', 'idle')")
    claim(conn, "w", limit=1, batch_id=a)
    return a, b


def _session(url: str, user: uuid.UUID | None) -> psycopg.Connection:
    c = psycopg.connect(url, autocommit=True, row_factory=dict_row)
    as_user(c, user)
    return c


def test_a_user_sees_only_their_own_batches_jobs_and_logs(database_url: str, two_users) -> None:
    a, b = two_users
    with _session(database_url, USER_A) as c:
        assert [r["id"] for r in c.execute("SELECT id FROM csv_batches")] == [a]
        assert {r["batch_id"] for r in c.execute("SELECT batch_id FROM csv_row_jobs")} == {a}
        assert {r["batch_id"] for r in c.execute("SELECT batch_id FROM csv_processing_logs")} <= {a}
        assert c.execute("SELECT * FROM get_csv_batch_progress(%s)", [b]).fetchall() == []
        assert len(c.execute("SELECT * FROM get_csv_batch_progress(%s)", [a]).fetchall()) == 1
        # Worker rows are readable by any signed-in user, for monitoring.
        assert len(c.execute("SELECT * FROM csv_processing_workers").fetchall()) == 1


def test_a_user_cannot_change_or_delete_another_users_rows(database_url: str, two_users, conn) -> None:
    _a, b = two_users
    with _session(database_url, USER_A) as c:
        assert c.execute("DELETE FROM csv_batches WHERE id = %s", [b]).rowcount == 0
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            c.execute("UPDATE csv_batches SET status = 'cancelled' WHERE id = %s", [b])
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            c.execute("UPDATE csv_row_jobs SET status = 'completed'")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            c.execute("INSERT INTO csv_processing_logs (message, operation) VALUES ('x', 'y')")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            c.execute("UPDATE csv_processing_workers SET status = 'stopped'")
    assert conn.execute("SELECT count(*) AS n FROM csv_batches").fetchone() == {"n": 2}


def test_a_user_creates_batches_only_for_themselves(database_url: str, two_users) -> None:
    with _session(database_url, USER_A) as c:
        c.execute("INSERT INTO csv_batches (user_id, filename, original_filename) VALUES (%s, 'f', 'f')", [USER_A])
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            c.execute("INSERT INTO csv_batches (user_id, filename, original_filename) VALUES (%s, 'f', 'f')",
                      [USER_B])


def test_users_cannot_call_the_workers_functions(database_url: str, two_users) -> None:
    with _session(database_url, USER_A) as c:
        for sql in ("SELECT * FROM claim_next_csv_row_job('me')",
                    "SELECT * FROM cleanup_stale_csv_workers(0)",
                    "SELECT * FROM update_csv_worker_heartbeat('me')",
                    "SELECT update_csv_row_job_result(1, 'completed')"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege), c.transaction():
                c.execute(sql)


def test_users_cannot_write_jobs_or_queue_batches_directly(database_url: str, two_users) -> None:
    a, _b = two_users
    with _session(database_url, USER_A) as c:
        with pytest.raises(psycopg.errors.InsufficientPrivilege), c.transaction():
            c.execute("INSERT INTO csv_row_jobs (batch_id, row_number, row_data) VALUES (%s, 99, '{}')", [a])
        with pytest.raises(psycopg.errors.InsufficientPrivilege), c.transaction():
            c.execute("SELECT queue_csv_batch(%s, 1)", [a])


def test_anonymous_sees_nothing(database_url: str, two_users) -> None:
    with _session(database_url, None) as c:
        for table in ("csv_batches", "csv_row_jobs", "csv_processing_logs", "csv_processing_workers"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege), c.transaction():
                c.execute(f"SELECT * FROM {table}")
        with pytest.raises(psycopg.errors.InsufficientPrivilege), c.transaction():
            c.execute("SELECT * FROM get_csv_batch_progress(%s)", [two_users[0]])


def test_signed_in_without_a_user_id_sees_nothing(database_url: str, two_users) -> None:
    with psycopg.connect(database_url, autocommit=True, row_factory=dict_row) as c:
        c.execute("SET ROLE authenticated")
        assert c.execute("SELECT * FROM csv_batches").fetchall() == []
        assert c.execute("SELECT * FROM csv_row_jobs").fetchall() == []


def test_deleting_a_batch_deletes_its_jobs_and_logs(database_url: str, two_users, conn) -> None:
    """The owner may delete a batch but not jobs; its jobs go with it, as the foreign key's cascade did."""
    a, b = two_users
    assert conn.execute("SELECT count(*) AS n FROM csv_processing_logs WHERE batch_id = %s", [a]).fetchone() != {"n": 0}
    with _session(database_url, USER_A) as c:
        assert c.execute("DELETE FROM csv_batches WHERE id = %s", [a]).rowcount == 1
    counts = conn.execute("SELECT batch_id, count(*) AS n FROM csv_row_jobs GROUP BY batch_id").fetchall()
    assert [(r["batch_id"], r["n"]) for r in counts] == [(b, 2)]
    assert conn.execute("SELECT count(*) AS n FROM csv_processing_logs WHERE batch_id = %s", [a]).fetchone() == {"n": 0}
