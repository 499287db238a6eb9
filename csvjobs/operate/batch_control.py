"""Steering a batch as its owner: retry failed rows, cancel, pause, resume (sql/batch_control.sql)."""

from __future__ import annotations

import uuid

from csvjobs import db
from csvjobs.config import Settings
from csvjobs.operate import queries
from csvjobs.users import resolve_user_id


def retry_rows(settings: Settings, batch_id: uuid.UUID, rows: list[int] | None) -> int:
    """Failed rows (all, or the given row numbers) back to pending, keeping their checkpoints."""
    user_id = resolve_user_id(settings)
    _target, conn = db.open_database(settings, application_name="csvjobs-control")
    with conn:
        return queries.retry_batch_rows(conn, user_id, batch_id, rows)


def change_state(settings: Settings, batch_id: uuid.UUID, action: str) -> str:
    """cancel, pause or resume a batch; returns its new status."""
    user_id = resolve_user_id(settings)
    _target, conn = db.open_database(settings, application_name="csvjobs-control")
    with conn:
        return queries.set_batch_state(conn, user_id, batch_id, action)
