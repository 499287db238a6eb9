-- The queue: the five functions the seed design names (claim_next_csv_row_job, update_csv_row_job_result,
-- update_csv_worker_heartbeat, get_csv_batch_progress, cleanup_stale_csv_workers), the set-based companions that
-- workers call to claim and report several jobs per transaction, and the internal helpers they share.
-- Python calls these by name; all queue logic lives here so that every client agrees on it.
--
-- Lock order, to stay free of deadlocks: job rows first (claims take them with SKIP LOCKED), then batch rows in
-- ascending id order (csv_add_batch_results is only ever called in that order).

-- Internal: add finished rows to a batch's counters, complete the batch when every row is done, and tell watchers.
-- Locks: the batch row (FOR NO KEY UPDATE through UPDATE) until the caller's transaction ends.
CREATE OR REPLACE FUNCTION csv_add_batch_results(
    p_batch_id uuid,
    p_successful integer,
    p_failed integer,
    p_cost_usd numeric DEFAULT 0
) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_batch csv_batches;
    v_was text;
BEGIN
    SELECT b.status INTO v_was FROM csv_batches b WHERE b.id = p_batch_id FOR NO KEY UPDATE;
    UPDATE csv_batches b SET
        processed_rows = b.processed_rows + p_successful + p_failed,
        successful_rows = b.successful_rows + p_successful,
        failed_rows = b.failed_rows + p_failed,
        cost_usd = b.cost_usd + coalesce(p_cost_usd, 0),
        processing_rate_rows_per_minute = CASE
            WHEN b.started_at IS NULL OR clock_timestamp() <= b.started_at THEN 0
            ELSE round((b.processed_rows + p_successful + p_failed)
                       / (extract(epoch FROM clock_timestamp() - b.started_at) / 60.0), 2)
        END,
        status = CASE
            WHEN b.processed_rows + p_successful + p_failed >= b.total_rows
                 AND b.status IN ('queued', 'processing', 'paused') THEN 'completed'
            ELSE b.status
        END,
        completed_at = CASE
            WHEN b.processed_rows + p_successful + p_failed >= b.total_rows AND b.completed_at IS NULL
                 THEN now()
            ELSE b.completed_at
        END,
        updated_at = now()
    WHERE b.id = p_batch_id
    RETURNING * INTO v_batch;

    IF v_batch.status = 'completed' AND v_was IS DISTINCT FROM 'completed' THEN
        INSERT INTO csv_processing_logs (batch_id, log_level, message, operation, details)
        VALUES (p_batch_id, 'INFO',
                format('batch completed: %s of %s rows succeeded, %s failed',
                       v_batch.successful_rows, v_batch.total_rows, v_batch.failed_rows),
                'batch_completed',
                jsonb_build_object('successful_rows', v_batch.successful_rows,
                                   'failed_rows', v_batch.failed_rows,
                                   'cost_usd', v_batch.cost_usd));
    END IF;
    PERFORM pg_notify('csv_batch_progress', p_batch_id::text);
END
$$;

-- Internal: put claimed jobs back to pending, counting a retry when p_count_retry (a job past max_retries fails
-- with p_reason instead), log it, and update the counters of any batch whose rows failed.
-- Locks: the given job rows (waits for them), then the affected batch rows in id order.
CREATE OR REPLACE FUNCTION csv_release_jobs(p_job_ids bigint[], p_count_retry boolean, p_reason text)
RETURNS TABLE (released integer, failed integer)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_released integer := 0;
    v_failed integer := 0;
    r record;
