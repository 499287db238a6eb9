"""The queue's calls to the database, as typed functions with named parameters: claims, results, checkpoints,
heartbeats, releases, outstanding work, step logs and rate limits, each a call by name to a function of
sql/claim.sql, results.sql, workers.sql or rate_limits.sql. The loops never hold SQL; they call these through
their runtime's db_call (which rides out outages). The supervisor and cleanup use the synchronous helpers at the
end. Submissions to OpenAI's Batch API have theirs in submission_queries.py."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, TypeAdapter

from csvjobs import db
from csvjobs.models import (
    ClaimedRow,
    CleanupReport,
    PaidCall,
    ProcessingMode,
    RowResult,
    RowStatus,
    RunSummary,
    WorkerStatus,
)

# NOTIFY channel of new and released jobs (sql/upload.sql, results.sql, batch_control.sql): idle workers wake on it.
JOBS_CHANNEL = "csv_row_jobs"

# Whole lists at once: pydantic-core then validates and writes JSON without a Python step per row.
_RESULTS = TypeAdapter(list[RowResult])
_CLAIMS = TypeAdapter(list[ClaimedRow])


class ReportedRow(BaseModel):
    """What update_csv_row_job_results said about one reported row: applied is false when the holder had lost it."""

    job_id: int
    applied: bool
    status: RowStatus | None = None


class SourceRow(BaseModel):
    """The earlier row whose images a variant reuses (csv_row_jobs.reuses_job), as it stands."""

    row_number: int
    status: RowStatus
    generated_prompts: Any = None
    generated_images: Any = None
    generated_tags: Any = None


def results_json(results: Sequence[RowResult]) -> str:
    """The p_results array for update_csv_row_job_results."""
    sent = [result.model_copy(update={"cost_usd": None}) if result.cost_recorded else result for result in results]
    return _RESULTS.dump_json(sent, exclude_none=True).decode()


def parse_claims(rows: list[dict[str, Any]]) -> list[ClaimedRow]:
    """Claimed rows as models."""
    return _CLAIMS.validate_python(rows)


async def _one(conn: db.AsyncConnection, sql: str, params: list[Any]) -> dict[str, Any] | None:
    cur = await conn.execute(sql, params)
    return await cur.fetchone()


async def _all(conn: db.AsyncConnection, sql: str, params: list[Any]) -> list[dict[str, Any]]:
    cur = await conn.execute(sql, params)
    return await cur.fetchall()


# --- rows -------------------------------------------------------------------------------------------------------


async def use_quick_claims(conn: db.AsyncConnection) -> None:
    """Claims on this connection commit without waiting for the disk (sql/claim.sql, "quick claims")."""
    await conn.execute("SET csvjobs.async_claims = on")


async def claim_rows(conn: db.AsyncConnection, *, worker_id: str, limit: int, timeout_minutes: float,
                     mode: ProcessingMode, batch_id: uuid.UUID | None = None,
                     user_id: uuid.UUID | None = None) -> list[dict[str, Any]]:
    """claim_csv_row_jobs: up to limit pending rows of batches in this mode, started at once (p_start), as the
    database returned them (parse_claims makes models of them; a caller that fails to must release them)."""
    # One statement, so one round trip and no BEGIN/COMMIT of its own (a transaction would be three).
    return await _all(conn, "SELECT * FROM claim_csv_row_jobs(%s, %s::uuid, %s::numeric, %s::integer, %s::uuid, %s,"
                            " true)", [worker_id, batch_id, timeout_minutes, limit, user_id, mode.value])


async def report_results(conn: db.AsyncConnection, *, worker_id: str, holder: str, results: Sequence[RowResult],
                         logs: Sequence[dict[str, Any]] = ()) -> list[ReportedRow]:
    """update_csv_row_job_results for rows held by holder (the worker, or a submission of it), after the step logs
    that came before them; one statement when there are no logs (a statement is its own transaction)."""
    report = "SELECT job_id, applied, status FROM update_csv_row_job_results(%s, %s::jsonb)"
    if not logs:
        rows = await _all(conn, report, [holder, results_json(results)]) if results else []
        return [ReportedRow.model_validate(row) for row in rows]
    async with conn.transaction():
        # Step logs first: they happened before the results, and log ids are the order of events.
        await conn.execute("SELECT write_csv_processing_logs(%s, %s::jsonb)", [worker_id, json.dumps(list(logs))])
        rows = await _all(conn, report, [holder, results_json(results)]) if results else []
    return [ReportedRow.model_validate(row) for row in rows]


async def save_checkpoint(conn: db.AsyncConnection, *, job_id: int, holder: str, attempt: int,
                          data: dict[str, Any]) -> bool:
    """save_csv_row_job_checkpoint: whether holder still holds the row's attempt (the save is fenced)."""
    row = await _one(conn, "SELECT save_csv_row_job_checkpoint(%s::bigint, %s, %s::integer, %s::jsonb) AS held",
                     [job_id, holder, attempt, json.dumps(data)])
    return bool(row and row["held"])


