"""The SQL call sites of operating csvjobs: progress, batch lists, logs, worker health, batch control and export.
User-facing reads run as the user (row-level security decides what they see); every call names a function of
sql/progress.sql, workers.sql and batch_control.sql, or reads a table the policies of security.sql filter."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

from csvjobs import db
from csvjobs.errors import InputError, NotFoundError
from csvjobs.models import BatchProgress, ImageStyle

# get_csv_batch_progress, with the batch's processing mode and its submissions to OpenAI still under way.
PROGRESS_COLUMNS = (
    "SELECT p.*, b.processing_mode, b.estimated_cost_usd, b.max_cost_usd, b.pause_reason, b.channels,"
    " b.language, b.alt_languages,"
    " (SELECT coalesce(jsonb_agg(jsonb_build_object("
    "'step', o.step, 'state', o.state, 'rows', cardinality(o.row_job_ids), 'requests', o.request_count,"
    " 'openai_batch_id', o.openai_batch_id, 'openai_status', o.openai_status, 'request_counts', o.request_counts,"
    " 'prepared_rows', o.prepared_rows, 'collected_rows', o.collected_rows, 'completed_rows', o.completed_rows,"
    " 'preparing_seconds', extract(epoch FROM now() - o.created_at),"
    " 'submitted_seconds', extract(epoch FROM now() - o.submitted_at),"
    " 'collecting_seconds', extract(epoch FROM now() - o.collecting_since))"
    " ORDER BY o.id), '[]') FROM csv_openai_submissions o WHERE o.batch_id = b.id AND o.state <> 'done')"
    " AS openai_batches,"
    # Rows whose images were made without the product's photo (csv_row_jobs_without_photo_idx holds only those).
    " (SELECT count(*) FROM csv_row_jobs j WHERE j.batch_id = b.id AND j.status = 'completed'"
    "  AND jsonb_path_exists(j.generated_images, '$[*] ? (@.edited == false)')) AS rows_without_photo,"
    # Placeholder images (csv_row_jobs_placeholder_idx), each counted once: not again for look-alike variants that
    # show the same image.
    " (SELECT count(*) FROM csv_row_jobs j CROSS JOIN LATERAL jsonb_array_elements(j.generated_images) i"
    "  WHERE j.batch_id = b.id AND j.status = 'completed'"
    "  AND jsonb_path_exists(j.generated_images, '$[*] ? (@.placeholder == true)')"
    "  AND NOT coalesce(j.usage ? 'reuses_row', false) AND (i.value ->> 'placeholder')::boolean) AS placeholder_images"
    " FROM csv_batches b CROSS JOIN LATERAL get_csv_batch_progress(b.id) p"
)
PROGRESS_SQL = PROGRESS_COLUMNS + " WHERE b.id = %s::uuid"
# NOTIFY channels: batch counters changed (results.sql, batch_control.sql); log rows written (tables.sql).
PROGRESS_CHANNEL = "csv_batch_progress"
LOGS_CHANNEL = "csv_processing_logs"
NO_SUCH_BATCH = "P0002"  # no_data_found, raised by csv_lock_owned_batch for another user's batch too
# A batch's job rows (j) with the merchant's decisions on their images (r.review; 012_row_reviews.sql).
JOBS_WITH_REVIEWS = "csv_row_jobs j LEFT JOIN csv_row_reviews r ON r.row_job_id = j.id"


def no_such_batch(batch_id: uuid.UUID) -> NotFoundError:
    """The one answer for a batch that does not exist and for another user's batch."""
    return NotFoundError(f"no such batch: {batch_id}; `csvjobs batches` lists yours")


def batch_progress(conn: db.Connection, user_id: uuid.UUID, batch_id: uuid.UUID) -> BatchProgress:
    """get_csv_batch_progress as the user; another user's batch is "no such batch"."""
    with db.user_transaction(conn, user_id):
        row = conn.execute(PROGRESS_SQL, [batch_id]).fetchone()
    if row is None:
        raise no_such_batch(batch_id)
    return BatchProgress.model_validate(row)


def active_batches_progress(conn: db.Connection, user_id: uuid.UUID) -> list[BatchProgress]:
    """Progress of the user's batches that are not finished, oldest first."""
    return list(reversed(list_batches(conn, user_id, ["uploaded", "queued", "processing", "paused"])))