BEGIN
    IF p_job_ids IS NULL OR cardinality(p_job_ids) = 0 THEN
        RETURN QUERY SELECT 0, 0;
        RETURN;
    END IF;

    CREATE TEMP TABLE IF NOT EXISTS csv_released_jobs (
        id bigint, batch_id uuid, row_number integer, status text, held_by text, retry_count integer
    ) ON COMMIT DROP;
    TRUNCATE csv_released_jobs;

    WITH held AS (
        SELECT j.id, j.claimed_by FROM csv_row_jobs j
        WHERE j.id = ANY (p_job_ids) AND j.status IN ('claimed', 'processing')
        ORDER BY j.id
        FOR UPDATE
    ), rel AS (
        UPDATE csv_row_jobs j SET
            status = CASE WHEN p_count_retry AND j.retry_count >= j.max_retries THEN 'failed' ELSE 'pending' END,
            retry_count = j.retry_count
                + CASE WHEN p_count_retry AND j.retry_count < j.max_retries THEN 1 ELSE 0 END,
            error_message = CASE
                WHEN p_count_retry AND j.retry_count >= j.max_retries
                    THEN p_reason || format(' (gave up after %s retries)', j.retry_count)
                ELSE j.error_message
            END,
            completed_at = CASE WHEN p_count_retry AND j.retry_count >= j.max_retries THEN now() END,
            claimed_by = NULL,
            claimed_at = NULL,
            updated_at = now()
        FROM held
        WHERE j.id = held.id
        RETURNING j.id, j.batch_id, j.row_number, j.status, held.claimed_by, j.retry_count
    )
    INSERT INTO csv_released_jobs SELECT * FROM rel;

    INSERT INTO csv_processing_logs (batch_id, row_job_id, row_number, worker_instance, log_level, message,
                                     operation, details)
    SELECT rj.batch_id, rj.id, rj.row_number, rj.held_by,
           CASE WHEN rj.status = 'failed' THEN 'ERROR' WHEN p_count_retry THEN 'WARN' ELSE 'INFO' END,
           CASE WHEN rj.status = 'failed' THEN 'row failed: ' || p_reason
                WHEN p_count_retry THEN format('row released for retry %s: %s', rj.retry_count, p_reason)
                ELSE 'row released: ' || p_reason END,
           CASE WHEN rj.status = 'failed' THEN 'row_failed' ELSE 'row_released' END,
           jsonb_build_object('retry_count', rj.retry_count)
    FROM csv_released_jobs rj;

    SELECT count(*) FILTER (WHERE rj.status = 'pending'), count(*) FILTER (WHERE rj.status = 'failed')
      INTO v_released, v_failed
      FROM csv_released_jobs rj;

    FOR r IN
        SELECT rj.batch_id, count(*)::integer AS n FROM csv_released_jobs rj
        WHERE rj.status = 'failed' GROUP BY rj.batch_id ORDER BY rj.batch_id
    LOOP
        PERFORM csv_add_batch_results(r.batch_id, 0, r.n);
    END LOOP;

    IF v_released > 0 THEN
        PERFORM pg_notify('csv_row_jobs', '');
    END IF;
    RETURN QUERY SELECT v_released, v_failed;
END
$$;

-- Internal: reclaim jobs whose claim is older than the timeout and whose worker has stopped sending heartbeats
-- (a live worker keeps its jobs, however slow the AI provider is). Counts a retry.
-- Locks: the timed-out job rows, skipping any that another transaction holds.
CREATE OR REPLACE FUNCTION csv_reclaim_timed_out_jobs(p_timeout_minutes numeric)
RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    v_cutoff timestamptz := now() - make_interval(secs => (p_timeout_minutes * 60)::double precision);
    v_ids bigint[];
BEGIN
    SELECT array_agg(t.id) INTO v_ids FROM (
        SELECT j.id FROM csv_row_jobs j
        WHERE j.status IN ('claimed', 'processing')
          AND j.claimed_at < v_cutoff
          AND NOT EXISTS (
              SELECT 1 FROM csv_processing_workers w
              WHERE w.instance_id = j.claimed_by AND w.status <> 'stopped' AND w.last_heartbeat >= v_cutoff)
        ORDER BY j.id
        FOR UPDATE OF j SKIP LOCKED
    ) t;
    IF v_ids IS NULL THEN
        RETURN 0;
    END IF;
    PERFORM csv_release_jobs(v_ids, true, 'claim timed out (the worker stopped sending heartbeats)');
    RETURN cardinality(v_ids);
END
$$;

