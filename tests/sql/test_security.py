"""Row-level security: two users and an anonymous session try to read and change each other's rows."""

from __future__ import annotations

import json
import uuid

import psycopg
import pytest
from psycopg.rows import dict_row
from support.helpers import (
    SUPABASE_STORAGE,
    USER_A,
    USER_B,
    apply_supabase_default_privileges,
    as_service,
    as_user,
    claim,
    make_batch,
)

from csvjobs import db


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
        logged = {r["batch_id"] for r in c.execute("SELECT batch_id FROM csv_processing_logs")}
        assert logged == {a}  # the claim wrote 'batch processing started' for a; nothing of b shows
        assert c.execute("SELECT * FROM get_csv_batch_progress(%s)", [b]).fetchall() == []
        assert len(c.execute("SELECT * FROM get_csv_batch_progress(%s)", [a]).fetchall()) == 1
        # Worker rows are readable by anyone, for monitoring (the health columns; see the tests below).
        assert len(c.execute("SELECT instance_id FROM csv_processing_workers").fetchall()) == 1


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
        for table in ("csv_batches", "csv_row_jobs", "csv_processing_logs", "csv_rate_limits",
                      "csvjobs_schema_migrations"):
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


# --- worker health: public columns, private owners ---------------------------------------------------------------

HEALTH_QUERY = ("SELECT instance_id, status, last_heartbeat, current_job_count, total_jobs_processed"
                " FROM csv_processing_workers WHERE last_heartbeat > now() - interval '5 minutes'")


def test_anyone_can_run_the_worker_health_query_but_only_owners_see_whom_a_worker_serves(
    database_url: str, two_users, conn
) -> None:
    a, _b = two_users
    conn.execute("SELECT * FROM update_csv_worker_heartbeat('dedicated-a', 'processing', 1, 5, 0, 2, %s, %s)",
                 [USER_A, a])
    for user in (None, USER_A, USER_B):
        with _session(database_url, user) as c:
            rows = c.execute(HEALTH_QUERY).fetchall()
            assert {r["instance_id"] for r in rows} == {"w", "dedicated-a"}
            for column in ("user_id", "batch_id", "*"):
                with pytest.raises(psycopg.errors.InsufficientPrivilege), c.transaction():
                    c.execute(f"SELECT {column} FROM csv_processing_workers")
            seen = {r["instance_id"]: r for r in c.execute("SELECT * FROM get_csv_workers(false)")}
            owner_view = user == USER_A
            assert seen["dedicated-a"]["batch_id"] == (a if owner_view else None)
            assert seen["dedicated-a"]["user_id"] == (USER_A if owner_view else None)
            assert seen["dedicated-a"]["total_jobs_processed"] == 5
    service = {r["instance_id"]: r for r in conn.execute("SELECT * FROM get_csv_workers(true)")}
    assert service["dedicated-a"]["batch_id"] == a


# --- what users can write ------------------------------------------------------------------------------------------


def test_a_users_new_batch_starts_clean_whatever_the_insert_says(database_url: str, conn) -> None:
    with _session(database_url, USER_A) as c:
        row = c.execute(
            "INSERT INTO csv_batches (user_id, filename, original_filename, status, total_rows, processed_rows,"
            " successful_rows, failed_rows, cost_usd, started_at, completed_at)"
            " VALUES (%s, 'f', 'f', 'completed', 10, 10, 10, 0, -1000, now(), now()) RETURNING id",
            [USER_A]).fetchone()
        assert row is not None
        # The contract's Active Batches query divides by total_rows; it must not meet a 0-row queued batch.
        c.execute("INSERT INTO csv_batches (user_id, filename, original_filename, status) VALUES (%s, 'g', 'g',"
                  " 'queued')", [USER_A])
    stored = conn.execute("SELECT status, total_rows, processed_rows, successful_rows, cost_usd, started_at,"
                          " completed_at FROM csv_batches WHERE id = %s", [row["id"]]).fetchone()
    assert stored == {"status": "uploaded", "total_rows": 0, "processed_rows": 0, "successful_rows": 0,
                      "cost_usd": 0, "started_at": None, "completed_at": None}
    assert conn.execute("SELECT count(*) AS n FROM csv_batches WHERE status <> 'uploaded'").fetchone() == {"n": 0}
    # The service role (the upload, after the rows are written) still sets what it must.
    with conn.transaction():
        as_service(conn)
        conn.execute("INSERT INTO csv_batches (user_id, filename, original_filename, status, total_rows)"
                     " VALUES (%s, 'h', 'h', 'queued', 3)", [USER_A])
        conn.execute("RESET ROLE")
    assert conn.execute("SELECT status FROM csv_batches WHERE filename = 'h'").fetchone() == {"status": "queued"}


