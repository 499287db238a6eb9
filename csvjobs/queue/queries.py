"""The queue's SQL call sites: claims, starts, results, checkpoints, heartbeats, releases, cleanup, outstanding
work, step logs and rate limits, all calls by name to the functions of sql/claim.sql, results.sql, workers.sql
and rate_limits.sql. Workers run these on their own (async) connection; the supervisor and cleanup through the
helpers below."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from pydantic import TypeAdapter

from csvjobs import db
from csvjobs.models import ClaimedJob, CleanupReport, JobResult

# The worker starts on every row it claims at once, so the claim marks them processing (p_start).
CLAIM_SQL = "SELECT * FROM claim_csv_row_jobs(%s, %s::uuid, %s::numeric, %s::integer, %s::uuid, %s, true)"
REPORT_SQL = "SELECT job_id, applied, status FROM update_csv_row_job_results(%s, %s::jsonb)"
HEARTBEAT_SQL = (
    "SELECT * FROM update_csv_worker_heartbeat(%s, %s, %s::integer, %s::integer, %s::integer, %s::integer,"
    " %s::uuid, %s::uuid, %s, %s::integer)"
)
CHECKPOINT_SQL = "SELECT save_csv_row_job_checkpoint(%s::bigint, %s, %s::integer, %s::jsonb) AS held"
RELEASE_SQL_KEEP = "SELECT * FROM release_csv_worker_jobs(%s, %s, %s::bigint[])"
CLEANUP_SQL = "SELECT * FROM cleanup_stale_csv_workers(%s::numeric)"
# The finished row whose images a variant reuses (csv_row_jobs.depends_on).
LEADER_SQL = (
    "SELECT l.row_number, l.status, l.generated_prompts, l.generated_images, l.generated_tags"
    " FROM csv_row_jobs j JOIN csv_row_jobs l ON l.id = j.depends_on WHERE j.id = %s"
)
OUTSTANDING_SQL = "SELECT csv_outstanding_jobs(%s::uuid, %s::uuid, %s) AS n"
WRITE_LOGS_SQL = "SELECT write_csv_processing_logs(%s, %s::jsonb)"
ACQUIRE_RATE_SQL = "SELECT acquire_csv_rate_limit(%s, %s::numeric) AS v"
PAUSE_REMAINING_SQL = "SELECT csv_rate_limit_pause_remaining(%s) AS v"
PAUSE_RATE_SQL = "SELECT extract(epoch FROM pause_csv_rate_limit(%s, %s::numeric)) AS v"
# The OpenAI batch driver's calls (sql/openai_batches.sql), and the rows a submission holds, as claims return them.
OPEN_OPENAI_BATCH_SQL = "SELECT open_csv_openai_batch(%s, %s::uuid, %s, %s::bigint[])"
LEASE_OPENAI_BATCHES_SQL = "SELECT * FROM lease_csv_openai_batches(%s, %s::numeric, %s::integer, %s::uuid, %s::uuid)"
UPDATE_OPENAI_BATCH_SQL = "SELECT update_csv_openai_batch(%s::bigint, %s, %s::jsonb, %s::numeric, %s::numeric) AS ok"
SPLIT_OPENAI_BATCH_SQL = "SELECT split_csv_openai_batch(%s::bigint, %s, %s, %s::bigint[])"
RELEASE_OPENAI_BATCH_ROWS_SQL = "SELECT * FROM release_csv_openai_batch_rows(%s::bigint, %s, %s::bigint[], %s, %s)"
FINISH_OPENAI_BATCH_SQL = "SELECT finish_csv_openai_batch(%s::bigint, %s, %s::jsonb)"
RELEASE_OPENAI_LEASES_SQL = "SELECT release_csv_openai_batch_leases(%s)"
HELD_ROWS_SQL = (
    "SELECT j.id AS job_id, j.batch_id, b.user_id, j.row_number, j.row_data::jsonb AS row_data,"
    " csv_row_job_product(j.row_data, j.product, b.column_mapping) AS product, j.trigger_text, j.attempt,"
    " j.retry_count, j.max_retries, j.checkpoint"
    " FROM unnest(%s::bigint[]) WITH ORDINALITY AS k(id, n)"
    " JOIN csv_row_jobs j ON j.id = k.id JOIN csv_batches b ON b.id = j.batch_id"
    " WHERE j.claimed_by = %s AND j.status IN ('claimed', 'processing') ORDER BY k.n"
)
# NOTIFY channel of new and released jobs (sql/upload.sql, results.sql, batch_control.sql): idle workers wake on it.
JOBS_CHANNEL = "csv_row_jobs"


# Whole lists at once: pydantic-core then validates and writes JSON without a Python step per row.
_RESULTS = TypeAdapter(list[JobResult])
_CLAIMS = TypeAdapter(list[ClaimedJob])


def results_json(results: Sequence[JobResult]) -> str:
    """The p_results array for update_csv_row_job_results."""
    return _RESULTS.dump_json(list(results), exclude_none=True).decode()


def parse_claims(rows: list[dict[str, Any]]) -> list[ClaimedJob]:
    """Claimed rows as models."""
    return _CLAIMS.validate_python(rows)


def cleanup_stale_workers(conn: db.Connection, timeout_minutes: float) -> CleanupReport:
    """cleanup_stale_csv_workers as the service role."""
    with db.service_transaction(conn):
        row = conn.execute(CLEANUP_SQL, [timeout_minutes]).fetchone()
        waiting = conn.execute(
            "SELECT count(*) AS n FROM csv_openai_batches o JOIN csv_row_jobs j"
            " ON j.id = ANY (o.row_job_ids) AND j.claimed_by = csv_openai_batch_holder(o.id)"
            " WHERE o.state <> 'done'").fetchone()
    assert row is not None and waiting is not None
    return CleanupReport.model_validate({**row, "waiting_on_openai": waiting["n"]})


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