async def source_row(conn: db.AsyncConnection, *, job_id: int) -> SourceRow | None:
    """The row whose images this row reuses, if it has one."""
    row = await _one(conn, "SELECT s.row_number, s.status, s.generated_prompts, s.generated_images,"
                           " s.generated_tags FROM csv_row_jobs j JOIN csv_row_jobs s ON s.id = j.reuses_job"
                           " WHERE j.id = %s", [job_id])
    return SourceRow.model_validate(row) if row else None


async def held_rows(conn: db.AsyncConnection, *, job_ids: list[int], holder: str) -> list[ClaimedRow]:
    """The rows among job_ids that holder still holds, in that order, as a claim returns them."""
    rows = await _all(
        conn,
        "SELECT j.id AS job_id, j.batch_id, b.user_id, j.row_number, j.row_data::jsonb AS row_data,"
        " csv_row_job_product(j.row_data, j.product, b.column_mapping) AS product, j.trigger_text, j.attempt,"
        " j.retry_count, j.max_retries, j.checkpoint"
        " FROM unnest(%s::bigint[]) WITH ORDINALITY AS k(id, n)"
        " JOIN csv_row_jobs j ON j.id = k.id JOIN csv_batches b ON b.id = j.batch_id"
        " WHERE j.claimed_by = %s AND j.status IN ('claimed', 'processing') ORDER BY k.n",
        [job_ids, holder])
    return parse_claims(rows)


async def release_held_rows(conn: db.AsyncConnection, *, worker_id: str, count_retry: bool,
                            keep: list[int]) -> None:
    """release_csv_worker_jobs: every row the worker holds but those in keep goes back to pending."""
    await conn.execute("SELECT * FROM release_csv_worker_jobs(%s, %s, %s::bigint[])", [worker_id, count_retry, keep])


async def outstanding_rows(conn: db.AsyncConnection, *, mode: ProcessingMode | None,
                           batch_id: uuid.UUID | None = None, user_id: uuid.UUID | None = None) -> int:
    """csv_outstanding_jobs: rows not yet finished in the batches this worker serves (in one mode, or all)."""
    row = await _one(conn, "SELECT csv_outstanding_jobs(%s::uuid, %s::uuid, %s) AS n",
                     [batch_id, user_id, mode.value if mode else None])
    return int(row["n"]) if row else 0


class BatchInfo(BaseModel):
    """What a worker needs to know of a row's batch, fixed at upload: its channels and its estimate per row."""

    channels: tuple[str, ...] = ()
    estimated_row_cost_usd: float | None = None
    language: str | None = None
    alt_languages: tuple[str, ...] = ()


async def batch_info(conn: db.AsyncConnection, *, batch_id: uuid.UUID) -> BatchInfo:
    """The sales channels a batch's images are made for, and what one of its rows is expected to cost."""
    row = await _one(conn, "SELECT channels, estimated_row_cost_usd, language, alt_languages FROM csv_batches"
                           " WHERE id = %s", [batch_id])
    if row is None:
        return BatchInfo()
    return BatchInfo(channels=tuple(row["channels"] or ()), estimated_row_cost_usd=row["estimated_row_cost_usd"],
                     language=row["language"], alt_languages=tuple(row["alt_languages"] or ()))