def test_a_claim_that_says_service_role_does_not_make_a_user_the_service_role(database_url: str, two_users,
                                                                              conn) -> None:
    _a, b = two_users
    with psycopg.connect(database_url, autocommit=True, row_factory=dict_row) as c:
        c.execute("SELECT set_config('role', 'authenticated', false), set_config('request.jwt.claims', %s, false)",
                  [json.dumps({"sub": str(USER_A), "role": "service_role"})])
        for sql in ("SELECT set_csv_batch_state(%s, 'pause')", "SELECT retry_csv_batch_rows(%s)"):
            with pytest.raises(psycopg.errors.NoDataFound, match="no such batch"), c.transaction():
                c.execute(sql, [b])
    assert conn.execute("SELECT status FROM csv_batches WHERE id = %s", [b]).fetchone() == {"status": "queued"}


def test_negative_timeouts_are_refused_and_steal_nothing(conn) -> None:
    batch = make_batch(conn, 2)
    as_service(conn)
    conn.execute("SELECT * FROM update_csv_worker_heartbeat('live', 'processing')")
    held = claim(conn, "live", limit=1, batch_id=batch)
    for sql in ("SELECT * FROM claim_next_csv_row_job('thief', NULL, -10)",
                "SELECT * FROM claim_csv_row_jobs('thief', NULL, -10, 5)",
                "SELECT * FROM cleanup_stale_csv_workers(-10)",
                "SELECT * FROM cleanup_stale_csv_workers(NULL)"):
        with pytest.raises(psycopg.errors.InvalidParameterValue, match="zero or more minutes"), conn.transaction():
            conn.execute(sql)
    row = conn.execute("SELECT claimed_by, retry_count FROM csv_row_jobs WHERE id = %s",
                       [held[0]["job_id"]]).fetchone()
    assert row == {"claimed_by": "live", "retry_count": 0}


# --- a Supabase project's default privileges -----------------------------------------------------------------------


def _csvjobs_tables(conn) -> list[dict]:
    return conn.execute(
        "SELECT c.oid::regclass::text AS name, c.relrowsecurity AS rls FROM pg_class c"
        " WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p', 'v', 'm')"
        " AND (c.relname LIKE 'csv%%')").fetchall()