def list_batches(
    conn: db.Connection, user_id: uuid.UUID, statuses: list[str] | None = None, limit: int = 1000
) -> list[BatchProgress]:
    """The user's batches with their progress, newest first (row-level security picks the user's own)."""
    with db.user_transaction(conn, user_id):
        rows = conn.execute(
            PROGRESS_COLUMNS + " WHERE %s::text[] IS NULL OR b.status = ANY (%s::text[])"
            " ORDER BY b.created_at DESC, b.id LIMIT %s",
            [statuses, statuses, limit],
        ).fetchall()
    return [BatchProgress.model_validate(row) for row in rows]


def require_batch(conn: db.Connection, batch_id: uuid.UUID | None) -> None:
    """Raise "no such batch" unless the current user can see batch_id (None: no batch asked for)."""
    if batch_id is not None and conn.execute("SELECT 1 FROM csv_batches WHERE id = %s", [batch_id]).fetchone() is None:
        raise no_such_batch(batch_id)


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


def log_rows(
    conn: db.Connection,
    user_id: uuid.UUID,
    *,
    batch_id: uuid.UUID | None,
    levels: list[str],
    operation: str | None,
    row: int | None,
    since: timedelta | None,
    after: int,
    limit: int,
) -> list[dict[str, Any]]:
    """The user's newest matching log rows after id `after`, oldest first (ids are the order of writing)."""
    params = {"batch": batch_id, "levels": levels, "operation": operation, "row": row, "since": since,
              "after": after, "limit": limit}
    with db.user_transaction(conn, user_id):
        require_batch(conn, batch_id)
        rows = conn.execute(_LOGS_SQL, params).fetchall()
    return list(reversed(rows))


def worker_rows(conn: db.Connection, user_id: uuid.UUID, stale_seconds: float,
                include_stopped: bool) -> list[dict[str, Any]]:
    """Registered workers, live first, through get_csv_workers(): whom a dedicated worker serves shows only to the
    owner of that batch (and the service role)."""
    with db.user_transaction(conn, user_id):
        return conn.execute(
            "SELECT instance_id, status, hostname, pid, last_heartbeat,"
            " extract(epoch FROM now() - last_heartbeat)::float AS seconds_since_heartbeat, current_job_count,"
            " total_jobs_processed, total_jobs_failed, batch_id, user_id,"
            " status <> 'stopped' AND now() - last_heartbeat > make_interval(secs => %s) AS stale"
            " FROM get_csv_workers(%s) LIMIT 500",
            [stale_seconds, include_stopped],
        ).fetchall()


def _batch_call(conn: db.Connection, user_id: uuid.UUID, batch_id: uuid.UUID, sql: str,
                params: list[Any]) -> Any:
    try:
        with db.user_transaction(conn, user_id):
            row = conn.execute(sql, params).fetchone()
    except db.PsycopgError as exc:
        if exc.sqlstate == NO_SUCH_BATCH:
            raise no_such_batch(batch_id) from exc
        raise InputError(db.first_line(exc)) from exc
    return row["v"] if row else None


def retry_batch_rows(conn: db.Connection, user_id: uuid.UUID, batch_id: uuid.UUID, rows: list[int] | None) -> int:
    """retry_csv_batch_rows as the user: failed rows back to pending; how many."""
    return int(_batch_call(conn, user_id, batch_id, "SELECT retry_csv_batch_rows(%s, %s::integer[]) AS v",
                           [batch_id, rows]))


def set_batch_state(conn: db.Connection, user_id: uuid.UUID, batch_id: uuid.UUID, action: str) -> str:
    """set_csv_batch_state as the user (cancel, pause, resume); the new status."""
    return str(_batch_call(conn, user_id, batch_id, "SELECT set_csv_batch_state(%s, %s) AS v", [batch_id, action]))


def batches_with_prefix(conn: db.Connection, user_id: uuid.UUID, prefix: str) -> list[uuid.UUID]:
    """The user's batches whose id starts with prefix (hex digits and dashes only), newest first, at most 10."""
    with db.user_transaction(conn, user_id):
        rows = conn.execute("SELECT id FROM csv_batches WHERE id::text LIKE %s ORDER BY created_at DESC LIMIT 10",
                            [prefix.lower() + "%"]).fetchall()
    return [row["id"] for row in rows]