-- Claim up to p_limit pending jobs for a worker, fairly across batches: slots go one by one to the batch with
-- the fewest jobs in flight (counting the slots already given), so a small batch uploaded beside a huge one gets
-- its rows in flight at once instead of waiting behind it. Optionally only one batch (dedicated workers) or one
-- user's batches. Never hands out jobs of a batch that is not queued or processing (cancelled, paused,
-- completed). Reclaims timed-out claims first. The first claim moves a batch to processing.
-- Locks: the claimed job rows (FOR UPDATE SKIP LOCKED, so claimers never wait on each other); a batch row only
-- on its first claim.
CREATE OR REPLACE FUNCTION claim_csv_row_jobs(
    p_worker_id text,
    p_batch_id uuid DEFAULT NULL,
    p_timeout_minutes numeric DEFAULT 5,
    p_limit integer DEFAULT 1,
    p_user_id uuid DEFAULT NULL
) RETURNS TABLE (
    job_id bigint, batch_id uuid, user_id uuid, row_number integer, row_data jsonb, product jsonb,
    trigger_text text, attempt integer, retry_count integer, max_retries integer, checkpoint jsonb
)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_batches uuid[];
    v_owners uuid[];
    v_load integer[];
    v_available integer[];
    v_share integer[];
    v_n integer;
    v_best integer;
    v_remaining integer := p_limit;
    v_got integer;
    v_pass integer;
    v_want integer;
    i integer;
    s integer;
BEGIN
    IF p_worker_id IS NULL OR p_worker_id = '' THEN
        RAISE EXCEPTION 'claim_csv_row_jobs: a worker id is required' USING ERRCODE = '22023';
    END IF;
    IF p_limit IS NULL OR p_limit < 1 THEN
        RETURN;
    END IF;
    PERFORM csv_reclaim_timed_out_jobs(coalesce(p_timeout_minutes, 5));

    -- Batches that can hand out work (a short list, from csv_batches_active_idx).
    SELECT array_agg(b.id ORDER BY b.created_at, b.id), array_agg(b.user_id ORDER BY b.created_at, b.id)
      INTO v_batches, v_owners
      FROM csv_batches b
     WHERE b.status IN ('queued', 'processing')
       AND (p_batch_id IS NULL OR b.id = p_batch_id)
       AND (p_user_id IS NULL OR b.user_id = p_user_id)
       AND EXISTS (SELECT 1 FROM csv_row_jobs p WHERE p.batch_id = b.id AND p.status = 'pending');
    IF v_batches IS NULL THEN
        RETURN;
    END IF;
    v_n := cardinality(v_batches);
    IF v_n = 1 THEN
        v_share := ARRAY[p_limit];
    ELSE
        -- Several batches: count each one's jobs in flight and (up to p_limit) pending jobs, both from small
        -- partial indexes, and give the slots one by one to the least loaded.
        SELECT array_agg((SELECT count(*) FROM csv_row_jobs f
                           WHERE f.batch_id = t.id AND f.status IN ('claimed', 'processing'))::integer ORDER BY t.n),
               array_agg((SELECT count(*) FROM (SELECT 1 FROM csv_row_jobs p
                                                 WHERE p.batch_id = t.id AND p.status = 'pending'
                                                 LIMIT p_limit) q)::integer ORDER BY t.n)
          INTO v_load, v_available
          FROM unnest(v_batches) WITH ORDINALITY AS t(id, n);
        v_share := array_fill(0, ARRAY[v_n]);
        FOR s IN 1..p_limit LOOP
            v_best := NULL;
            FOR i IN 1..v_n LOOP
                IF v_share[i] < v_available[i]
                   AND (v_best IS NULL OR v_load[i] + v_share[i] < v_load[v_best] + v_share[v_best]) THEN
                    v_best := i;
                END IF;
            END LOOP;
            EXIT WHEN v_best IS NULL;
            v_share[v_best] := v_share[v_best] + 1;
        END LOOP;
    END IF;

    -- First pass: each batch's share; second pass: whatever other claimers took from under us, from any batch.
    FOR v_pass IN 1..2 LOOP
        FOR i IN 1..v_n LOOP
            v_want := CASE WHEN v_pass = 1 THEN least(v_share[i], v_remaining) ELSE v_remaining END;
            CONTINUE WHEN v_want <= 0;
            RETURN QUERY
            WITH picked AS (
                SELECT j.id FROM csv_row_jobs j
                WHERE j.batch_id = v_batches[i] AND j.status = 'pending'
                ORDER BY j.id + 0  -- only csv_row_jobs_pending_idx has this order (see 002_tables.sql)
                LIMIT v_want
                FOR UPDATE SKIP LOCKED
            ), claimed AS (
                UPDATE csv_row_jobs j SET
                    status = 'claimed',
                    claimed_by = p_worker_id,
                    claimed_at = now(),
                    attempt = j.attempt + 1,
                    updated_at = now()
                FROM picked
                WHERE j.id = picked.id
                RETURNING j.id, j.batch_id, j.row_number, j.row_data, j.product, j.trigger_text, j.attempt,
                          j.retry_count, j.max_retries, j.checkpoint
            )
            SELECT c.id, c.batch_id, v_owners[i], c.row_number, c.row_data, c.product, c.trigger_text,
                   c.attempt, c.retry_count, c.max_retries, c.checkpoint
            FROM claimed c ORDER BY c.id;
            GET DIAGNOSTICS v_got = ROW_COUNT;
            IF v_got > 0 THEN
                UPDATE csv_batches b
                   SET status = 'processing', started_at = coalesce(b.started_at, now()), updated_at = now()
                 WHERE b.id = v_batches[i] AND b.status = 'queued';
                IF FOUND THEN
                    INSERT INTO csv_processing_logs (batch_id, worker_instance, log_level, message, operation)
                    VALUES (v_batches[i], p_worker_id, 'INFO', 'batch processing started', 'batch_started');
                END IF;
                v_remaining := v_remaining - v_got;
            END IF;
            EXIT WHEN v_remaining <= 0;
        END LOOP;
        EXIT WHEN v_remaining <= 0;
    END LOOP;
