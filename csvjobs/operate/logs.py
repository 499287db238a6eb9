"""`csvjobs logs`: what happened, as the user may see it, newest last; --follow waits on NOTIFY, never polls."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel

from csvjobs import db
from csvjobs.config import Settings
from csvjobs.errors import InputError
from csvjobs.models import LogLevel
from csvjobs.operate import queries
from csvjobs.users import resolve_user_id

_LEVELS = [level.value for level in LogLevel]
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd])\s*$")


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


def _fetch(conn: db.Connection, user_id: uuid.UUID, filt: LogFilter, after: int, limit: int) -> list[LogEntry]:
    rows = queries.log_rows(conn, user_id, batch_id=filt.batch_id, levels=filt.levels(), operation=filt.operation,
                            row=filt.row, since=filt.since, after=after, limit=limit)
    return [LogEntry.model_validate(row) for row in rows]


def read_logs(settings: Settings, filt: LogFilter) -> list[LogEntry]:
    """The newest matching log rows, oldest first (newest last)."""
    user_id = resolve_user_id(settings)
    _target, conn = db.open_database(settings, application_name="csvjobs-logs")
    with conn:
        return _fetch(conn, user_id, filt, 0, filt.limit)


def follow_logs(settings: Settings, filt: LogFilter) -> Iterator[LogEntry]:
    """The newest matching rows, then every new one as it is written (LISTEN, and a look every second)."""
    user_id = resolve_user_id(settings)
    target, conn = db.open_database(settings, application_name="csvjobs-logs")
    with conn, db.connect(target, application_name="csvjobs-logs-listen") as listener:
        db.listen(listener, queries.LOGS_CHANNEL)
        last = 0
        for entry in _fetch(conn, user_id, filt, 0, filt.limit):
            last = entry.id
            yield entry
        while True:
            # A session notifies at most every 250 ms (sql/triggers.sql): the rest of a burst is read at the
            # next look, within a second.
            for _ in listener.notifies(timeout=1.0, stop_after=1):
                pass
            for entry in _fetch(conn, user_id, filt.model_copy(update={"since": None}), last, 10_000):
                last = entry.id
                yield entry
