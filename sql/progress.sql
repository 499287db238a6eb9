-- progress.sql: a batch's progress, read from the counters the result functions keep (results.sql: the batch row
-- plus its counter shards), never from a count over all of the batch's jobs.

-- A batch's progress from its counters (never a count over the job table, except the handful of jobs in
-- flight, read from their small partial index). Runs as the caller: row-level security hides other users'
-- batches, which then simply return no row.
CREATE OR REPLACE FUNCTION get_csv_batch_progress(p_batch_id uuid)
RETURNS TABLE (
    batch_id uuid, user_id uuid, original_filename text, status text, total_rows integer, processed_rows integer,
    successful_rows integer, failed_rows integer, skipped_rows integer, pending_rows integer,
    in_flight_rows integer, percentage numeric, rows_per_minute numeric, eta_seconds numeric,
    active_workers integer, cost_usd numeric, created_at timestamptz, started_at timestamptz,
    completed_at timestamptz, updated_at timestamptz
)
LANGUAGE sql STABLE AS $$
    WITH c AS (
        -- the counts not yet folded into the batch row (a shard row per backend that has reported
        -- since the last fold, about a second ago; see csv_add_batch_results)
        SELECT coalesce(sum(c.successful_rows), 0)::integer AS ok, coalesce(sum(c.failed_rows), 0)::integer AS bad,
               coalesce(sum(c.cost_usd), 0) AS cost
        FROM csv_batch_counters c WHERE c.batch_id = p_batch_id
    ), b AS (
        SELECT x.id, x.user_id, x.original_filename, x.status, x.total_rows,
               x.processed_rows + c.ok + c.bad AS processed_rows, x.successful_rows + c.ok AS successful_rows,
               x.failed_rows + c.bad AS failed_rows, x.skipped_rows, x.cost_usd + c.cost AS cost_usd,
               x.created_at, x.started_at, x.completed_at, x.updated_at
        FROM csv_batches x CROSS JOIN c WHERE x.id = p_batch_id
    ), f AS (
        SELECT count(*)::integer AS in_flight, count(DISTINCT j.claimed_by)::integer AS workers
        FROM csv_row_jobs j
        WHERE j.batch_id = p_batch_id AND j.status IN ('claimed', 'processing')
    ), r AS (
        SELECT b.*, CASE
            WHEN b.started_at IS NULL THEN 0::numeric
            WHEN extract(epoch FROM coalesce(b.completed_at, now()) - b.started_at) <= 0 THEN 0::numeric
            ELSE round(b.processed_rows / (extract(epoch FROM coalesce(b.completed_at, now()) - b.started_at)
                                           / 60.0), 1)
        END AS rate
        FROM b
    )
    SELECT r.id, r.user_id, r.original_filename, r.status, r.total_rows, r.processed_rows, r.successful_rows,
           r.failed_rows, r.skipped_rows,
           greatest(r.total_rows - r.processed_rows - f.in_flight, 0),
           f.in_flight,
           CASE WHEN r.total_rows = 0 THEN 100::numeric
                ELSE round(100.0 * r.processed_rows / r.total_rows, 1) END,
           r.rate,
           CASE WHEN r.processed_rows >= r.total_rows THEN 0::numeric
                WHEN r.rate > 0 THEN round((r.total_rows - r.processed_rows) / r.rate * 60.0)
                ELSE NULL END,
           f.workers,
           r.cost_usd, r.created_at, r.started_at, r.completed_at, r.updated_at
    FROM r CROSS JOIN f;
$$;