def set_batch_budget(conn: db.Connection, user_id: uuid.UUID, batch_id: uuid.UUID, max_cost: float | None) -> str:
    """set_csv_batch_budget as the user; the batch's status."""
    return str(_batch_call(conn, user_id, batch_id, "SELECT set_csv_batch_budget(%s, %s::numeric) AS v",
                           [batch_id, max_cost]))


def running_openai_batches(conn: db.Connection, user_id: uuid.UUID, batch_id: uuid.UUID) -> list[str]:
    """Ids of the batch's OpenAI batches that OpenAI may still be running."""
    with db.user_transaction(conn, user_id):
        rows = conn.execute(
            "SELECT openai_batch_id FROM csv_openai_submissions WHERE batch_id = %s AND state = 'submitted'"
            " AND openai_batch_id IS NOT NULL AND coalesce(openai_status, '') NOT IN"
            " ('completed', 'failed', 'expired', 'cancelled', 'cancelling') ORDER BY id", [batch_id]).fetchall()
    return [str(row["openai_batch_id"]) for row in rows]


def review_images(conn: db.Connection, user_id: uuid.UUID, batch_id: uuid.UUID, rows: list[int] | None,
                  style: str | None, action: str) -> int:
    """review_csv_images as the user; how many images changed."""
    return int(_batch_call(conn, user_id, batch_id, "SELECT review_csv_images(%s, %s::integer[], %s, %s) AS v",
                           [batch_id, rows, style, action]))


def approve_unflagged(conn: db.Connection, user_id: uuid.UUID, batch_id: uuid.UUID) -> int:
    """approve_csv_unflagged_images as the user; how many images were approved."""
    return int(_batch_call(conn, user_id, batch_id, "SELECT approve_csv_unflagged_images(%s) AS v", [batch_id]))


def set_alt_text(conn: db.Connection, user_id: uuid.UUID, batch_id: uuid.UUID, rows: list[int], style: str,
                 text: str) -> int:
    """set_csv_image_alt_text as the user; how many rows changed."""
    return int(_batch_call(conn, user_id, batch_id, "SELECT set_csv_image_alt_text(%s, %s::integer[], %s, %s) AS v",
                           [batch_id, rows, style, text]))


def image_versions(conn: db.Connection, user_id: uuid.UUID, batch_id: uuid.UUID,
                   rows: list[int]) -> list[dict[str, Any]]:
    """The earlier versions of the given rows' images, newest first, as the user."""
    with db.user_transaction(conn, user_id):
        return conn.execute(
            "SELECT row_number, style, version, image ->> 'storage_path' AS path, review, replaced_note"
            " FROM csv_image_versions WHERE batch_id = %s AND row_number = ANY (%s::integer[])"
            " ORDER BY row_number, style, version DESC", [batch_id, rows]).fetchall()


def restore_version(conn: db.Connection, user_id: uuid.UUID, batch_id: uuid.UUID, row: int, style: str,
                    version: int) -> int:
    """restore_csv_image_version as the user; the version number the replaced image now has."""
    return int(_batch_call(conn, user_id, batch_id, "SELECT restore_csv_image_version(%s, %s, %s, %s) AS v",
                           [batch_id, row, style, version]))


def request_regeneration(conn: db.Connection, user_id: uuid.UUID, batch_id: uuid.UUID, rows: list[int],
                         style: str | None, note: str | None) -> int:
    """request_csv_image_regeneration as the user; how many rows were queued."""
    return int(_batch_call(conn, user_id, batch_id,
                           "SELECT request_csv_image_regeneration(%s, %s::integer[], %s, %s) AS v",
                           [batch_id, rows, style, note]))


