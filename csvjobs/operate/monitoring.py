"""Watching and steering as a user: logs (with --follow on NOTIFY), worker health, and batch control
(retry, cancel, pause, resume). Row-level security decides what each user sees."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel

from csvjobs import db
from csvjobs.config import Settings
from csvjobs.errors import InputError, NotFoundError
from csvjobs.models import LogLevel
from csvjobs.users import resolve_user_id

_LEVELS = [level.value for level in LogLevel]
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd])\s*$")
WORKER_STALE_SECONDS = 30


def parse_since(text: str) -> timedelta:
    """"10m", "2h", "30s", "1d" -> a timedelta."""
    match = _DURATION.match(text)
    if not match:
        raise InputError(f"--since {text!r}: use a number and a unit, like 30s, 10m, 2h or 1d")
    value, unit = float(match.group(1)), match.group(2)
    return timedelta(seconds=value * {"s": 1, "m": 60, "h": 3600, "d": 86400}[unit])


class LogFilter(BaseModel):
    """Which log rows to show."""

    batch_id: uuid.UUID | None = None
    level: str | None = None
    operation: str | None = None
    row: int | None = None
    since: timedelta | None = None
    limit: int = 100

    def levels(self) -> list[str]:
        """The chosen level and the ones above it."""
        if self.level is None:
            return _LEVELS
        level = self.level.upper()
        if level == "WARNING":
            level = "WARN"
        if level not in _LEVELS:
            raise InputError(f"--level {self.level!r}: use one of {', '.join(_LEVELS)}")
        return _LEVELS[_LEVELS.index(level):]


class LogEntry(BaseModel):
    """One row of csv_processing_logs."""

    id: int
    created_at: datetime
    log_level: str
    operation: str
    message: str
    batch_id: uuid.UUID | None
    row_number: int | None
    worker_instance: str | None
    details: dict[str, Any]


_LOGS_SQL = (
    "SELECT id, created_at, log_level, operation, message, batch_id, row_number, worker_instance, details"
    " FROM csv_processing_logs"
    " WHERE (%(batch)s::uuid IS NULL OR batch_id = %(batch)s::uuid)"
    " AND log_level = ANY (%(levels)s::text[])"
    " AND (%(operation)s::text IS NULL OR operation = %(operation)s::text)"
    " AND (%(row)s::integer IS NULL OR row_number = %(row)s::integer)"
    " AND (%(since)s::interval IS NULL OR created_at >= now() - %(since)s::interval)"
    " AND id > %(after)s"
    " ORDER BY id DESC LIMIT %(limit)s"
)


def _require_batch(conn: db.Connection, batch_id: uuid.UUID | None) -> None:
    if batch_id is not None and conn.execute("SELECT 1 FROM csv_batches WHERE id = %s", [batch_id]).fetchone() is None:
        raise NotFoundError(f"no such batch: {batch_id}; `csvjobs batches` lists yours")


def _fetch_logs(conn: db.Connection, user_id: uuid.UUID, filt: LogFilter, after: int, limit: int) -> list[LogEntry]:
    params = {"batch": filt.batch_id, "levels": filt.levels(), "operation": filt.operation, "row": filt.row,
              "since": filt.since, "after": after, "limit": limit}
    with db.user_transaction(conn, user_id):
        _require_batch(conn, filt.batch_id)
        rows = conn.execute(_LOGS_SQL, params).fetchall()
    return [LogEntry.model_validate(row) for row in reversed(rows)]


def read_logs(settings: Settings, filt: LogFilter) -> list[LogEntry]:
    """The newest matching log rows, oldest first (newest last)."""
    user_id = resolve_user_id(settings)
    _target, conn = db.open_database(settings, application_name="csvjobs-logs")
    with conn:
        return _fetch_logs(conn, user_id, filt, 0, filt.limit)


def follow_logs(settings: Settings, filt: LogFilter) -> Iterator[LogEntry]:
    """The newest matching rows, then every new one as it is written (LISTEN csv_processing_logs, no polling)."""
    user_id = resolve_user_id(settings)
    target, conn = db.open_database(settings, application_name="csvjobs-logs")
    with conn, db.connect(target, application_name="csvjobs-logs-listen") as listener:
        listener.execute("LISTEN csv_processing_logs")
        last = 0
        for entry in _fetch_logs(conn, user_id, filt, 0, filt.limit):
            last = entry.id
            yield entry
        while True:
            for _ in listener.notifies(timeout=5.0, stop_after=1):
                pass
            for entry in _fetch_logs(conn, user_id, filt.model_copy(update={"since": None}), last, 10_000):
                last = entry.id
                yield entry


class WorkerHealth(BaseModel):
    """One worker as `csvjobs workers` shows it."""

    instance_id: str
    status: str
    hostname: str | None
    pid: int | None
    last_heartbeat: datetime
    seconds_since_heartbeat: float
    current_job_count: int
    total_jobs_processed: int
    total_jobs_failed: int
    batch_id: uuid.UUID | None
    user_id: uuid.UUID | None
    stale: bool


def list_workers(settings: Settings, include_stopped: bool = False) -> list[WorkerHealth]:
    """Registered workers, live first; stale means no heartbeat for WORKER_STALE_SECONDS."""
    user_id = resolve_user_id(settings)
    _target, conn = db.open_database(settings, application_name="csvjobs-workers")
    with conn, db.user_transaction(conn, user_id):
        # get_csv_workers() shows whom a dedicated worker serves only to that batch's owner (and the service role).
        rows = conn.execute(
            "SELECT instance_id, status, hostname, pid, last_heartbeat,"
            " extract(epoch FROM now() - last_heartbeat)::float AS seconds_since_heartbeat, current_job_count,"
            " total_jobs_processed, total_jobs_failed, batch_id, user_id,"
            " status <> 'stopped' AND now() - last_heartbeat > make_interval(secs => %s) AS stale"
            " FROM get_csv_workers(%s) LIMIT 500",
            [WORKER_STALE_SECONDS, include_stopped],
        ).fetchall()
    return [WorkerHealth.model_validate(row) for row in rows]


def _batch_call(settings: Settings, batch_id: uuid.UUID, sql: str, params: list[Any]) -> Any:
    user_id = resolve_user_id(settings)
    _target, conn = db.open_database(settings, application_name="csvjobs-control")
    with conn:
        try:
            with db.user_transaction(conn, user_id):
                row = conn.execute(sql, params).fetchone()
        except db.PsycopgError as exc:
            message = db.first_line(exc)
            if exc.sqlstate == "P0002":  # no_data_found: not there, or not this user's
                raise NotFoundError(f"{message}; `csvjobs batches` lists yours") from exc
            raise InputError(message) from exc
    return row["v"] if row else None


def retry_rows(settings: Settings, batch_id: uuid.UUID, rows: list[int] | None) -> int:
    """Failed rows (all, or the given row numbers) back to pending, keeping their checkpoints."""
    return int(_batch_call(settings, batch_id, "SELECT retry_csv_batch_rows(%s, %s::integer[]) AS v",
                           [batch_id, rows]))


def change_state(settings: Settings, batch_id: uuid.UUID, action: str) -> str:
    """cancel, pause or resume a batch; returns its new status."""
    return str(_batch_call(settings, batch_id, "SELECT set_csv_batch_state(%s, %s) AS v", [batch_id, action]))
