"""Migrations: clean on PostgreSQL 15 and the embedded 18, idempotent, safe when run twice at once, and aware
of what a Supabase project already provides."""

from __future__ import annotations

import json
import os
import re
import threading
import uuid

import psycopg
import pytest

from csvjobs import db
from csvjobs.models import BatchStatus, JobStatus, LogLevel, WorkerStatus

SYSTEM_PG = os.environ.get("CSVJOBS_TEST_PG15_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def test_migrate_applies_every_file_once(empty_database_url: str) -> None:
    with db.connect(empty_database_url) as conn:
        applied = db.migrate(conn)
        assert [m.version for m in applied] == [m.version for m in db.migration_files()]
        assert db.pending_migrations(conn) == []
        assert db.migrate(conn) == []
        ledger = conn.execute(f"SELECT version, checksum FROM {db.LEDGER_TABLE} ORDER BY version").fetchall()
        assert [(r["version"], r["checksum"]) for r in ledger] == [
            (m.version, m.checksum) for m in db.migration_files()
        ]


def test_two_migrations_at_once_are_safe(empty_database_url: str) -> None:
    errors: list[BaseException] = []
    results: list[int] = []

    def run() -> None:
        try:
            with db.connect(empty_database_url) as conn:
                results.append(len(db.migrate(conn)))
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(results) == [0, 0, len(db.migration_files())]


def test_external_database_with_pending_migrations_is_refused(empty_database_url: str) -> None:
    target = db.DatabaseTarget(empty_database_url, embedded=False)
    with db.connect(target) as conn, pytest.raises(db.DatabaseError, match="csvjobs db migrate"):
        db.require_current_schema(conn, target)


def test_migrations_apply_on_system_postgresql_15() -> None:
    try:
        admin = psycopg.connect(SYSTEM_PG, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError:
        pytest.skip("no PostgreSQL server on 127.0.0.1:5432")
    name = f"csvjobs_pg15_{uuid.uuid4().hex[:8]}"
    with admin:
        version = admin.execute("SHOW server_version_num").fetchone()
        assert version is not None and int(version[0]) >= 150000
        admin.execute(f"CREATE DATABASE {name}")
        try:
            url = psycopg.conninfo.make_conninfo(SYSTEM_PG, dbname=name)
            with db.connect(url) as conn:
                assert len(db.migrate(conn)) == len(db.migration_files())
                assert db.migrate(conn) == []
        finally:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def test_status_words_match_the_python_enums(conn: psycopg.Connection) -> None:
    def allowed(table: str, column: str) -> set[str]:
        rows = conn.execute(
            "SELECT pg_get_constraintdef(c.oid) AS def FROM pg_constraint c"
            " WHERE c.conrelid = %s::regclass AND c.contype = 'c'", [table]
        ).fetchall()
        found = [
            set(re.findall(r"'([A-Za-z_]+)'::text", row["def"]))
            for row in rows
            if f"({column} = ANY" in row["def"]
        ]
        assert found, f"no CHECK constraint on {table}.{column}"
        return max(found, key=len)  # the status list, not a constraint that merely mentions two of them

    assert allowed("csv_batches", "status") == {s.value for s in BatchStatus}
    assert allowed("csv_row_jobs", "status") == {s.value for s in JobStatus}
    assert allowed("csv_processing_workers", "status") == {s.value for s in WorkerStatus}
    assert allowed("csv_processing_logs", "log_level") == {s.value for s in LogLevel}


def test_supabase_objects_are_reused_and_extended(empty_database_url: str) -> None:
    """On a Supabase-shaped database: existing auth.uid() is kept, buckets and realtime membership are added."""
    with psycopg.connect(empty_database_url, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA auth")
        conn.execute("CREATE FUNCTION auth.uid() RETURNS uuid LANGUAGE sql STABLE AS"
                     " $$ SELECT '00000000-0000-4000-8000-00000000000f'::uuid $$")
        conn.execute("CREATE SCHEMA storage")
        conn.execute("CREATE TABLE storage.buckets (id text PRIMARY KEY, name text, public boolean)")
        conn.execute("CREATE TABLE storage.objects (id bigserial, bucket_id text, name text)")
        conn.execute("CREATE FUNCTION storage.foldername(name text) RETURNS text[] LANGUAGE sql"
                     " AS $$ SELECT string_to_array(name, '/') $$")
        conn.execute("CREATE PUBLICATION supabase_realtime")
        try:
            with db.connect(empty_database_url) as c:
                db.migrate(c)
            uid = conn.execute("SELECT auth.uid()").fetchone()
            assert uid is not None and str(uid[0]) == "00000000-0000-4000-8000-00000000000f"
            buckets = {r[0]: r[1] for r in conn.execute("SELECT id, public FROM storage.buckets")}
            assert buckets == {"csv-uploads": False, "csv-templates": True, "csv-images": False}
            policies = {r[0] for r in conn.execute(
                "SELECT policyname FROM pg_policies WHERE schemaname = 'storage'")}
            assert "csvjobs uploads: own folder" in policies
            published = {r[0] for r in conn.execute(
                "SELECT tablename FROM pg_publication_tables WHERE pubname = 'supabase_realtime'")}
            assert {"csv_batches", "csv_row_jobs"} <= published
        finally:
            conn.execute("DROP PUBLICATION IF EXISTS supabase_realtime")


def test_auth_functions_read_request_claims_like_supabase(conn: psycopg.Connection) -> None:
    user = uuid.uuid4()
    with conn.transaction():
        conn.execute("SELECT set_config('request.jwt.claims', %s, true)",
                     [f'{{"sub": "{user}", "role": "authenticated", "email": "a@example.com"}}'])
        row = conn.execute("SELECT auth.uid() AS uid, auth.role() AS role, auth.jwt() ->> 'email' AS email").fetchone()
    assert row == {"uid": user, "role": "authenticated", "email": "a@example.com"}
    row = conn.execute("SELECT auth.uid() AS uid").fetchone()
    assert row == {"uid": None}


def test_jobs_written_before_the_lean_row_jobs_migration_keep_their_product(empty_database_url: str) -> None:
    """009 turns row_data into json and product into what row_data does not say; jobs stored before it (every
    field in product, row_data as jsonb) must come out of a claim exactly as before."""
    earlier = [m for m in db.migration_files() if m.version < 9]
    with db.connect(empty_database_url) as conn:
        conn.execute(f"CREATE TABLE {db.LEDGER_TABLE} (version integer PRIMARY KEY, name text NOT NULL,"
                     " checksum text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())")
        for migration in earlier:
            conn.execute(migration.sql)
            conn.execute(f"INSERT INTO {db.LEDGER_TABLE} (version, name, checksum) VALUES (%s, %s, %s)",
                         [migration.version, migration.name, migration.checksum])
        batch = uuid.uuid4()
        product = {"country": "US", "product_type": "Mug", "size": "", "mpn": "M1", "description": "Big",
                   "title": "Mug"}
        conn.execute("INSERT INTO csv_batches (id, user_id, filename, original_filename, status)"
                     " VALUES (%s, gen_random_uuid(), 'f', 'f', 'queued')", [batch])
        conn.execute("INSERT INTO csv_row_jobs (batch_id, row_number, row_data, product) VALUES (%s, 1, %s, %s)",
                     [batch, json.dumps({"Name": "Mug", "Body": "<b>Big</b>"}), json.dumps(product)])
        assert [m.version for m in db.migrate(conn)] == [m.version for m in db.migration_files()][len(earlier):]
        conn.execute("SELECT * FROM update_csv_worker_heartbeat('w', 'idle')")
        (job,) = conn.execute("SELECT * FROM claim_csv_row_jobs('w', NULL, 5, 5)").fetchall()
        assert job["product"] == product | {"image_url": ""}  # a field added since (012)
        assert job["row_data"] == {"Name": "Mug", "Body": "<b>Big</b>"}
        conn.execute("DELETE FROM csv_batches WHERE id = %s", [batch])
        assert conn.execute("SELECT count(*) AS n FROM csv_row_jobs").fetchone() == {"n": 0}


# --- upgraded == fresh -------------------------------------------------------------------------------------------

_CATALOG = {
    "tables": "SELECT c.relname, c.relkind, c.relrowsecurity, c.relforcerowsecurity, c.reloptions::text"
              " FROM pg_class c WHERE c.relnamespace = 'public'::regnamespace",
    "columns": "SELECT c.relname, a.attnum, a.attname, format_type(a.atttypid, a.atttypmod) AS type, a.attnotnull,"
               " pg_get_expr(d.adbin, d.adrelid) AS default, a.attidentity, col_description(c.oid, a.attnum)"
               " AS comment FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid"
               " LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum"
               " WHERE c.relnamespace = 'public'::regnamespace AND c.relkind = 'r' AND a.attnum > 0"
               " AND NOT a.attisdropped",
    "constraints": "SELECT conrelid::regclass::text AS rel, conname, pg_get_constraintdef(oid) AS def"
                   " FROM pg_constraint WHERE connamespace = 'public'::regnamespace",
    "indexes": "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public'",
    "sequences": "SELECT seqrelid::regclass::text AS seq, seqstart, seqincrement, seqcache FROM pg_sequence",
    "triggers": "SELECT tgrelid::regclass::text AS rel, tgname, pg_get_triggerdef(oid) AS def FROM pg_trigger"
                " WHERE NOT tgisinternal",
    "functions": "SELECT p.oid::regprocedure::text AS signature, pg_get_function_result(p.oid) AS result,"
                 " pg_get_function_arguments(p.oid) AS arguments, l.lanname, p.prosecdef, p.provolatile,"
                 " p.proconfig::text, p.prosrc FROM pg_proc p JOIN pg_language l ON l.oid = p.prolang"
                 " WHERE p.pronamespace IN ('public'::regnamespace, 'auth'::regnamespace)",
    "policies": "SELECT schemaname, tablename, policyname, permissive, roles::text, cmd, qual, with_check"
                " FROM pg_policies WHERE schemaname IN ('public', 'storage')",
    "table_grants": "SELECT c.relname, acl::text FROM pg_class c, unnest(c.relacl) acl"
                    " WHERE c.relnamespace = 'public'::regnamespace",
    "column_grants": "SELECT c.relname, a.attname, acl::text FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid,"
                     " unnest(a.attacl) acl WHERE c.relnamespace = 'public'::regnamespace",
    "function_grants": "SELECT p.oid::regprocedure::text, acl::text FROM pg_proc p, unnest(p.proacl) acl"
                       " WHERE p.pronamespace = 'public'::regnamespace",
    "storage": "SELECT id, name, public, file_size_limit, allowed_mime_types FROM storage.buckets",
    "publication": "SELECT tablename FROM pg_publication_tables WHERE pubname = 'supabase_realtime'",
}


def _normalised_body(source: str) -> str:
    """A function body without comments or layout: schema files may word comments differently from history."""
    return " ".join(re.sub(r"--[^\n]*", "", source).split())


def catalog(url: str) -> dict[str, list[tuple]]:
    """Everything csvjobs defines, as sorted rows, comparable between two databases."""
    snapshot: dict[str, list[tuple]] = {}
    with psycopg.connect(url, autocommit=True) as conn:
        for name, sql in _CATALOG.items():
            rows = [list(row) for row in conn.execute(sql).fetchall()]
            if name == "functions":
                for row in rows:
                    row[-1] = _normalised_body(row[-1])
            snapshot[name] = sorted(tuple(str(v) for v in row) for row in rows)
    return snapshot


@pytest.mark.parametrize("setup", ["plain", "supabase"])
def test_upgrading_through_the_migrations_gives_the_fresh_schema(server, setup: str) -> None:
    """A database made by an earlier build and upgraded through sql/migrations/ ends with exactly the catalog of a
    fresh install from the schema files: tables, columns, constraints, indexes, functions (bodies without
    comments), triggers, policies and grants."""
    from helpers import apply_supabase_default_privileges
    from test_security import SUPABASE_STORAGE

    urls = []
    for path in ("fresh", "upgraded"):
        name = f"csvjobs_cat_{path}_{uuid.uuid4().hex[:8]}"
        server.execute(f"CREATE DATABASE {name}")
        urls.append((name, server.url_for(name)))
    try:
        for (_name, url), install in zip(urls, (True, False), strict=True):
            with psycopg.connect(url, autocommit=True) as admin:
                admin.execute("CREATE SCHEMA storage")  # so that the storage buckets and policies compare too
                admin.execute("CREATE TABLE storage.buckets (id text PRIMARY KEY, name text, public boolean,"
                              " file_size_limit bigint, allowed_mime_types text[])")
                if setup == "supabase":
                    apply_supabase_default_privileges(admin)
                    admin.execute(SUPABASE_STORAGE.replace("CREATE SCHEMA storage;", "").replace(
                        "CREATE TABLE storage.buckets (id text PRIMARY KEY, name text NOT NULL, public boolean"
                        " DEFAULT false,\n                              file_size_limit bigint, allowed_mime_types"
                        " text[]);", ""))
            with db.connect(url) as conn:
                applied = db.migrate(conn, install_schema=install)
                assert [m.version for m in applied] == [m.version for m in db.migration_files()]
                assert db.pending_migrations(conn) == []
        fresh, upgraded = (catalog(url) for _name, url in urls)
        assert fresh["functions"] and fresh["policies"] and fresh["table_grants"]
        for part in _CATALOG:
            assert upgraded[part] == fresh[part], part
    finally:
        for name, _url in urls:
            server.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
