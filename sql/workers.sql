-- workers.sql: the registered workers and what the pool asks besides claiming and reporting: heartbeats, worker
-- health, cron's cleanup of dead workers, whether any work is left (for --until-done), which big batches deserve a
-- dedicated worker, and writing the pipeline's step logs in bulk.

-- Internal: fold the counter shards of every batch with none of its rows in flight (a worker stopped: the batches
-- it worked on may have no other worker), so that their table rows are current.
-- Locks: each such batch row in id order, then its counter shards.
CREATE OR REPLACE FUNCTION csv_fold_idle_batches()
RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT DISTINCT c.batch_id FROM csv_batch_counters c ORDER BY c.batch_id LOOP
        IF NOT EXISTS (SELECT 1 FROM csv_row_jobs j
                       WHERE j.batch_id = r.batch_id AND j.status IN ('claimed', 'processing')) THEN
            PERFORM 1 FROM csv_batches b WHERE b.id = r.batch_id FOR NO KEY UPDATE;
            PERFORM csv_fold_batch_counters(r.batch_id, true);
        END IF;
    END LOOP;
END
$$;

-- Register a worker or refresh its heartbeat and statistics. A worker reporting 'stopped' has released its jobs.
-- was_stopped tells a worker that cleanup declared it dead since its last heartbeat (its jobs were released, so
-- its results will be refused by the fence).
-- Locks: the worker row.
CREATE OR REPLACE FUNCTION update_csv_worker_heartbeat(
    p_instance_id text,
    p_status text DEFAULT 'idle',
    p_current_job_count integer DEFAULT 0,
    p_total_jobs_processed integer DEFAULT 0,
    p_total_jobs_failed integer DEFAULT 0,
    p_max_concurrent_jobs integer DEFAULT 1,
    p_user_id uuid DEFAULT NULL,
    p_batch_id uuid DEFAULT NULL,
    p_hostname text DEFAULT NULL,
    p_pid integer DEFAULT NULL
) RETURNS TABLE (instance_id text, status text, was_stopped boolean)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_previous text;
BEGIN
    SELECT w.status INTO v_previous FROM csv_processing_workers w WHERE w.instance_id = p_instance_id
    FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        INSERT INTO csv_processing_logs (batch_id, worker_instance, log_level, message, operation, details)
        VALUES (p_batch_id, p_instance_id, 'INFO',
                format('worker started on %s (pid %s)', coalesce(p_hostname, '?'), coalesce(p_pid::text, '?')),
                'worker_started',
                jsonb_build_object('user_id', p_user_id, 'batch_id', p_batch_id,
                                   'max_concurrent_jobs', p_max_concurrent_jobs));
    ELSIF p_status = 'stopped' AND v_previous <> 'stopped' THEN
        INSERT INTO csv_processing_logs (batch_id, worker_instance, log_level, message, operation, details)
        VALUES (p_batch_id, p_instance_id, 'INFO',
                format('worker stopped after %s jobs (%s failed)', p_total_jobs_processed, p_total_jobs_failed),
                'worker_stopped', '{}');
    END IF;

    INSERT INTO csv_processing_workers AS w (
        instance_id, user_id, batch_id, status, max_concurrent_jobs, current_job_count, total_jobs_processed,
        total_jobs_failed, last_heartbeat, hostname, pid, stopped_at)
    VALUES (p_instance_id, p_user_id, p_batch_id, p_status, greatest(p_max_concurrent_jobs, 1),
            greatest(p_current_job_count, 0), p_total_jobs_processed, p_total_jobs_failed, now(), p_hostname, p_pid,
            CASE WHEN p_status = 'stopped' THEN now() END)
    ON CONFLICT (instance_id) DO UPDATE SET
        status = excluded.status,
        user_id = excluded.user_id,
        batch_id = excluded.batch_id,
        max_concurrent_jobs = excluded.max_concurrent_jobs,
        current_job_count = excluded.current_job_count,
        total_jobs_processed = excluded.total_jobs_processed,
        total_jobs_failed = excluded.total_jobs_failed,
        last_heartbeat = now(),
        hostname = coalesce(excluded.hostname, w.hostname),
        pid = coalesce(excluded.pid, w.pid),
        stopped_at = CASE WHEN excluded.status = 'stopped' THEN coalesce(w.stopped_at, now()) END;

    IF p_status = 'stopped' AND v_previous IS DISTINCT FROM 'stopped' THEN
        PERFORM csv_fold_idle_batches();
    END IF;
    RETURN QUERY SELECT p_instance_id, p_status, coalesce(v_previous = 'stopped' AND p_status <> 'stopped', false);
END
$$;

-- Cron's job: workers without a heartbeat for p_timeout_minutes are marked stopped, and every job held by a
-- stopped or silent worker goes back to pending (counting a retry) or fails past max_retries. Safe when two run
-- at once: each worker is stopped by one of them (row lock) and each job released by one (SKIP LOCKED).
-- A negative timeout is refused (it would declare live workers dead).
-- Locks: stale worker rows, then their job rows, then batch rows in id order.
CREATE OR REPLACE FUNCTION cleanup_stale_csv_workers(p_timeout_minutes numeric DEFAULT 5)
RETURNS TABLE (workers_stopped integer, jobs_released integer, jobs_failed integer)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_cutoff timestamptz;
    v_workers integer;
    v_ids bigint[];
    v_released integer := 0;
    v_failed integer := 0;