def images_to_redo(conn: db.Connection, user_id: uuid.UUID, batch_id: uuid.UUID, rows: list[int] | None,
                   style: str | None, *, placeholders: bool = False) -> list[dict[str, Any]]:
    """The current images (of style, or both) of the completed rows among `rows` (all rows: None), or with
    placeholders the batch's placeholder images, each once (not again for the look-alike variants showing it):
    what a redo of them would make again, as the user."""
    with db.user_transaction(conn, user_id):
        require_batch(conn, batch_id)
        return [r["image"] for r in conn.execute(
            "SELECT i.value AS image FROM csv_row_jobs j"
            " CROSS JOIN LATERAL jsonb_array_elements(CASE WHEN jsonb_typeof(j.generated_images) = 'array'"
            "  THEN j.generated_images ELSE '[]' END) i"
            " WHERE j.batch_id = %(batch)s AND j.status = 'completed'"
            " AND (%(rows)s::integer[] IS NULL OR j.row_number = ANY (%(rows)s::integer[]))"
            " AND (%(style)s::text IS NULL OR i.value ->> 'style' = %(style)s)"
            # (through csv_row_jobs_placeholder_idx: only the rows that have placeholders)
            " AND (NOT %(placeholders)s OR (jsonb_path_exists(j.generated_images, '$[*] ? (@.placeholder == true)')"
            "  AND NOT coalesce(j.usage ? 'reuses_row', false)"
            "  AND coalesce((i.value ->> 'placeholder')::boolean, false)))",
            {"batch": batch_id, "rows": rows, "style": style, "placeholders": placeholders}).fetchall()]


def rows_left_out(conn: db.Connection, user_id: uuid.UUID, batch_id: uuid.UUID, rows: list[int]) -> list[int]:
    """Which of these row numbers the batch does not have (rows the upload left out), as the user."""
    with db.user_transaction(conn, user_id):
        row = conn.execute(
            "SELECT coalesce(array_agg(n ORDER BY n), '{}') AS left_out FROM unnest(%s::integer[]) n"
            " WHERE NOT EXISTS (SELECT 1 FROM csv_row_jobs j WHERE j.batch_id = %s AND j.row_number = n)",
            [rows, batch_id]).fetchone()
    return list(row["left_out"]) if row else []


def redo_placeholders(conn: db.Connection, user_id: uuid.UUID, batch_id: uuid.UUID) -> int:
    """redo_csv_placeholder_images as the user; how many rows were queued."""
    return int(_batch_call(conn, user_id, batch_id, "SELECT redo_csv_placeholder_images(%s) AS v", [batch_id]))


def export_header(conn: db.Connection, batch_id: uuid.UUID) -> dict[str, Any]:
    """The batch's id, file name and headers, in the caller's (user) transaction."""
    batch = conn.execute(
        "SELECT b.id, b.original_filename, b.csv_headers, b.column_mapping, b.storage_path, b.language,"
        " b.alt_languages,"
        " EXISTS (SELECT 1 FROM csv_row_reviews r WHERE r.batch_id = b.id"
        "         AND jsonb_path_exists(r.review, '$.*.state ? (@ == \"approved\" || @ == \"rejected\")'))"
        " AS reviewed"
        " FROM csv_batches b WHERE b.id = %s", [batch_id]).fetchone()
    if batch is None:
        raise no_such_batch(batch_id)
    return batch


def export_rows(conn: db.Connection, batch_id: uuid.UUID) -> Iterator[dict[str, Any]]:
    """Every row of the batch in row order, with its whole product, streamed."""
    # A server-side cursor streams the batch, so exporting a million rows needs no more memory than ten.
    with conn.cursor(name=f"export_{uuid.uuid4().hex[:8]}") as cursor:
        cursor.itersize = 2000
        cursor.execute(
            "SELECT j.row_number, j.row_data, j.status, j.error_message, j.trigger_text, j.generated_prompts,"
            " j.generated_images, j.generated_tags, j.cost_usd,"
            " j.checkpoint -> 'reference' ->> 'storage_path' AS reference_photo,"
            " j.checkpoint ->> 'reference_error' AS photo_problem, r.review,"
            " (SELECT count(*) FROM csv_image_versions v WHERE v.batch_id = j.batch_id"
            "  AND v.row_number = j.row_number) AS versions,"
            # The newest approved earlier version of each style: what a shop gets while a redo is unapproved.
            " (SELECT jsonb_object_agg(a.style, a.image) FROM (SELECT DISTINCT ON (v.style) v.style, v.image"
            "  FROM csv_image_versions v WHERE v.batch_id = j.batch_id AND v.row_number = j.row_number"
            "  AND v.review = 'approved' ORDER BY v.style, v.version DESC) a) AS approved_versions,"
            " csv_row_job_product(j.row_data, j.product, b.column_mapping) AS product"
            f" FROM {JOBS_WITH_REVIEWS} JOIN csv_batches b ON b.id = j.batch_id WHERE j.batch_id = %s"
            " ORDER BY j.row_number", [batch_id]
        )
        yield from cursor


