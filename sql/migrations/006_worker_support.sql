-- What the worker pool asks besides claiming and reporting: whether any work is left (for --until-done), which
-- big batches deserve a dedicated worker, and writing the pipeline's step logs in bulk. All for the service role.

-- Jobs still to do in scope: pending jobs of batches that can hand them out, plus jobs in flight anywhere (they
-- may come back if their worker dies). Zero means a --until-done worker may exit.
CREATE OR REPLACE FUNCTION csv_outstanding_jobs(p_batch_id uuid DEFAULT NULL, p_user_id uuid DEFAULT NULL)
RETURNS bigint
LANGUAGE sql STABLE AS $$
    SELECT count(*) FROM (
        SELECT 1 FROM csv_batches b
        WHERE (p_batch_id IS NULL OR b.id = p_batch_id)
          AND (p_user_id IS NULL OR b.user_id = p_user_id)
          AND (
              (b.status IN ('queued', 'processing')
               AND EXISTS (SELECT 1 FROM csv_row_jobs p WHERE p.batch_id = b.id AND p.status = 'pending'))
              OR EXISTS (SELECT 1 FROM csv_row_jobs f
                         WHERE f.batch_id = b.id AND f.status IN ('claimed', 'processing')))
    ) t;
$$;

-- Active batches with more than p_threshold rows and work still pending: the supervisor starts a dedicated
-- worker for each (up to its limit), using the batch's own max_concurrent_jobs. Oldest first.
CREATE OR REPLACE FUNCTION csv_batches_needing_dedicated_workers(p_threshold integer, p_user_id uuid DEFAULT NULL)
RETURNS TABLE (batch_id uuid, user_id uuid, total_rows integer, max_concurrent_jobs integer)
LANGUAGE sql STABLE AS $$
    SELECT b.id, b.user_id, b.total_rows, b.max_concurrent_jobs
    FROM csv_batches b
    WHERE b.status IN ('queued', 'processing')
      AND b.total_rows > p_threshold
      AND (p_user_id IS NULL OR b.user_id = p_user_id)
      AND EXISTS (SELECT 1 FROM csv_row_jobs p WHERE p.batch_id = b.id AND p.status = 'pending')
    ORDER BY b.created_at, b.id;
$$;

-- Write several log rows at once (the pipeline's steps), each a JSON object with batch_id, row_job_id,
-- row_number, log_level, message, operation and details.
CREATE OR REPLACE FUNCTION write_csv_processing_logs(p_worker_id text, p_entries jsonb)
RETURNS integer
LANGUAGE sql AS $$
    WITH ins AS (
        INSERT INTO csv_processing_logs (batch_id, row_job_id, row_number, worker_instance, log_level, message,
                                         operation, details)
        SELECT e.batch_id, e.row_job_id, e.row_number, p_worker_id, coalesce(e.log_level, 'INFO'), e.message,
               e.operation, coalesce(e.details, '{}')
        FROM jsonb_to_recordset(p_entries) AS e(batch_id uuid, row_job_id bigint, row_number integer,
                                                log_level text, message text, operation text, details jsonb)
        RETURNING 1
    )
    SELECT count(*)::integer FROM ins;
$$;

REVOKE EXECUTE ON FUNCTION
    csv_outstanding_jobs(uuid, uuid),
    csv_batches_needing_dedicated_workers(integer, uuid),
    write_csv_processing_logs(text, jsonb)
FROM PUBLIC, anon, authenticated;
GRANT EXECUTE ON FUNCTION
    csv_outstanding_jobs(uuid, uuid),
    csv_batches_needing_dedicated_workers(integer, uuid),
    write_csv_processing_logs(text, jsonb)
TO service_role;