BEGIN
    IF p_timeout_minutes IS NULL OR p_timeout_minutes < 0 THEN
        RAISE EXCEPTION 'the cleanup timeout must be zero or more minutes, not %',
            coalesce(p_timeout_minutes::text, 'NULL')
            USING ERRCODE = '22023', HINT = 'pass p_timeout_minutes >= 0 (the default is 5)';
    END IF;
    v_cutoff := now() - make_interval(secs => (p_timeout_minutes * 60)::double precision);
    WITH stale AS (
        UPDATE csv_processing_workers w
           SET status = 'stopped', stopped_at = now(), current_job_count = 0
         WHERE w.status <> 'stopped' AND w.last_heartbeat < v_cutoff
        RETURNING w.instance_id, w.batch_id, w.last_heartbeat
    ), logged AS (
        INSERT INTO csv_processing_logs (batch_id, worker_instance, log_level, message, operation, details)
        SELECT s.batch_id, s.instance_id, 'WARN',
               format('worker marked stopped: no heartbeat since %s', s.last_heartbeat), 'worker_stale',
               jsonb_build_object('last_heartbeat', s.last_heartbeat)
        FROM stale s
    )
    SELECT count(*) INTO v_workers FROM stale;

    SELECT array_agg(t.id) INTO v_ids FROM (
        SELECT j.id FROM csv_row_jobs j
        WHERE j.status IN ('claimed', 'processing')
          AND (
              EXISTS (SELECT 1 FROM csv_processing_workers w
                      WHERE w.instance_id = j.claimed_by
                        AND (w.status = 'stopped' OR w.last_heartbeat < v_cutoff))
              OR (NOT EXISTS (SELECT 1 FROM csv_processing_workers w WHERE w.instance_id = j.claimed_by)
                  AND j.claimed_at < v_cutoff))
        ORDER BY j.id
        FOR UPDATE OF j SKIP LOCKED
    ) t;

    IF v_ids IS NOT NULL THEN
        SELECT rel.released, rel.failed INTO v_released, v_failed
        FROM csv_release_jobs(v_ids, true, 'the worker holding the row stopped (cleanup)') rel;
    END IF;
    -- Rows waiting on OpenAI are held by their submission, not by a worker, and stay as they are; a dead
    -- worker's lease on a submission is freed so that another driver goes on polling it at once.
    UPDATE csv_openai_submissions o SET locked_by = NULL, locked_until = NULL, updated_at = now()
     WHERE o.state <> 'done' AND o.locked_by IS NOT NULL
       AND EXISTS (SELECT 1 FROM csv_processing_workers w WHERE w.instance_id = o.locked_by AND w.status = 'stopped');
    RETURN QUERY SELECT v_workers, v_released, v_failed;
END
$$;

-- Registered workers (live ones, or all), with user_id and batch_id shown only to the service role and to the
-- owner of the user or batch a dedicated worker serves.
CREATE OR REPLACE FUNCTION get_csv_workers(p_include_stopped boolean DEFAULT false)
RETURNS TABLE (
    instance_id text, status text, hostname text, pid integer, last_heartbeat timestamptz,
    current_job_count integer, total_jobs_processed integer, total_jobs_failed integer, max_concurrent_jobs integer,
    started_at timestamptz, stopped_at timestamptz, user_id uuid, batch_id uuid
)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
    SELECT w.instance_id, w.status, w.hostname, w.pid, w.last_heartbeat, w.current_job_count,
           w.total_jobs_processed, w.total_jobs_failed, w.max_concurrent_jobs, w.started_at, w.stopped_at,
           CASE WHEN v.visible THEN w.user_id END, CASE WHEN v.visible THEN w.batch_id END
    FROM public.csv_processing_workers w
    CROSS JOIN LATERAL (
        SELECT public.csv_caller_is_service()
               OR (auth.uid() IS NOT NULL AND (
                   w.user_id = auth.uid()
                   OR EXISTS (SELECT 1 FROM public.csv_batches b WHERE b.id = w.batch_id AND b.user_id = auth.uid())))
    ) AS v(visible)
    WHERE p_include_stopped OR w.status <> 'stopped'
    ORDER BY w.status = 'stopped', w.last_heartbeat DESC;
$$;

-- Jobs still to do in scope: pending jobs of batches that can hand them out, plus jobs in flight anywhere (they
-- may come back if their worker dies), optionally of one processing mode. Zero means a --until-done worker may exit.
CREATE OR REPLACE FUNCTION csv_outstanding_jobs(
    p_batch_id uuid DEFAULT NULL,
    p_user_id uuid DEFAULT NULL,
    p_mode text DEFAULT NULL
) RETURNS bigint
LANGUAGE sql STABLE AS $$
    SELECT count(*) FROM (
        SELECT 1 FROM csv_batches b
        WHERE (p_batch_id IS NULL OR b.id = p_batch_id)
          AND (p_user_id IS NULL OR b.user_id = p_user_id)
          AND (p_mode IS NULL OR b.processing_mode = p_mode)
          AND (
              (b.status IN ('queued', 'processing')
               AND csv_batch_has_pending_jobs(b.id))
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
      AND b.processing_mode = 'sync'  -- OpenAI's Batch API does the work of the others
      AND (p_user_id IS NULL OR b.user_id = p_user_id)
      AND csv_batch_has_pending_jobs(b.id)
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
