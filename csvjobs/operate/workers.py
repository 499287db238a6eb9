"""`csvjobs workers`: worker health as the user may see it."""

from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel

from csvjobs import db
from csvjobs.config import Settings
from csvjobs.operate import queries
from csvjobs.users import resolve_user_id

WORKER_STALE_SECONDS = 30


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
    with conn:
        rows = queries.worker_rows(conn, user_id, WORKER_STALE_SECONDS, include_stopped)
    return [WorkerHealth.model_validate(row) for row in rows]