# NOTIFY channel of review changes (review.sql); the review page also follows PROGRESS_CHANNEL for new images.
REVIEWS_CHANNEL = "csv_image_reviews"


_REVIEW_COLUMNS = (
    "SELECT j.row_number, j.status, j.error_message, j.generated_prompts, j.generated_images,"
    " j.generated_tags, j.cost_usd, r.review, j.checkpoint ? 'regenerate' AS regenerating,"
    " j.checkpoint -> 'reference' ->> 'storage_path' AS reference_photo,"
    " j.checkpoint ->> 'reference_error' AS photo_problem,"
    " jsonb_path_exists(coalesce(j.generated_images, '[]'), '$[*] ? (@.edited == false)') AS without_photo,"
    " csv_row_job_product(j.row_data, j.product, b.column_mapping) ->> 'title' AS title,"
    " CASE WHEN j.usage ? 'reuses_row' THEN (j.usage ->> 'reuses_row')::integer END AS reuses_row,"
    " (SELECT count(*) FROM csv_image_versions v WHERE v.batch_id = j.batch_id"
    "  AND v.row_number = j.row_number) AS versions"
    f" FROM {JOBS_WITH_REVIEWS} JOIN csv_batches b ON b.id = j.batch_id WHERE j.batch_id = %(batch)s")


def review_rows(conn: db.Connection, user_id: uuid.UUID, batch_id: uuid.UUID) -> list[dict[str, Any]]:
    """Every row of the batch as the review page shows it, as the user (another user's batch: no such batch)."""
    with db.user_transaction(conn, user_id):
        require_batch(conn, batch_id)
        return conn.execute(_REVIEW_COLUMNS + " ORDER BY j.row_number", {"batch": batch_id}).fetchall()


# The review page's filters, over a product's own row: a look-alike variant is shown with the row whose images it
# reuses, and decided with it. The page reads one page of these rows at a time (keyset on the row number). Written
# per style as containment tests and plain expressions, which cost little on every row of a large batch.
_PRODUCT_ROW = "NOT coalesce(j.usage ? 'reuses_row', false)"


def _has(style: ImageStyle) -> str:
    return f"coalesce(j.generated_images @> '[{{\"style\": \"{style.value}\"}}]', false)"


def _state(style: ImageStyle) -> str:
    return f"coalesce(r.review -> '{style.value}' ->> 'state', 'unreviewed')"


def _any_image(state: str) -> str:
    return "(" + " OR ".join(f"({_has(s)} AND {_state(s)} = '{state}')" for s in ImageStyle) + ")"


def _images(state: str) -> str:
    return " + ".join(f"({_has(s)} AND {_state(s)} = '{state}')::int" for s in ImageStyle)


REVIEW_FILTERS = {
    "all": "true",
    "to_review": f"j.status = 'completed' AND {_any_image('unreviewed')}",
    "approved": _any_image("approved"),
    "rejected": _any_image("rejected"),
    "failed": "j.status = 'failed'",
    "regenerating": "j.checkpoint ? 'regenerate'",
    "needs_eyes": "j.status = 'completed' AND (csv_images_need_eyes(j.generated_images, j.checkpoint)"
                  " OR j.row_number IN (SELECT e.n FROM csv_redone_rows(%(batch)s) AS e(n)))",
}
# The spot-check: a sample of the completed products that need no eyes, the same while the page is open (ordered
# by a hash of the row number and the page's seed), whatever the merchant decides on them.
SAMPLE = "sample"
_SAMPLE_FILTER = (
    "j.row_number IN (SELECT s.row_number FROM csv_row_jobs s WHERE s.batch_id = %(batch)s"
    " AND NOT coalesce(s.usage ? 'reuses_row', false) AND s.status = 'completed'"
    " AND NOT csv_images_need_eyes(s.generated_images, s.checkpoint)"
    " AND s.row_number NOT IN (SELECT e.n FROM csv_redone_rows(%(batch)s) AS e(n))"
    " ORDER BY md5(%(seed)s || s.row_number) LIMIT %(sample)s)")
