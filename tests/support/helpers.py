"""Small helpers shared by tests: make batches straight in SQL, read counters, act as a role."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import psycopg

USER_A = uuid.UUID("aaaaaaaa-0000-4000-8000-000000000001")
USER_B = uuid.UUID("bbbbbbbb-0000-4000-8000-000000000002")


def make_batch(
    conn: psycopg.Connection[Any],
    rows: int,
    *,
    user_id: uuid.UUID = USER_A,
    status: str = "queued",
    max_retries: int = 3,
    name: str = "test.csv",
    mode: str = "sync",
) -> uuid.UUID:
    """A batch of `rows` jobs inserted directly (as the superuser), queued by default, in the shape an upload
    writes: row_data is the CSV row as json, product is NULL (every field is a row_data column, named by the
    batch's column_mapping), and no trigger text is stored. Row g is titled "Product g" and its trigger text is
    "US product g"."""
    batch_id = uuid.uuid4()
    mapping = {"preset": "plain", "fields": {f: f for f in _FIELDS},
               "row_data_keys": {f: f for f in _FIELDS}}
    with conn.transaction():
        conn.execute(
            "INSERT INTO csv_batches (id, user_id, filename, original_filename, total_rows, status, csv_headers,"
            " column_mapping, processing_mode) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
            [batch_id, user_id, name, name, rows, status, list(_FIELDS), json.dumps(mapping), mode],
        )
        conn.execute(
            "INSERT INTO csv_row_jobs (batch_id, row_number, row_data, product, max_retries)"
            " SELECT %s, g, json_build_object('title', 'Product ' || g, 'country', 'US',"
            " 'description', 'product ' || g), NULL, %s"
            " FROM generate_series(1, %s) g",
            [batch_id, max_retries, rows],
        )
    return batch_id


_FIELDS = ("title", "country", "description")


def batch_row(conn: psycopg.Connection[Any], batch_id: uuid.UUID) -> dict[str, Any]:
    row = conn.execute("SELECT * FROM csv_batches WHERE id = %s", [batch_id]).fetchone()
    assert row is not None
    return dict(row)


def job_counts(conn: psycopg.Connection[Any], batch_id: uuid.UUID) -> dict[str, int]:
    rows = conn.execute(
        "SELECT status, count(*) AS n FROM csv_row_jobs WHERE batch_id = %s GROUP BY status", [batch_id]
    ).fetchall()
    return {r["status"]: r["n"] for r in rows}


def as_service(conn: psycopg.Connection[Any]) -> None:
    conn.execute("SELECT set_config('role', 'service_role', false)")


# A job row's review (its decisions live in csv_row_reviews), as a column of "SELECT ... FROM csv_row_jobs".
REVIEW_OF_ROW = "(SELECT r.review FROM csv_row_reviews r WHERE r.row_job_id = csv_row_jobs.id) AS review"


def as_user(conn: psycopg.Connection[Any], user_id: uuid.UUID | None) -> None:
    """Switch a connection to a signed-in user (or anon for None) for the rest of its session."""
    if user_id is None:
        conn.execute("SELECT set_config('role', 'anon', false), set_config('request.jwt.claims', '', false)")
    else:
        claims = json.dumps({"sub": str(user_id), "role": "authenticated"})
        conn.execute(
            "SELECT set_config('role', 'authenticated', false), set_config('request.jwt.claims', %s, false)",
            [claims],
        )


def claim(conn: psycopg.Connection[Any], worker: str, limit: int = 1, batch_id: uuid.UUID | None = None,
          timeout: float = 5) -> list[dict[str, Any]]:
    return conn.execute(
        "SELECT * FROM claim_csv_row_jobs(%s, %s, %s, %s)", [worker, batch_id, timeout, limit]
    ).fetchall()


def report(conn: psycopg.Connection[Any], worker: str, results: list[dict[str, Any]]) -> dict[int, bool]:
    rows = conn.execute(
        "SELECT job_id, applied FROM update_csv_row_job_results(%s, %s::jsonb)", [worker, json.dumps(results)]
    ).fetchall()
    return {r["job_id"]: r["applied"] for r in rows}


SUPABASE_ROLES = ("anon", "authenticated", "service_role")


def apply_supabase_default_privileges(conn: psycopg.Connection[Any]) -> None:
    """What a Supabase project does to its public schema before csvjobs arrives: the three API roles, and default
    privileges that grant them ALL on every table, function and sequence the migrating role creates there."""
    conn.execute("""
        DO $$ BEGIN
            IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'anon') THEN
                CREATE ROLE anon NOLOGIN NOINHERIT; END IF;
            IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'authenticated') THEN
                CREATE ROLE authenticated NOLOGIN NOINHERIT; END IF;
            IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'service_role') THEN
                CREATE ROLE service_role NOLOGIN NOINHERIT BYPASSRLS; END IF;
        END $$""")
    conn.execute("GRANT USAGE ON SCHEMA public TO anon, authenticated, service_role")
    for kind in ("TABLES", "FUNCTIONS", "SEQUENCES"):
        conn.execute(f"ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON {kind}"
                     " TO anon, authenticated, service_role")


def cli(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run `python -m csvjobs ARGS` as a user would, in env, and capture what it prints."""
    return subprocess.run([sys.executable, "-m", "csvjobs", *args], env=env, text=True, capture_output=True,
                          timeout=timeout)


