"""Migrations and function files: clean on PostgreSQL 15 and the embedded 18, idempotent, safe when run twice at
once, aware of what a Supabase project already provides; functions defined once and re-applied when their file
changes; a database whose functions are newer than the code (a rolling upgrade) used as it is."""

from __future__ import annotations

import os
import re
import threading
import uuid

import psycopg
import pytest
from support.helpers import SUPABASE_STORAGE, apply_supabase_default_privileges

from csvjobs import db
from csvjobs.models import (
    BatchStatus,
    Channel,
    LogLevel,
    ProcessingMode,
    ReviewState,
    RowStatus,
    SubmissionState,
    SubmissionStep,
    WorkerStatus,
)

SYSTEM_PG = os.environ.get("CSVJOBS_TEST_PG15_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
_FUNCTION = re.compile(r"CREATE\s+(?:OR\s+REPLACE\s+)?FUNCTION\s+([\w.]+)\s*\(", re.I)


def test_every_function_is_defined_in_exactly_one_file() -> None:
    """Functions are code: one definition each, in a function file (auth.* in the platform baseline, created only
    where Supabase has not), and none in a numbered migration but those."""
    directory = db.sql_directory()
    where: dict[str, list[str]] = {}
    for path in [*directory.glob("*.sql"), *(directory / "migrations").glob("*.sql")]:
        for name in _FUNCTION.findall(path.read_text(encoding="utf-8")):
            where.setdefault(name.lower(), []).append(str(path.relative_to(directory)))
    assert len(where) > 40
    assert {name: files for name, files in where.items() if len(files) != 1} == {}
    in_migrations = {name for name, (file,) in where.items() if file.startswith("migrations")}
    assert in_migrations == {"auth.uid", "auth.role", "auth.jwt"}
    assert {f"{f.name}.sql" for f in db.function_files()} == {p.name for p in directory.glob("*.sql")}


def test_migrate_applies_every_file_once(empty_database_url: str) -> None:
    with db.connect(empty_database_url) as conn:
        report = db.migrate(conn)
        assert [m.version for m in report.migrations] == [m.version for m in db.migration_files()]
        assert report.functions == list(db.FUNCTION_FILES)
        assert db.pending_migrations(conn) == [] and db.changed_functions(conn) == []
        assert not db.migrate(conn)
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
                report = db.migrate(conn)
                results.append(len(report.migrations) + len(report.functions))
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(results) == [0, 0, len(db.migration_files()) + len(db.FUNCTION_FILES)]


def test_external_database_with_pending_migrations_is_refused(empty_database_url: str) -> None:
    target = db.DatabaseTarget(empty_database_url, embedded=False)
    with db.connect(target) as conn, pytest.raises(db.DatabaseError, match="csvjobs db migrate"):
        db.require_current_schema(conn, target)


def test_a_changed_function_file_is_applied_again_and_only_it(database_url: str) -> None:
    """A function file this code has and the database never had: refused on an external database until
    `db migrate`, which applies that file (and privileges.sql) and nothing else."""
    target = db.DatabaseTarget(database_url, embedded=False)
    with db.connect(target) as conn:
        # The database as an older csvjobs left it: another claim.sql, whose version of one function differed.
        conn.execute(f"UPDATE {db.FUNCTIONS_TABLE} SET checksum = 'older' WHERE file = 'claim'")
        conn.execute("CREATE OR REPLACE FUNCTION csv_reclaim_timed_out_jobs(p_timeout_minutes numeric)"
                     " RETURNS integer LANGUAGE sql AS $$ SELECT 0 $$")
        assert [f.name for f in db.newer_functions(conn)] == ["claim"]
        with pytest.raises(db.DatabaseError, match=r"claim\.sql.*csvjobs db migrate"):
            db.require_current_schema(conn, target)
        report = db.migrate(conn)
        assert report.migrations == [] and report.functions == ["claim", "privileges"]
        body = conn.execute("SELECT prosrc FROM pg_proc WHERE proname = 'csv_reclaim_timed_out_jobs'").fetchone()
        assert body is not None and "claimed_at" in body["prosrc"]
        db.require_current_schema(conn, target)


def test_a_database_with_newer_functions_is_used_as_it_is(database_url: str) -> None:
    """A rolling upgrade: a newer csvjobs migrated the database; this (older) process keeps working, and never
    puts its older functions back on its own."""
    target = db.DatabaseTarget(database_url, embedded=True)
    with db.connect(target) as conn:
        conn.execute(f"INSERT INTO {db.FUNCTIONS_TABLE} (file, checksum) VALUES ('claim', 'newer')")
        conn.execute("COMMENT ON FUNCTION claim_next_csv_row_job(text, uuid, numeric) IS 'newer'")
        assert db.newer_functions(conn) == []
        assert [f.name for f in db.changed_functions(conn)] == ["claim"]
        db.require_current_schema(conn, target)  # even the embedded database is not migrated back
        comment = conn.execute("SELECT obj_description('claim_next_csv_row_job(text, uuid, numeric)'::regprocedure)"
                               " AS c").fetchone()
        assert comment == {"c": "newer"}


def test_a_database_from_before_the_baseline_is_refused_with_a_way_out(empty_database_url: str) -> None:
    with db.connect(empty_database_url) as conn:
        conn.execute(f"CREATE TABLE {db.LEDGER_TABLE} (version integer PRIMARY KEY, name text NOT NULL,"
                     " checksum text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())")
        conn.execute(f"INSERT INTO {db.LEDGER_TABLE} (version, name, checksum) VALUES (1, 'supabase_compat', 'x')")
        with pytest.raises(db.DatabaseError, match=r"before its schema baseline.*new database"):
            db.migrate(conn)


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
                assert len(db.migrate(conn).migrations) == len(db.migration_files())
                assert not db.migrate(conn)
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
    assert allowed("csv_row_jobs", "status") == {s.value for s in RowStatus}
    assert allowed("csv_processing_workers", "status") == {s.value for s in WorkerStatus}
    assert allowed("csv_processing_logs", "log_level") == {s.value for s in LogLevel}
    assert allowed("csv_batches", "processing_mode") == {s.value for s in ProcessingMode}
    assert allowed("csv_openai_submissions", "step") == {s.value for s in SubmissionStep}
    assert allowed("csv_openai_submissions", "state") == {s.value for s in SubmissionState}
    assert allowed("csv_image_versions", "review") == {s.value for s in ReviewState}
    channels = conn.execute("SELECT pg_get_constraintdef(oid) AS def FROM pg_constraint"
                            " WHERE conname = 'csv_batches_channels_check'").fetchone()
    assert channels is not None and set(re.findall(r"'([a-z]+)'", channels["def"])) == {c.value for c in Channel}


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
def test_upgrading_a_database_of_an_earlier_build_gives_the_fresh_schema(server, setup: str) -> None:
    """A database whose functions an earlier build made (a function it did not have, another with another body, a
    trigger missing, a grant Supabase's defaults gave, an older version of every function file in the ledger),
    upgraded by `db migrate`, ends with exactly the catalog of a fresh install: tables, columns, constraints,
    indexes, functions (bodies without comments), triggers, policies and grants."""
    urls = []
    for path in ("fresh", "upgraded"):
        name = f"csvjobs_cat_{path}_{uuid.uuid4().hex[:8]}"
        server.execute(f"CREATE DATABASE {name}")
        urls.append((name, server.url_for(name)))
    try:
        for _name, url in urls:
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
                report = db.migrate(conn)
                assert [m.version for m in report.migrations] == [m.version for m in db.migration_files()]
        with db.connect(urls[1][1]) as conn:
            conn.execute(f"UPDATE {db.FUNCTIONS_TABLE} SET checksum = 'earlier-' || file")
            conn.execute("DROP FUNCTION csv_start_batch(uuid, text)")
            conn.execute("CREATE OR REPLACE FUNCTION csv_batch_has_pending_jobs(p_batch_id uuid) RETURNS boolean"
                         " LANGUAGE sql AS $$ SELECT true $$")
            conn.execute("DROP TRIGGER csv_batches_start_clean ON csv_batches")
            conn.execute("GRANT EXECUTE ON FUNCTION claim_next_csv_row_job(text, uuid, numeric) TO anon")
            report = db.migrate(conn)
            assert report.migrations == [] and report.functions == list(db.FUNCTION_FILES)
        fresh, upgraded = (catalog(url) for _name, url in urls)
        assert fresh["functions"] and fresh["policies"] and fresh["table_grants"] and fresh["triggers"]
        for part in _CATALOG:
            assert upgraded[part] == fresh[part], part
    finally:
        for name, _url in urls:
            server.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def test_decisions_made_before_their_own_table_are_carried_into_it(empty_database_url: str) -> None:
    """012 moves csv_row_jobs.review into csv_row_reviews: a database with decisions keeps every one of them."""
    with db.connect(empty_database_url) as conn:
        for migration in db.migration_files():
            if migration.version >= 12:
                break
            with conn.transaction():
                conn.execute(migration.sql)
        batch = uuid.uuid4()
        conn.execute("INSERT INTO csv_batches (id, user_id, filename, original_filename, total_rows)"
                     " VALUES (%s, %s, 'a.csv', 'a.csv', 3)", [batch, uuid.uuid4()])
        decided = {"lifestyle_emotional": {"state": "approved", "alt_text": "A mug"}}
        conn.execute("INSERT INTO csv_row_jobs (batch_id, row_number, row_data, review) VALUES"
                     " (%s, 1, '{}', %s), (%s, 2, '{}', NULL), (%s, 3, '{}', '{}')",
                     [batch, psycopg.types.json.Jsonb(decided), batch, batch])
        with conn.transaction():
            conn.execute(next(m for m in db.migration_files() if m.version == 12).sql)
        moved = conn.execute("SELECT j.row_number, r.review FROM csv_row_reviews r JOIN csv_row_jobs j"
                             " ON j.id = r.row_job_id AND j.batch_id = r.batch_id").fetchall()
        assert moved == [{"row_number": 1, "review": decided}]
        assert conn.execute("SELECT count(*) AS n FROM information_schema.columns WHERE table_name = 'csv_row_jobs'"
                            " AND column_name = 'review'").fetchone() == {"n": 0}