END
$$;

-- The seed's single-job claim: the next pending job (optionally of one batch) or no row.
-- Locks: as claim_csv_row_jobs.
CREATE OR REPLACE FUNCTION claim_next_csv_row_job(
    p_worker_id text,
    p_batch_id uuid DEFAULT NULL,
    p_timeout_minutes numeric DEFAULT 5
) RETURNS TABLE (
    job_id bigint, batch_id uuid, user_id uuid, row_number integer, row_data jsonb, product jsonb,
    trigger_text text, attempt integer, retry_count integer, max_retries integer, checkpoint jsonb
)
LANGUAGE sql AS $$
    SELECT * FROM claim_csv_row_jobs(p_worker_id, p_batch_id, p_timeout_minutes, 1);
$$;

-- Report the results of several jobs in one transaction. p_results is a JSON array of objects with job_id,
-- attempt (the claim token from the claim), status ('completed', 'failed', or 'pending' to retry later, which
-- counts a retry and fails the job past max_retries), and optionally trigger_text, generated_prompts,
-- generated_images, generated_tags, processing_time_seconds, error_message, cost_usd and usage.
-- Fenced: a job changes only while p_worker_id holds its current attempt; otherwise applied is false and the
-- caller knows it lost the job. Batch counters are updated in the same transaction, once per batch.
-- Locks: the reported job rows, then their batch rows in id order.
CREATE OR REPLACE FUNCTION update_csv_row_job_results(p_worker_id text, p_results jsonb)
RETURNS TABLE (job_id bigint, applied boolean, status text)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_ids bigint[];
    v_batches uuid[];
    v_statuses text[];
    v_costs numeric[];
    r record;
