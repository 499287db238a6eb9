"""Operating the database: status, migrations, the embedded server, cron cleanup and the template CSV."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from csvjobs import db
from csvjobs.config import Settings
from csvjobs.errors import CsvJobsError, DatabaseError, InputError
from csvjobs.models import CleanupReport
from csvjobs.queue import queries
from csvjobs.storage.keys import TEMPLATES_BUCKET
from csvjobs.storage.registry import open_storage, probe_storage
from csvjobs.users import resolve_user_id

TEMPLATE_HEADERS = ["country", "product_type", "size", "mpn", "title", "description", "image_url"]
TEMPLATE_ROWS = [
    ["US", "Running shoes", "42", "RS-1042", "Trail Runner", "Lightweight trail running shoe with a grippy sole.",
     ""],
    ["DE", "Coffee mug", "350 ml", "MUG-350-W", "Morning Mug", "Hand-glazed white stoneware mug.",
     ""],  # image_url: a photo URL, or a path beside the CSV such as images/mug.jpg
]


def database_status(settings: Settings) -> dict[str, Any]:
    """Where the database is, whether it answers, and its migrations; starts the embedded server if needed."""
    status: dict[str, Any] = {"embedded": settings.database_url is None, "up": False}
    storage = open_storage(settings)
    status["storage"] = storage.describe()
    try:
        storage.check()
        status["storage_ok"] = True
    except CsvJobsError as exc:
        status.update(storage_ok=False, storage_error=str(exc))
    try:
        target = db.database_target(settings)
    except DatabaseError as exc:
        status.update(location=str(settings.pgdata), error=str(exc))
        return status
    status["location"] = target.describe()
    if target.embedded:
        status["pgdata"] = str(settings.pgdata)
    try:
        conn = db.connect(target, application_name="csvjobs-status")
    except DatabaseError as exc:
        status["error"] = str(exc)
        return status
    with conn:
        status.update(up=True, server_version=f"PostgreSQL {db.server_version(conn)}")
        try:
            if target.embedded:
                db.require_current_schema(conn, target)
            applied = db.applied_migrations(conn)
        except DatabaseError as exc:
            status["error"] = str(exc)
            return status
        status["applied_migrations"] = [m.label for m in db.migration_files() if m.version in applied]
        status["pending_migrations"] = [m.label for m in db.pending_migrations(conn)]
        status["changed_migrations"] = [m.label for m in db.changed_migrations(conn)]
        # Function files `db migrate` would apply: newer here than in the database, or (a database already
        # upgraded by a newer csvjobs) older here.
        status["functions_to_apply"] = [f"{f.name}.sql" for f in db.changed_functions(conn)]
        status["database_is_newer"] = bool(status["functions_to_apply"]) and not db.newer_functions(conn)
    return status


def migrate_database(settings: Settings) -> tuple[db.MigrationReport, str]:
    """Apply pending migrations and changed function files; says what it did and where."""
    target = db.database_target(settings)
    with db.connect(target, application_name="csvjobs-migrate") as conn:
        try:
            report = db.migrate(conn)
        except db.PsycopgError as exc:
            raise DatabaseError(f"migration failed on {target.describe()}: {db.first_line(exc)}") from exc
    return report, target.describe()


def stop_database(settings: Settings) -> str:
    """Stop the embedded server; says what happened."""
    if settings.database_url is not None:
        return "csvjobs uses an external database (CSVJOBS_DATABASE_URL); there is no embedded server to stop"
    if db.stop_embedded_server(settings.pgdata):
        return f"stopped the embedded PostgreSQL in {settings.pgdata}"
    return f"the embedded PostgreSQL in {settings.pgdata} is not running"


def run_cleanup(settings: Settings, timeout_minutes: float) -> CleanupReport:
    """cleanup_stale_csv_workers, for cron."""
    _target, conn = db.open_database(settings, application_name="csvjobs-cleanup")
    with conn:
        return queries.cleanup_stale_workers(conn, timeout_minutes)


def write_template(settings: Settings, output: Path, *, force: bool = False) -> tuple[Path, str | None]:
    """Write the template CSV; also keep a copy in the user's folder of the csv-templates bucket."""
    if output.exists() and not force:
        raise InputError(f"{output} already exists; pass --force to overwrite it or choose another -o path")
    if output.is_dir():
        raise InputError(f"{output} is a directory; give a file name such as {output / 'products.csv'}")
    try:
        with output.open("w", encoding="utf-8", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(TEMPLATE_HEADERS)
            writer.writerows(TEMPLATE_ROWS)
    except OSError as exc:
        raise InputError(f"cannot write {output}: {exc.strerror}") from exc
    # Into the user's own {user_id}/ folder, as the storage policies require of everyone.
    key = f"{resolve_user_id(settings)}/products-template.csv"
    stored = open_storage(settings).put_file(TEMPLATES_BUCKET, key, output)
    return output, stored


def check_storage(settings: Settings) -> tuple[str, list[tuple[str, str]]]:
    """Write, read and delete a probe object in every bucket of the configured storage."""
    storage = open_storage(settings)
    return storage.describe(), probe_storage(storage)
