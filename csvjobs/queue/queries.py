"""Python's side of the queue: thin calls to the SQL functions in sql/003_functions.sql, by name."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from typing import Any

from csvjobs import db
from csvjobs.errors import NotFoundError
from csvjobs.models import BatchProgress, ClaimedJob, CleanupReport, JobResult

CLAIM_SQL = "SELECT * FROM claim_csv_row_jobs(%s, %s::uuid, %s::numeric, %s::integer, %s::uuid)"
START_SQL = "SELECT start_csv_row_jobs(%s, %s::bigint[])"
REPORT_SQL = "SELECT job_id, applied, status FROM update_csv_row_job_results(%s, %s::jsonb)"
HEARTBEAT_SQL = (
    "SELECT * FROM update_csv_worker_heartbeat(%s, %s, %s::integer, %s::integer, %s::integer, %s::integer,"
    " %s::uuid, %s::uuid, %s, %s::integer)"
)
CHECKPOINT_SQL = "SELECT save_csv_row_job_checkpoint(%s::bigint, %s, %s::integer, %s::jsonb) AS held"
RELEASE_SQL_KEEP = "SELECT * FROM release_csv_worker_jobs(%s, %s, %s::bigint[])"
PROGRESS_SQL = "SELECT * FROM get_csv_batch_progress(%s::uuid)"
CLEANUP_SQL = "SELECT * FROM cleanup_stale_csv_workers(%s::numeric)"


def results_json(results: Sequence[JobResult]) -> str:
    """The p_results array for update_csv_row_job_results."""
    return json.dumps([r.model_dump(mode="json", exclude_none=True) for r in results])


def parse_claims(rows: list[dict[str, Any]]) -> list[ClaimedJob]:
    """Claimed rows as models."""
    return [ClaimedJob.model_validate(row) for row in rows]


def batch_progress(conn: db.Connection, user_id: uuid.UUID, batch_id: uuid.UUID) -> BatchProgress:
    """get_csv_batch_progress as the user; another user's batch is "no such batch"."""
    with db.user_transaction(conn, user_id):
        row = conn.execute(PROGRESS_SQL, [batch_id]).fetchone()
    if row is None:
        raise NotFoundError(f"no such batch: {batch_id}; `csvjobs batches` lists yours")
    return BatchProgress.model_validate(row)


def cleanup_stale_workers(conn: db.Connection, timeout_minutes: float) -> CleanupReport:
    """cleanup_stale_csv_workers as the service role."""
    with db.service_transaction(conn):
        row = conn.execute(CLEANUP_SQL, [timeout_minutes]).fetchone()
    assert row is not None
    return CleanupReport.model_validate(row)


def active_batches_progress(conn: db.Connection, user_id: uuid.UUID) -> list[BatchProgress]:
    """Progress of the user's batches that are not finished, oldest first."""
    return list(reversed(list_batches(conn, user_id, ["uploaded", "queued", "processing", "paused"])))


def list_batches(
    conn: db.Connection, user_id: uuid.UUID, statuses: list[str] | None = None, limit: int = 1000
) -> list[BatchProgress]:
    """The user's batches with their progress, newest first (row-level security picks the user's own)."""
    with db.user_transaction(conn, user_id):
        rows = conn.execute(
            "SELECT p.* FROM csv_batches b CROSS JOIN LATERAL get_csv_batch_progress(b.id) p"
            " WHERE %s::text[] IS NULL OR b.status = ANY (%s::text[])"
            " ORDER BY b.created_at DESC, b.id LIMIT %s",
            [statuses, statuses, limit],
        ).fetchall()
    return [BatchProgress.model_validate(row) for row in rows]


def release_worker_jobs(conn: db.Connection, worker_id: str, count_retry: bool) -> tuple[int, int]:
    """Put back every job a worker holds (after a crash: counting a retry, marking it stopped)."""
    with db.service_transaction(conn):
        row = conn.execute(RELEASE_SQL_KEEP, [worker_id, count_retry, []]).fetchone()
    assert row is not None
    return row["released"], row["failed"]


def batches_needing_dedicated_workers(
    conn: db.Connection, threshold: int, user_id: uuid.UUID | None
) -> list[dict[str, Any]]:
    """Big active batches with pending work, oldest first."""
    with db.service_transaction(conn):
        return conn.execute(
            "SELECT * FROM csv_batches_needing_dedicated_workers(%s::integer, %s::uuid)", [threshold, user_id]
        ).fetchall()