BEGIN
    IF jsonb_typeof(p_results) IS DISTINCT FROM 'array' THEN
        RAISE EXCEPTION 'update_csv_row_job_results: p_results must be a JSON array' USING ERRCODE = '22023';
    END IF;
    IF EXISTS (SELECT 1 FROM jsonb_array_elements(p_results) e
               WHERE NOT (e ->> 'status' = ANY (ARRAY['completed', 'failed', 'pending']))) THEN
        RAISE EXCEPTION 'update_csv_row_job_results: status must be completed, failed or pending'
            USING ERRCODE = '22023';
    END IF;

    WITH input AS (
        SELECT * FROM jsonb_to_recordset(p_results) AS i(
            job_id bigint, attempt integer, status text, trigger_text text, generated_prompts jsonb,
            generated_images jsonb, generated_tags jsonb, processing_time_seconds numeric, error_message text,
            cost_usd numeric, usage jsonb)
    ), upd AS (
        UPDATE csv_row_jobs j SET
            status = CASE
                WHEN i.status <> 'pending' THEN i.status
                WHEN j.retry_count < j.max_retries THEN 'pending'
                ELSE 'failed'
            END,
            retry_count = j.retry_count
                + CASE WHEN i.status = 'pending' AND j.retry_count < j.max_retries THEN 1 ELSE 0 END,
            trigger_text = coalesce(i.trigger_text, j.trigger_text),
            generated_prompts = coalesce(i.generated_prompts, j.generated_prompts),
            generated_images = coalesce(i.generated_images, j.generated_images),
            generated_tags = coalesce(i.generated_tags, j.generated_tags),
            processing_time_seconds = coalesce(i.processing_time_seconds, j.processing_time_seconds),
            cost_usd = coalesce(j.cost_usd, 0) + coalesce(i.cost_usd, 0),
            usage = coalesce(i.usage, j.usage),
            error_message = CASE
                WHEN i.status = 'completed' THEN NULL
                WHEN i.status = 'pending' AND j.retry_count >= j.max_retries
                    THEN coalesce(i.error_message, 'failed') || format(' (gave up after %s retries)', j.retry_count)
                ELSE i.error_message
            END,
            completed_at = CASE WHEN i.status <> 'pending' OR j.retry_count >= j.max_retries THEN now() END,
            claimed_by = NULL,
            claimed_at = NULL,
            updated_at = now()
        FROM input i
        WHERE j.id = i.job_id
          AND j.claimed_by = p_worker_id
          AND j.attempt = i.attempt
          AND j.status IN ('claimed', 'processing')
        RETURNING j.id, j.batch_id, j.row_number, j.status, j.error_message, j.retry_count,
                  j.processing_time_seconds, coalesce(i.cost_usd, 0) AS cost
    ), logged AS (
        INSERT INTO csv_processing_logs (batch_id, row_job_id, row_number, worker_instance, log_level, message,
                                         operation, details)
        SELECT u.batch_id, u.id, u.row_number, p_worker_id,
               CASE u.status WHEN 'completed' THEN 'INFO' WHEN 'failed' THEN 'ERROR' ELSE 'WARN' END,
               CASE u.status
                   WHEN 'completed' THEN 'row completed'
                   WHEN 'failed' THEN 'row failed: ' || coalesce(u.error_message, 'unknown error')
                   ELSE format('row will be retried (retry %s): %s', u.retry_count,
                               coalesce(u.error_message, 'unknown error'))
               END,
               CASE u.status WHEN 'completed' THEN 'row_completed' WHEN 'failed' THEN 'row_failed'
                             ELSE 'row_retry' END,
               jsonb_build_object('processing_time_seconds', u.processing_time_seconds, 'cost_usd', u.cost)
        FROM upd u
    )
    SELECT array_agg(u.id), array_agg(u.batch_id), array_agg(u.status), array_agg(u.cost)
      INTO v_ids, v_batches, v_statuses, v_costs
      FROM upd u;

    IF v_ids IS NOT NULL THEN
        FOR r IN
            SELECT t.batch_id,
                   count(*) FILTER (WHERE t.status = 'completed')::integer AS ok,
                   count(*) FILTER (WHERE t.status = 'failed')::integer AS bad,
                   sum(t.cost) AS cost
            FROM unnest(v_batches, v_statuses, v_costs) AS t(batch_id, status, cost)
            GROUP BY t.batch_id
            ORDER BY t.batch_id
        LOOP
            IF r.ok + r.bad > 0 OR r.cost > 0 THEN
                PERFORM csv_add_batch_results(r.batch_id, r.ok, r.bad, r.cost);
            END IF;
        END LOOP;
        IF 'pending' = ANY (v_statuses) THEN
            PERFORM pg_notify('csv_row_jobs', '');
        END IF;
    END IF;

    RETURN QUERY
    SELECT i.job_id, t.id IS NOT NULL, t.status
    FROM jsonb_to_recordset(p_results) AS i(job_id bigint)
    LEFT JOIN unnest(v_ids, v_statuses) AS t(id, status) ON t.id = i.job_id;
END
$$;

-- The seed's single-result call. Returns true when the result was stored, false when this worker no longer holds
-- the job (it timed out and was reclaimed): the caller must then drop its result.
-- Locks: as update_csv_row_job_results.
CREATE OR REPLACE FUNCTION update_csv_row_job_result(
    p_job_id bigint,
    p_status text,
    p_trigger_text text DEFAULT NULL,
    p_generated_prompts jsonb DEFAULT NULL,
    p_generated_images jsonb DEFAULT NULL,
    p_generated_tags jsonb DEFAULT NULL,
    p_processing_time_seconds numeric DEFAULT NULL,
    p_error_message text DEFAULT NULL,
    p_worker_id text DEFAULT NULL,
    p_attempt integer DEFAULT NULL
) RETURNS boolean
LANGUAGE sql AS $$
    SELECT coalesce((
        SELECT r.applied FROM update_csv_row_job_results(
            p_worker_id,
            jsonb_build_array(jsonb_build_object(
                'job_id', p_job_id, 'attempt', p_attempt, 'status', p_status, 'trigger_text', p_trigger_text,
                'generated_prompts', p_generated_prompts, 'generated_images', p_generated_images,
                'generated_tags', p_generated_tags, 'processing_time_seconds', p_processing_time_seconds,
                'error_message', p_error_message))) r
    ), false);
