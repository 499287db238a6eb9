"""The database and storage groups: db status, migrate and stop; storage check."""

from __future__ import annotations

import typer
from rich.text import Text

from csvjobs.cli.common import (
    JsonOption,
    _print_json,
    _settings,
    db_app,
    err,
    out,
    storage_app,
)

# --- database -------------------------------------------------------------------------------------------------


@db_app.command("status")
def db_status(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """Say where the database is, whether it is up, and which migrations are applied.

    Example: csvjobs db status
    """
    from csvjobs.operate.maintenance import database_status

    status = database_status(_settings(ctx))
    if as_json:
        _print_json(status)
        return
    out.print(f"database: {status['location']} ({'embedded' if status['embedded'] else 'external'})")
    out.print(f"up: {'yes' if status['up'] else 'no'}" + (f" ({status['server_version']})" if status["up"] else ""))
    if status["up"] and "pending_migrations" in status:
        pending = status["pending_migrations"]
        out.print(f"migrations: {len(status['applied_migrations'])} applied, {len(pending)} pending")
        if pending:
            out.print("pending: " + ", ".join(pending) + " (run `csvjobs db migrate`)")
        if status["changed_migrations"]:
            err.print(Text("changed since applied (this database was made by another build of csvjobs; recreate "
                           "it): " + ", ".join(status["changed_migrations"]), style="yellow"))
        if status["functions_to_apply"]:
            newer = status["database_is_newer"]
            out.print(("functions: the database's are newer than this csvjobs (" if newer else
                       "functions to apply: (") + ", ".join(status["functions_to_apply"]) + ")"
                      + ("" if newer else " (run `csvjobs db migrate`)"))
    out.print(f"storage: {status['storage']} ({'ok' if status['storage_ok'] else 'NOT usable'})")
    if not status["storage_ok"]:
        err.print(Text(str(status["storage_error"]), style="red"))
    if status.get("error"):
        err.print(Text(str(status["error"]), style="red"))
    if status.get("error") or not status["storage_ok"]:
        raise typer.Exit(1)


@db_app.command("migrate")
def db_migrate(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """Apply pending SQL migrations and changed function files (safe to run again, or twice at once).

    Example: csvjobs db migrate
    """
    from csvjobs.operate.maintenance import migrate_database

    report, location = migrate_database(_settings(ctx))
    migrations = [m.label for m in report.migrations]
    if as_json:
        _print_json({"database": location, "applied": migrations, "functions": report.functions})
        return
    if migrations:
        out.print(f"applied {len(migrations)} migration(s) to {location}: " + ", ".join(migrations))
    if report.functions:
        out.print(f"applied {len(report.functions)} function file(s) to {location}: "
                  + ", ".join(f"{name}.sql" for name in report.functions))
    if not report:
        out.print(f"{location}: already up to date")


@db_app.command("stop")
def db_stop(ctx: typer.Context) -> None:
    """Stop the embedded PostgreSQL server (it starts again on the next command).

    Example: csvjobs db stop
    """
    from csvjobs.operate.maintenance import stop_database

    out.print(stop_database(_settings(ctx)))


@storage_app.command("check")
def storage_check(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """Write, read and delete a probe object in every bucket and say what works.

    Example: CSVJOBS_STORAGE=s3 CSVJOBS_S3_ENDPOINT_URL=http://localhost:9000 csvjobs storage check
    """
    from csvjobs.operate.maintenance import check_storage

    where, results = check_storage(_settings(ctx))
    if as_json:
        _print_json({"storage": where, "buckets": dict(results)})
    else:
        out.print(f"storage: {where}")
        for bucket, result in results:
            out.print(Text(f"  {bucket}: {result}", style="green" if result == "ok" else "red"))
    if any(result != "ok" for _bucket, result in results):
        raise typer.Exit(1)