_NOT_READY = ("jsonb_array_length(jsonb_path_query_array(CASE WHEN jsonb_typeof(j.generated_images) = 'array'"
              " THEN j.generated_images ELSE '[]' END, '$[*] ? (exists(@.checks.* ? (@.passed == false)))'))")


def review_page(conn: db.Connection, user_id: uuid.UUID, batch_id: uuid.UUID, which: str, *,
                after: int | None = None, before: int | None = None, size: int = 48,
                sample: tuple[str, int] | None = None) -> dict[str, Any]:
    """One page of the review page's products under a filter (or of the spot-check sample: its seed and size),
    after (or before) a row number, with the rows of their look-alike variants, whether there are more either
    side, and the batch's counts: everything a refresh reads, whatever the batch's size."""
    seed, sample_size = sample or ("", 0)
    where = f"{_PRODUCT_ROW} AND {_SAMPLE_FILTER if which == SAMPLE else REVIEW_FILTERS[which]}"
    with db.user_transaction(conn, user_id):
        require_batch(conn, batch_id)
        params: dict[str, Any] = {"batch": batch_id, "size": size, "seed": seed, "sample": sample_size}
        if before is not None:
            params["before"] = before
            rows = conn.execute(f"SELECT * FROM ({_REVIEW_COLUMNS} AND {where} AND j.row_number < %(before)s"
                                " ORDER BY j.row_number DESC LIMIT %(size)s) p ORDER BY p.row_number",
                                params).fetchall()
        else:
            params["after"] = after or 0
            rows = conn.execute(f"{_REVIEW_COLUMNS} AND {where} AND j.row_number > %(after)s"
                                " ORDER BY j.row_number LIMIT %(size)s", params).fetchall()
        numbers = [r["row_number"] for r in rows]
        variants = conn.execute(
            "SELECT j.row_number, (j.usage ->> 'reuses_row')::integer AS owner FROM csv_row_jobs j"
            " WHERE j.batch_id = %s AND j.usage ? 'reuses_row' AND (j.usage ->> 'reuses_row')::integer = ANY (%s)"
            " ORDER BY j.row_number", [batch_id, numbers]).fetchall() if numbers else []
        edges = {**params, "first": numbers[0] if numbers else 0, "last": numbers[-1] if numbers else 2**31 - 1}
        more = conn.execute(
            f"SELECT EXISTS (SELECT 1 FROM {JOBS_WITH_REVIEWS} WHERE j.batch_id = %(batch)s AND {where}"
            "                AND j.row_number < %(first)s) AS earlier,"
            f" EXISTS (SELECT 1 FROM {JOBS_WITH_REVIEWS} WHERE j.batch_id = %(batch)s AND {where}"
            "          AND j.row_number > %(last)s) AS later", edges).fetchone()
        filters = ", ".join(f"count(*) FILTER (WHERE {condition}) AS products_{name}"
                            for name, condition in REVIEW_FILTERS.items())
        images = " + ".join(f"{_has(s)}::int" for s in ImageStyle)
        counts = conn.execute(
            f"SELECT count(*) AS products, coalesce(sum({images}), 0) AS images,"
            f" coalesce(sum({_images('unreviewed')}) FILTER (WHERE j.status = 'completed'), 0) AS to_review,"
            f" coalesce(sum({_images('approved')}), 0) AS approved,"
            f" coalesce(sum({_images('rejected')}), 0) AS rejected,"
            " count(*) FILTER (WHERE j.checkpoint ? 'regenerate') AS redoing,"
            " count(*) FILTER (WHERE j.status = 'failed') AS failed,"
            " count(*) FILTER (WHERE j.status = 'completed' AND jsonb_path_exists(coalesce(j.generated_images,"
            "   '[]'), '$[*] ? (@.edited == false)')) AS without_photo,"
            f" coalesce(sum({_NOT_READY}), 0) AS not_ready, count(*) FILTER (WHERE {REVIEW_FILTERS['needs_eyes']})"
            f" AS needs_eyes, {filters}"
            f" FROM {JOBS_WITH_REVIEWS} WHERE j.batch_id = %(batch)s AND {_PRODUCT_ROW}", params).fetchone()
    assert more is not None and counts is not None
    return {"rows": rows, "variants": variants, "earlier": bool(more["earlier"]), "later": bool(more["later"]),
            "counts": {k: int(v) for k, v in counts.items()}}