def upload(env: dict[str, str], path: Path, *args: str) -> dict[str, Any]:
    """`csvjobs upload PATH --json ARGS` as a user runs it; its --json report (the upload must succeed)."""
    result = cli(env, "upload", str(path), "--json", *args)
    assert result.returncode == 0, result.stderr
    report: dict[str, Any] = json.loads(result.stdout)
    return report


# The real shop exports, beside the repository (never copied into it); tests that read them skip without them.
REAL_DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "real"

# Supabase Storage's tables and helper, as a Supabase project has them (trimmed to what csvjobs touches).
SUPABASE_STORAGE = """
CREATE SCHEMA storage;
CREATE TABLE storage.buckets (id text PRIMARY KEY, name text NOT NULL, public boolean DEFAULT false,
                              file_size_limit bigint, allowed_mime_types text[]);
CREATE TABLE storage.objects (id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
                              bucket_id text REFERENCES storage.buckets (id), name text, owner uuid);
ALTER TABLE storage.objects ENABLE ROW LEVEL SECURITY;
CREATE FUNCTION storage.foldername(name text) RETURNS text[] LANGUAGE plpgsql AS $f$
DECLARE _parts text[];
BEGIN
    SELECT string_to_array(name, '/') INTO _parts;
    RETURN _parts[1:array_length(_parts, 1) - 1];
END $f$;
GRANT USAGE ON SCHEMA storage TO anon, authenticated, service_role;
GRANT ALL ON storage.objects, storage.buckets TO anon, authenticated, service_role;
"""


def completed_batch(conn: psycopg.Connection[Any], rows: int, *, user_id: uuid.UUID = USER_A) -> uuid.UUID:
    """A completed batch of `rows` products with two images each, written straight in SQL (the files need not
    exist to be decided on), for the review page's tests."""
    batch = uuid.uuid4()
    prefix = f"csv-images/{user_id}/{batch}"
    with conn.transaction():
        conn.execute("INSERT INTO csv_batches (id, user_id, filename, original_filename, total_rows, status,"
                     " column_mapping) VALUES (%s, %s, 'typed.csv', 'typed.csv', %s, 'processing', %s)",
                     [batch, user_id, rows, json.dumps({"fields": {"title": "title"}, "row_data_keys": {}})])
        conn.execute(
            "INSERT INTO csv_row_jobs (batch_id, row_number, row_data, status, completed_at, generated_images)"
            " SELECT %s, g, json_build_object('title', 'Product ' || g), 'completed', now(), jsonb_build_array("
            " jsonb_build_object('style', 'lifestyle_emotional', 'storage_path', %s || '/' || g || '/a.png'),"
            " jsonb_build_object('style', 'single_white_background', 'storage_path', %s || '/' || g || '/b.png'))"
            " FROM generate_series(1, %s) g", [batch, prefix, prefix, rows])
    return batch