async def reserve_call_cost(conn: db.AsyncConnection, *, job_id: int, worker_id: str, attempt: int, amount: float,
                            daily_max: float | None, release: bool) -> str | None:
    """reserve_csv_call_cost: None when amount more is reserved for the row; else why not (with release, the row
    is pending again and a batch that cannot fit the call is paused)."""
    row = await _one(conn, "SELECT reserve_csv_call_cost(%s::bigint, %s, %s::integer, %s::numeric, %s::numeric,"
                           " %s) AS refused", [job_id, worker_id, attempt, amount, daily_max, release])
    return row["refused"] if row else None


async def unreserve_call_cost(conn: db.AsyncConnection, *, job_id: int, worker_id: str, attempt: int,
                              amount: float) -> None:
    """unreserve_csv_call_cost: give back what a call that was not paid held."""
    await conn.execute("SELECT unreserve_csv_call_cost(%s::bigint, %s, %s::integer, %s::numeric)",
                       [job_id, worker_id, attempt, amount])


async def record_paid_call(conn: db.AsyncConnection, *, job_id: int, holder: str, attempt: int,
                           call: PaidCall) -> bool:
    """record_csv_paid_call: the call in the ledger, the row's and batch's cost and the day's total; False when it
    was recorded before."""
    row = await _one(conn, "SELECT record_csv_paid_call(%s::bigint, %s, %s::integer, %s::jsonb) AS new",
                     [job_id, holder, attempt, call.model_dump_json()])
    return bool(row and row["new"])


async def batch_status(conn: db.AsyncConnection, *, batch_id: uuid.UUID) -> str | None:
    """A batch's status word, or None when it is gone."""
    row = await _one(conn, "SELECT status FROM csv_batches WHERE id = %s", [batch_id])
    return str(row["status"]) if row else None


# --- workers ----------------------------------------------------------------------------------------------------


async def heartbeat(conn: db.AsyncConnection, *, worker_id: str, status: WorkerStatus, running: int, processed: int,
                    failed: int, concurrency: int, user_id: uuid.UUID | None, batch_id: uuid.UUID | None,
                    hostname: str, pid: int) -> bool:
    """update_csv_worker_heartbeat; True when cleanup had declared this worker dead meanwhile."""
    row = await _one(conn, "SELECT * FROM update_csv_worker_heartbeat(%s, %s, %s::integer, %s::integer, %s::integer,"
                           " %s::integer, %s::uuid, %s::uuid, %s, %s::integer)",
                     [worker_id, status.value, running, processed, failed, concurrency, user_id, batch_id, hostname,
                      pid])
    return bool(row and row["was_stopped"])


# --- rate limits ------------------------------------------------------------------------------------------------


async def _seconds(conn: db.AsyncConnection, sql: str, params: list[Any]) -> float:
    row = await _one(conn, sql, params)
    return float(row["v"]) if row and row["v"] is not None else 0.0


async def acquire_rate(conn: db.AsyncConnection, *, key: str, per_minute: float) -> float:
    """acquire_csv_rate_limit: seconds to wait before the reserved call."""
    return await _seconds(conn, "SELECT acquire_csv_rate_limit(%s, %s::numeric) AS v", [key, per_minute])


async def rate_pause_remaining(conn: db.AsyncConnection, *, key: str) -> float:
    """Seconds left of a pause on key (a 429 somewhere)."""
    return await _seconds(conn, "SELECT csv_rate_limit_pause_remaining(%s) AS v", [key])


async def pause_rate(conn: db.AsyncConnection, *, key: str, seconds: float) -> float:
    """pause_csv_rate_limit: hold every worker's calls on key; the pause's end as epoch seconds."""
    return await _seconds(conn, "SELECT extract(epoch FROM pause_csv_rate_limit(%s, %s::numeric)) AS v",
                          [key, seconds])


# --- synchronous helpers for the supervisor and cleanup -------------------------------------------------------------


