"""The upload's SQL call sites: create the batch as the user, then queue it (sql/upload.sql). The COPY statement
itself stays beside the binary encoding it must agree with (copy_encoding.COPY_SQL)."""

from __future__ import annotations

import json
import uuid
from typing import Any

from csvjobs import db


def create_batch(
    conn: db.Connection,
    *,
    batch_id: uuid.UUID,
    user_id: uuid.UUID,
    original_filename: str,
    headers: list[str],
    storage_path: str,
    max_concurrent_jobs: int,
    column_mapping: dict[str, Any],
    processing_mode: str = "sync",
    channels: list[str] | None = None,
) -> None:
    """INSERT the batch; run as the user, so that row-level security checks that it is theirs."""
    conn.execute(
        "INSERT INTO csv_batches (id, user_id, filename, original_filename, csv_headers, storage_path,"
        " max_concurrent_jobs, column_mapping, processing_mode, channels)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
        [batch_id, user_id, storage_path.rsplit("/", 1)[-1], original_filename, headers, storage_path,
         max_concurrent_jobs, json.dumps(column_mapping), processing_mode, list(channels or [])],
    )


def set_batch_costs(conn: db.Connection, batch_id: uuid.UUID, *, estimated_cost_usd: float,
                    estimated_row_cost_usd: float, max_cost_usd: float | None) -> None:
    """Record the batch's estimate and budget (as the service role, in the upload's transaction)."""
    conn.execute("UPDATE csv_batches SET estimated_cost_usd = %s, estimated_row_cost_usd = %s, max_cost_usd = %s"
                 " WHERE id = %s", [estimated_cost_usd, estimated_row_cost_usd, max_cost_usd, batch_id])


def set_batch_language(conn: db.Connection, batch_id: uuid.UUID, language: str, alt_languages: list[str]) -> None:
    """Record the batch's language and extra alt-text languages (as the service role, in the upload's transaction,
    before the batch is queued)."""
    conn.execute("UPDATE csv_batches SET language = %s, alt_languages = %s WHERE id = %s",
                 [language, alt_languages, batch_id])


def link_reused_rows(conn: db.Connection, batch_id: uuid.UUID) -> int:
    """Point each row that shares an earlier row's images at that row's job (csv_row_jobs.reuses_job); the
    upload wrote the row number, and ids exist only once COPY has run. Run as the service role."""
    cur = conn.execute(
        "UPDATE csv_row_jobs f SET reuses_job = l.id FROM csv_row_jobs l"
        " WHERE f.batch_id = %s AND l.batch_id = %s AND f.product ? 'reuses_row'"
        " AND l.row_number = (f.product ->> 'reuses_row')::integer",
        [batch_id, batch_id],
    )
    return cur.rowcount


def queue_batch(conn: db.Connection, batch_id: uuid.UUID, total_rows: int, skipped_rows: int) -> None:
    """queue_csv_batch: record the row count and queue the batch (or complete it when it has no rows)."""
    conn.execute("SELECT queue_csv_batch(%s::uuid, %s::integer, %s::integer)", [batch_id, total_rows, skipped_rows])


def recent_paid_calls(conn: db.Connection, user_id: uuid.UUID, *, rows: int) -> list[dict[str, Any]]:
    """The paid calls of the account's most recently paying rows that completed (about `rows` of them, the
    reviewer's redos left out), for the estimate to learn from: through the ledger's (user_id, id) index, then
    each row's calls by its row_job_id."""
    return conn.execute(
        "WITH recent AS (SELECT DISTINCT p.row_job_id FROM (SELECT r.row_job_id FROM csv_paid_calls r"
        "   WHERE r.user_id = %(user)s ORDER BY r.id DESC LIMIT %(calls)s) p)"
        " SELECT c.row_job_id, c.kind, c.purpose, c.route, c.row_has_photo, c.model, c.size, c.quality,"
        "  c.price_factor, c.cost_usd"
        " FROM csv_paid_calls c JOIN csv_row_jobs j ON j.id = c.row_job_id AND j.status = 'completed'"
        " WHERE c.row_job_id IN (SELECT row_job_id FROM recent) AND c.purpose <> 'regenerate'",
        {"user": user_id, "calls": rows * 4}).fetchall()
