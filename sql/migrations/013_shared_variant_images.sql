-- 013: variants that look the same share their images. csv_row_jobs.depends_on points a row at the earlier row
-- of its product with the same photo and look-changing options (set by the upload); the claim holds such a row
-- back until that row has finished, the worker then reuses its images at no cost, and finishing a row wakes the
-- workers for the rows waiting on it. csv_row_job_product() tells the worker which row that is.

ALTER TABLE csv_row_jobs ADD COLUMN IF NOT EXISTS depends_on bigint;
CREATE INDEX IF NOT EXISTS csv_row_jobs_depends_on_idx ON csv_row_jobs (depends_on) WHERE depends_on IS NOT NULL;

-- The whole product of a job: its stored fields, else the row_data column the batch maps the field from, else ''.
-- Jobs whose product holds every field (written before the lean layout) come out unchanged.
CREATE OR REPLACE FUNCTION csv_row_job_product(p_row_data json, p_product jsonb, p_column_mapping jsonb)
RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT jsonb_object_agg(f.name, coalesce(p_product ->> f.name,
                                             p_row_data ->> (p_column_mapping -> 'row_data_keys' ->> f.name),
                                             ''))
           -- the earlier row whose images this one reuses (see csv_row_jobs.depends_on), when there is one
           || CASE WHEN p_product ? 'reuse_of_row' THEN jsonb_build_object('reuse_of_row', p_product ->> 'reuse_of_row')
                   ELSE '{}'::jsonb END
    FROM unnest(ARRAY['country', 'product_type', 'size', 'mpn', 'description', 'title', 'image_url']) AS f(name);
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
    v_mappings jsonb[];
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
    SELECT array_agg(b.id ORDER BY b.created_at, b.id), array_agg(b.user_id ORDER BY b.created_at, b.id),
           array_agg(b.column_mapping ORDER BY b.created_at, b.id)
      INTO v_batches, v_owners, v_mappings
      FROM csv_batches b
     WHERE b.status IN ('queued', 'processing')
       AND (p_batch_id IS NULL OR b.id = p_batch_id)
       AND (p_user_id IS NULL OR b.user_id = p_user_id)
       AND csv_batch_has_pending_jobs(b.id);
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
                                                 ORDER BY p.id + 0 LIMIT p_limit) q)::integer ORDER BY t.n)
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
                  -- a row that reuses another's images waits until that row has finished
                  AND (j.depends_on IS NULL OR NOT EXISTS (
                      SELECT 1 FROM csv_row_jobs d
                      WHERE d.id = j.depends_on AND d.status IN ('pending', 'claimed', 'processing')))
                ORDER BY j.id + 0  -- only csv_row_jobs_pending_idx has this order (see tables.sql)
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
            SELECT c.id, c.batch_id, v_owners[i], c.row_number, c.row_data::jsonb,
                   csv_row_job_product(c.row_data, c.product, v_mappings[i]), c.trigger_text,
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

-- Report the results of several jobs in one transaction. p_results is a JSON array of objects with job_id,
-- attempt (the claim token from the claim), status ('completed', 'failed', or 'pending' to retry later, which
-- counts a retry and fails the job past max_retries), and optionally trigger_text, generated_prompts,
-- generated_images, generated_tags, processing_time_seconds, error_message, cost_usd and usage.
-- Fenced: with a worker id, a job changes only while that worker holds its current attempt (an attempt left out
-- matches any attempt of that worker); otherwise applied is false and the caller knows it lost the job. Without
-- a worker id (p_worker_id NULL, the single-call contract) a result applies to any claimed or processing job,
-- and its log line says it was unfenced. Batch counters are updated in the same transaction, once per batch.
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
    ), held AS (
        -- Who held each job before this update (the update clears claimed_by); for the log line.
        SELECT j.id, j.claimed_by FROM csv_row_jobs j JOIN input i ON i.job_id = j.id
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
          AND j.status IN ('claimed', 'processing')
          AND (p_worker_id IS NULL
               OR (j.claimed_by = p_worker_id AND (i.attempt IS NULL OR j.attempt = i.attempt)))
        RETURNING j.id, j.batch_id, j.row_number, j.status, j.error_message, j.retry_count,
                  j.processing_time_seconds, coalesce(i.cost_usd, 0) AS cost
    ), logged AS (
        INSERT INTO csv_processing_logs (batch_id, row_job_id, row_number, worker_instance, log_level, message,
                                         operation, details)
        SELECT u.batch_id, u.id, u.row_number, coalesce(p_worker_id, h.claimed_by),
               CASE u.status WHEN 'completed' THEN 'INFO' WHEN 'failed' THEN 'ERROR' ELSE 'WARN' END,
               CASE u.status
                   WHEN 'completed' THEN 'row completed'
                   WHEN 'failed' THEN 'row failed: ' || coalesce(u.error_message, 'unknown error')
                   ELSE format('row will be retried (retry %s): %s', u.retry_count,
                               coalesce(u.error_message, 'unknown error'))
               END
               || CASE WHEN p_worker_id IS NULL THEN ' (unfenced: reported without a worker id)' ELSE '' END,
               CASE u.status WHEN 'completed' THEN 'row_completed' WHEN 'failed' THEN 'row_failed'
                             ELSE 'row_retry' END,
               jsonb_build_object('processing_time_seconds', u.processing_time_seconds, 'cost_usd', u.cost)
               || CASE WHEN p_worker_id IS NULL THEN jsonb_build_object('unfenced', true, 'claimed_by', h.claimed_by)
                       ELSE '{}'::jsonb END
        FROM upd u LEFT JOIN held h ON h.id = u.id
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
        -- Rows put back for a retry, and rows that were waiting for a row that just finished, are work to hand out.
        IF 'pending' = ANY (v_statuses)
           OR EXISTS (SELECT 1 FROM csv_row_jobs d WHERE d.depends_on = ANY (v_ids) AND d.status = 'pending') THEN
            PERFORM pg_notify('csv_row_jobs', '');
        END IF;
    END IF;

    RETURN QUERY
    SELECT i.job_id, t.id IS NOT NULL, t.status
    FROM jsonb_to_recordset(p_results) AS i(job_id bigint)
    LEFT JOIN unnest(v_ids, v_statuses) AS t(id, status) ON t.id = i.job_id;
END
$$;