$$;

-- Save a step's result on a job while it is being processed (prompts, then each image), fenced like a result,
-- and mark the job processing. Returns false when the worker no longer holds the job.
-- Locks: the job row.
CREATE OR REPLACE FUNCTION save_csv_row_job_checkpoint(
    p_job_id bigint,
    p_worker_id text,
    p_attempt integer,
    p_checkpoint jsonb
) RETURNS boolean
LANGUAGE sql AS $$
    WITH upd AS (
        UPDATE csv_row_jobs j SET
            checkpoint = j.checkpoint || p_checkpoint,
            status = 'processing',
            updated_at = now()
        WHERE j.id = p_job_id AND j.claimed_by = p_worker_id AND j.attempt = p_attempt
          AND j.status IN ('claimed', 'processing')
        RETURNING 1
    )
    SELECT EXISTS (SELECT 1 FROM upd);
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

    RETURN QUERY SELECT p_instance_id, p_status, coalesce(v_previous = 'stopped' AND p_status <> 'stopped', false);
END
$$;

-- Put back every job a worker holds (except p_keep): on a clean shutdown without counting a retry; after a crash
-- with one, and the worker is marked stopped. A worker that lost its connection mid-claim calls it with the jobs
-- it knows about in p_keep, so a claim whose answer never arrived does not stay held forever by a live worker.
-- Locks: the worker row (after a crash), the worker's job rows, then batch rows in id order.
CREATE OR REPLACE FUNCTION release_csv_worker_jobs(
    p_worker_id text,
    p_count_retry boolean DEFAULT false,
    p_keep bigint[] DEFAULT '{}'
)
RETURNS TABLE (released integer, failed integer)
LANGUAGE plpgsql AS $$
BEGIN
    IF p_count_retry THEN
        UPDATE csv_processing_workers w
           SET status = 'stopped', stopped_at = coalesce(w.stopped_at, now()), current_job_count = 0
         WHERE w.instance_id = p_worker_id;
        IF FOUND THEN
            INSERT INTO csv_processing_logs (worker_instance, log_level, message, operation)
            VALUES (p_worker_id, 'WARN', 'worker process died; its rows were released', 'worker_died');
        END IF;
    END IF;
    RETURN QUERY SELECT * FROM csv_release_jobs(
        ARRAY(SELECT j.id FROM csv_row_jobs j
              WHERE j.claimed_by = p_worker_id AND j.status IN ('claimed', 'processing')
                AND NOT (j.id = ANY (coalesce(p_keep, '{}')))
              ORDER BY j.id),
        p_count_retry,
        CASE WHEN p_count_retry THEN format('worker %s died while holding the row', p_worker_id)
             ELSE format('worker %s let go of the row', p_worker_id) END);
END
$$;

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
    WITH b AS (
        SELECT * FROM csv_batches WHERE id = p_batch_id
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

-- Cron's job: workers without a heartbeat for p_timeout_minutes are marked stopped, and every job held by a
-- stopped or silent worker goes back to pending (counting a retry) or fails past max_retries. Safe when two run
-- at once: each worker is stopped by one of them (row lock) and each job released by one (SKIP LOCKED).
-- Locks: stale worker rows, then their job rows, then batch rows in id order.
CREATE OR REPLACE FUNCTION cleanup_stale_csv_workers(p_timeout_minutes numeric DEFAULT 5)
RETURNS TABLE (workers_stopped integer, jobs_released integer, jobs_failed integer)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_cutoff timestamptz := now() - make_interval(secs => (p_timeout_minutes * 60)::double precision);
    v_workers integer;
    v_ids bigint[];
    v_released integer := 0;
    v_failed integer := 0;
BEGIN
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
    RETURN QUERY SELECT v_workers, v_released, v_failed;
END
$$;