def test_default_privileges_leave_nothing_open_to_anon_or_authenticated(conn) -> None:
    """The template every test uses was given Supabase's default privileges before migrating (conftest)."""
    tables = _csvjobs_tables(conn)
    assert {"csv_batches", "csv_row_jobs", "csv_processing_workers", "csv_processing_logs", "csv_rate_limits",
            "csv_image_versions", "csv_openai_submissions", "csvjobs_schema_migrations"} <= {t["name"] for t in tables}
    for role in ("anon", "authenticated", "service_role"):
        for table in tables:
            if role != "service_role" and not table["rls"]:
                assert not conn.execute(
                    "SELECT has_table_privilege(%s, %s, 'SELECT, INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES,"
                    " TRIGGER') AS p", [role, table["name"]]).fetchone()["p"], (role, table)
            assert not conn.execute("SELECT has_table_privilege(%s, %s, 'TRUNCATE') AS p",
                                    [role, table["name"]]).fetchone()["p"], (role, table)
    assert all(t["rls"] for t in tables), tables
    sequences = conn.execute("SELECT c.oid::regclass::text AS name FROM pg_class c WHERE c.relkind = 'S'"
                             " AND c.relnamespace = 'public'::regnamespace").fetchall()
    assert {s["name"] for s in sequences} >= {"csv_row_jobs_id_seq", "csv_processing_logs_id_seq"}
    for role in ("anon", "authenticated"):
        for seq in sequences:
            assert not conn.execute("SELECT has_sequence_privilege(%s, %s, 'USAGE, UPDATE, SELECT') AS p",
                                    [role, seq["name"]]).fetchone()["p"], (role, seq)
    callable_by = {
        role: {r["proname"] for r in conn.execute(
            "SELECT p.proname FROM pg_proc p WHERE p.pronamespace = 'public'::regnamespace"
            " AND has_function_privilege(%s, p.oid, 'EXECUTE')", [role])}
        for role in ("anon", "authenticated")}
    assert callable_by["anon"] == {"get_csv_workers", "csv_caller_is_service"}
    assert callable_by["authenticated"] == {"get_csv_workers", "csv_caller_is_service", "get_csv_batch_progress",
                                            "retry_csv_batch_rows", "set_csv_batch_state", "csv_row_job_product",
                                            "review_csv_images", "request_csv_image_regeneration",
                                            "set_csv_batch_budget", "set_csv_image_alt_text",
                                            "restore_csv_image_version", "redo_csv_placeholder_images",
                                            "approve_csv_unflagged_images", "csv_row_needs_eyes",
                                            "csv_images_need_eyes", "csv_redone_rows"}


def test_anon_cannot_touch_the_ledger_or_the_sequences(database_url: str, conn) -> None:
    ledger = conn.execute("SELECT count(*) AS n FROM csvjobs_schema_migrations").fetchone()
    with _session(database_url, None) as c:
        for sql in ("DELETE FROM csvjobs_schema_migrations", "UPDATE csvjobs_schema_migrations SET checksum = 'x'",
                    "TRUNCATE csvjobs_schema_migrations", "TRUNCATE csv_batches",
                    "SELECT setval('csv_row_jobs_id_seq', 9223372036854775807)",
                    "SELECT setval('csv_processing_logs_id_seq', 9223372036854775807)"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege), c.transaction():
                c.execute(sql)
    with _session(database_url, USER_A) as c:
        for sql in ("DELETE FROM csvjobs_schema_migrations", "TRUNCATE csv_row_jobs",
                    "SELECT setval('csv_row_jobs_id_seq', 9223372036854775807)"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege), c.transaction():
                c.execute(sql)
    assert conn.execute("SELECT count(*) AS n FROM csvjobs_schema_migrations").fetchone() == ledger




def test_templates_are_uploaded_only_into_the_users_own_folder(empty_database_url: str) -> None:
    with psycopg.connect(empty_database_url, autocommit=True, row_factory=dict_row) as admin:
        apply_supabase_default_privileges(admin)
        admin.execute(SUPABASE_STORAGE)
    with db.connect(empty_database_url) as c:
        db.migrate(c)
    with _session(empty_database_url, USER_A) as c:
        c.execute("INSERT INTO storage.objects (bucket_id, name) VALUES ('csv-templates', %s)",
                  [f"{USER_A}/products.csv"])
        for name in (f"{USER_B}/products.csv", "products.csv", f"x/{USER_A}/products.csv"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege), c.transaction():
                c.execute("INSERT INTO storage.objects (bucket_id, name) VALUES ('csv-templates', %s)", [name])
    with _session(empty_database_url, None) as c:
        assert len(c.execute("SELECT name FROM storage.objects WHERE bucket_id = 'csv-templates'").fetchall()) == 1
    with psycopg.connect(empty_database_url, row_factory=dict_row) as admin:
        bucket = admin.execute("SELECT public, file_size_limit, allowed_mime_types FROM storage.buckets"
                               " WHERE id = 'csv-templates'").fetchone()
    # The public bucket takes CSV files of at most 10 MiB only (Supabase Storage enforces both on upload).
    assert bucket == {"public": True, "file_size_limit": 10 * 1024 * 1024,
                      "allowed_mime_types": ["text/csv", "text/plain", "application/csv"]}