def cleanup_stale_workers(conn: db.Connection, timeout_minutes: float) -> CleanupReport:
    """cleanup_stale_csv_workers as the service role."""
    with db.service_transaction(conn):
        row = conn.execute("SELECT * FROM cleanup_stale_csv_workers(%s::numeric)", [timeout_minutes]).fetchone()
        waiting = conn.execute(
            "SELECT count(*) AS n FROM csv_openai_submissions o JOIN csv_row_jobs j"
            " ON j.id = ANY (o.row_job_ids) AND j.claimed_by = csv_openai_submission_holder(o.id)"
            " WHERE o.state <> 'done'").fetchone()
    assert row is not None and waiting is not None
    return CleanupReport.model_validate({**row, "waiting_on_openai": waiting["n"]})


_IMAGES = "jsonb_array_elements(CASE WHEN jsonb_typeof(j.generated_images) = 'array' THEN j.generated_images END)"


def queue_state(conn: db.Connection) -> tuple[dict[str, int], float]:
    """Rows of active batches by status, and the age in seconds of the oldest row waiting in a queued or processing
    batch: from the batches' counters and the in-flight and pending indexes, never a count over every row."""
    with db.service_transaction(conn):
        totals = conn.execute(
            "SELECT coalesce(sum(b.successful_rows + coalesce(s.ok, 0)), 0) AS completed,"
            " coalesce(sum(b.failed_rows + coalesce(s.failed, 0)), 0) AS failed,"
            " coalesce(sum(b.total_rows - b.processed_rows - coalesce(s.ok, 0) - coalesce(s.failed, 0)), 0) AS open"
            " FROM csv_batches b LEFT JOIN LATERAL (SELECT sum(c.successful_rows) AS ok, sum(c.failed_rows) AS failed"
            " FROM csv_batch_counters c WHERE c.batch_id = b.id) s ON true"
            " WHERE b.status IN ('queued', 'processing', 'paused')").fetchone()
        flight = {r["status"]: int(r["n"]) for r in conn.execute(
            "SELECT j.status, count(*) AS n FROM csv_row_jobs j WHERE j.status IN ('claimed', 'processing')"
            " GROUP BY j.status").fetchall()}
        oldest = conn.execute(
            "SELECT coalesce(extract(epoch FROM now() - min((SELECT j.created_at FROM csv_row_jobs j"
            " WHERE j.batch_id = b.id AND j.status = 'pending' ORDER BY j.id + 0 LIMIT 1))), 0) AS age"
            " FROM csv_batches b WHERE b.status IN ('queued', 'processing')").fetchone()
    assert totals is not None and oldest is not None
    claimed, processing = flight.get("claimed", 0), flight.get("processing", 0)
    rows = {"pending": max(0, int(totals["open"]) - claimed - processing), "claimed": claimed,
            "processing": processing, "completed": int(totals["completed"]), "failed": int(totals["failed"])}
    return rows, float(oldest["age"])


def database_now(conn: db.Connection) -> Any:
    """The database's clock (which stamps completed_at)."""
    row = conn.execute("SELECT now() AS now").fetchone()
    assert row is not None
    return row["now"]


def run_summary(conn: db.Connection, *, since: Any, seconds: float, batch_id: uuid.UUID | None,
                user_id: uuid.UUID | None) -> RunSummary:
    """What finished since a run started (rows of the batches it served), and what is left of active batches."""
    scope = ("(%(batch)s::uuid IS NULL OR j.batch_id = %(batch)s) AND (%(user)s::uuid IS NULL OR j.batch_id IN"
             " (SELECT b.id FROM csv_batches b WHERE b.user_id = %(user)s))")
    params = {"since": since, "batch": batch_id, "user": user_id}
    with db.service_transaction(conn):
        done = conn.execute(
            "SELECT count(*) FILTER (WHERE j.status = 'completed') AS completed,"
            " count(*) FILTER (WHERE j.status = 'failed') AS failed,"
            # Each image once: a look-alike variant's images are reused (not cut out or generated again), and the
            # others are cut out of the product's photo or generated; images, not rows.
            f" coalesce(sum((SELECT count(*) FROM {_IMAGES} i)) FILTER (WHERE j.status = 'completed'"
            "   AND j.usage ? 'reuses_row'), 0) AS images_reused,"
            f" coalesce(sum((SELECT count(*) FROM {_IMAGES} i WHERE i ->> 'route' = 'cutout'))"
            "   FILTER (WHERE j.status = 'completed' AND NOT coalesce(j.usage ? 'reuses_row', false)), 0)"
            "   AS images_cut_out,"
            f" coalesce(sum((SELECT count(*) FROM {_IMAGES} i WHERE coalesce(i ->> 'route', '') <> 'cutout'))"
            "   FILTER (WHERE j.status = 'completed' AND NOT coalesce(j.usage ? 'reuses_row', false)), 0)"
            "   AS images_generated"
            f" FROM csv_row_jobs j WHERE j.completed_at >= %(since)s AND {scope}", params).fetchone()
        # What was paid comes from the ledger of paid calls: every call paid since the run started, whether its
        # row completed, failed or is pending again (a redo pays for its new image only).
        paid = conn.execute(
            "SELECT coalesce(sum(p.cost_usd), 0) AS cost_usd, count(*) FILTER (WHERE p.kind = 'image') AS images_paid,"
            " count(*) FILTER (WHERE p.kind = 'image' AND p.purpose <> 'row') AS image_redos_paid"
            " FROM csv_paid_calls p WHERE p.paid_at >= %(since)s"
            " AND (%(batch)s::uuid IS NULL OR p.batch_id = %(batch)s)"
            " AND (%(user)s::uuid IS NULL OR p.user_id = %(user)s)", params).fetchone()
        placeholders = conn.execute(
            "SELECT j.batch_id, count(*) AS n FROM csv_row_jobs j"
            f" CROSS JOIN LATERAL {_IMAGES} i WHERE j.completed_at >= %(since)s AND j.status = 'completed'"
            " AND NOT coalesce(j.usage ? 'reuses_row', false) AND coalesce((i.value ->> 'placeholder')::boolean, false)"
            f" AND {scope} GROUP BY j.batch_id",
            params).fetchall()
        left = conn.execute(
            "SELECT coalesce(sum(b.total_rows - b.processed_rows - coalesce((SELECT sum(c.successful_rows"
            " + c.failed_rows) FROM csv_batch_counters c WHERE c.batch_id = b.id), 0)), 0) AS n"
            " FROM csv_batches b WHERE b.status IN ('queued', 'processing', 'paused')"
            " AND (%(batch)s::uuid IS NULL OR b.id = %(batch)s) AND (%(user)s::uuid IS NULL OR b.user_id = %(user)s)",
            params).fetchone()
        paused = conn.execute(
            "SELECT b.id, b.pause_reason FROM csv_batches b WHERE b.status = 'paused' AND b.pause_reason IS NOT NULL"
            " AND (%(batch)s::uuid IS NULL OR b.id = %(batch)s) AND (%(user)s::uuid IS NULL OR b.user_id = %(user)s)",
            params).fetchall()
    assert done is not None and left is not None and paid is not None
    return RunSummary(seconds=round(seconds, 1), left=int(left["n"]), paused={str(r["id"]): r["pause_reason"]
                                                                              for r in paused},
                      cost_usd=float(paid["cost_usd"]), images_paid=int(paid["images_paid"]),
                      image_redos_paid=int(paid["image_redos_paid"]),
                      placeholders={str(r["batch_id"]): int(r["n"]) for r in placeholders},
                      **{k: int(v) for k, v in done.items()})


def release_worker_jobs(conn: db.Connection, worker_id: str, count_retry: bool) -> tuple[int, int]:
    """Put back every job a worker holds (after a crash: counting a retry, marking it stopped)."""
    with db.service_transaction(conn):
        row = conn.execute("SELECT * FROM release_csv_worker_jobs(%s, %s, %s::bigint[])",
                           [worker_id, count_retry, []]).fetchone()
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
