-- 017: no hot batch row. Finishing rows add to a few counter shards per batch (csv_batch_counters) instead of the
-- batch's one row; get_csv_batch_progress adds them up; they are folded into csv_batches about once a second, at
-- completion and before a user's action; the batch completes exactly when its last row is done. The log table
-- loses its foreign key (a key-share lock on the batch row per log line) for the delete trigger. The single-job
-- claim has statements of its own that keep their plan; the pool's claim can start its rows (p_start); helpers
-- that were planned on every call are PL/pgSQL; a report no longer hashes the whole job table; a row's wait for
-- the row it reuses no longer reads the whole table.

ALTER TABLE csv_processing_logs DROP CONSTRAINT IF EXISTS csv_processing_logs_batch_id_fkey;

-- A batch's counters while its rows finish, spread over a few rows (see tables.sql).
CREATE TABLE IF NOT EXISTS csv_batch_counters (
    batch_id        uuid NOT NULL,
    shard           smallint NOT NULL,
    successful_rows integer NOT NULL DEFAULT 0,
    failed_rows     integer NOT NULL DEFAULT 0,
    cost_usd        numeric NOT NULL DEFAULT 0,
    PRIMARY KEY (batch_id, shard)
);

-- Deleting a batch deletes its jobs, logs and counter shards (there is no foreign key to cascade; see csv_row_jobs
-- and csv_processing_logs). It runs as the table owner, as a foreign key's cascade does, so a user deleting their
-- own batch also removes its rows although they may not delete them themselves.
CREATE OR REPLACE FUNCTION csv_delete_rows_of_deleted_batches() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
BEGIN
    DELETE FROM public.csv_row_jobs j USING deleted_batches d WHERE j.batch_id = d.id;
    DELETE FROM public.csv_processing_logs l USING deleted_batches d WHERE l.batch_id = d.id;
    DELETE FROM public.csv_batch_counters c USING deleted_batches d WHERE c.batch_id = d.id;
    RETURN NULL;
END
$$;

DROP TRIGGER IF EXISTS csv_batches_delete_jobs ON csv_batches;
CREATE TRIGGER csv_batches_delete_jobs AFTER DELETE ON csv_batches
    REFERENCING OLD TABLE AS deleted_batches
    FOR EACH STATEMENT EXECUTE FUNCTION csv_delete_rows_of_deleted_batches();
DROP FUNCTION IF EXISTS csv_delete_jobs_of_deleted_batches();

-- The whole product of a job: its stored fields, else the row_data column the batch maps the field from, else ''.
-- Jobs whose product holds every field (written before the lean layout) come out unchanged. One expression, field
-- by field, and STABLE as jsonb_build_object is, so that PostgreSQL inlines it into the query that calls it (the
-- claim, for every row it hands out) instead of calling a function per row.
CREATE OR REPLACE FUNCTION csv_row_job_product(p_row_data json, p_product jsonb, p_column_mapping jsonb)
RETURNS jsonb
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT jsonb_build_object(
        'country', coalesce(p_product ->> 'country', p_row_data ->> (p_column_mapping -> 'row_data_keys' ->> 'country'), ''),
        'product_type', coalesce(p_product ->> 'product_type', p_row_data ->> (p_column_mapping -> 'row_data_keys' ->> 'product_type'), ''),
        'size', coalesce(p_product ->> 'size', p_row_data ->> (p_column_mapping -> 'row_data_keys' ->> 'size'), ''),
        'mpn', coalesce(p_product ->> 'mpn', p_row_data ->> (p_column_mapping -> 'row_data_keys' ->> 'mpn'), ''),
        'description', coalesce(p_product ->> 'description', p_row_data ->> (p_column_mapping -> 'row_data_keys' ->> 'description'), ''),
        'title', coalesce(p_product ->> 'title', p_row_data ->> (p_column_mapping -> 'row_data_keys' ->> 'title'), ''),
        'image_url', coalesce(p_product ->> 'image_url', p_row_data ->> (p_column_mapping -> 'row_data_keys' ->> 'image_url'), ''))
           -- the earlier row whose images this one reuses (see csv_row_jobs.depends_on), when there is one
           || CASE WHEN p_product ? 'reuse_of_row' THEN jsonb_build_object('reuse_of_row', p_product ->> 'reuse_of_row')
                   ELSE '{}'::jsonb END;
$$;

-- Does the batch have a pending job? Read from the pending index in its order: with statistics taken right after
-- an upload (every row pending), an EXISTS lets the planner scan the table from the start instead, stepping over
-- every finished row of a big batch on every claim (tests/test_queue_functions.py counts the scans). A scalar
-- subquery, because PostgreSQL drops ORDER BY and LIMIT inside EXISTS. PL/pgSQL, so that the session keeps its
-- plan: PostgreSQL plans a SQL function's query again on every call it does not inline (every claim).
CREATE OR REPLACE FUNCTION csv_batch_has_pending_jobs(p_batch_id uuid)
RETURNS boolean
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN (SELECT p.id + 0 FROM csv_row_jobs p WHERE p.batch_id = p_batch_id AND p.status = 'pending'
            ORDER BY p.id + 0 LIMIT 1) IS NOT NULL;
END
$$;

-- Internal: has the row a pending row waits for (csv_row_jobs.depends_on: it reuses that row's images) finished?
-- A lookup by key: a NOT EXISTS in the claim is planned as a hashed subplan that reads the whole table.
CREATE OR REPLACE FUNCTION csv_dependency_done(p_depends_on bigint)
RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT coalesce((SELECT d.status FROM csv_row_jobs d WHERE d.id = p_depends_on), 'completed')
           NOT IN ('pending', 'claimed', 'processing');
$$;

-- Internal: a queued batch's first claim moves it to processing, and says so in its log.
-- Locks: the batch row.
CREATE OR REPLACE FUNCTION csv_start_batch(p_batch_id uuid, p_worker_id text)
RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE csv_batches b
       SET status = 'processing', started_at = coalesce(b.started_at, now()), updated_at = now()
     WHERE b.id = p_batch_id AND b.status = 'queued';
    IF FOUND THEN
        INSERT INTO csv_processing_logs (batch_id, worker_instance, log_level, message, operation)
        VALUES (p_batch_id, p_worker_id, 'INFO', 'batch processing started', 'batch_started');
    END IF;
END
$$;

DROP FUNCTION IF EXISTS claim_csv_row_jobs(text, uuid, numeric, integer, uuid, text);
-- Claim up to p_limit pending jobs for a worker, fairly across batches: slots go one by one to the batch with
-- the fewest jobs in flight (counting the slots already given), so a small batch uploaded beside a huge one gets
-- its rows in flight at once instead of waiting behind it. Optionally only one batch (dedicated workers) or one
-- user's batches. Never hands out jobs of a batch that is not queued or processing (cancelled, paused,
-- completed). p_mode picks the batches by processing mode: 'sync' (the default, and the only one the single-job
-- claim sees) or 'openai_batch' (the OpenAI batch driver's claim). p_start: the caller starts on every row at once,
-- so they are 'processing' from the claim on (one update a row instead of a claim and then a start_csv_row_jobs).
-- Reclaims timed-out claims first. The first claim moves a batch to processing.
-- Locks: the claimed job rows (FOR UPDATE SKIP LOCKED, so claimers never wait on each other); a batch row only
-- on its first claim.
CREATE OR REPLACE FUNCTION claim_csv_row_jobs(
    p_worker_id text,
    p_batch_id uuid DEFAULT NULL,
    p_timeout_minutes numeric DEFAULT 5,
    p_limit integer DEFAULT 1,
    p_user_id uuid DEFAULT NULL,
    p_mode text DEFAULT 'sync',
    p_start boolean DEFAULT false
) RETURNS TABLE (
    job_id bigint, batch_id uuid, user_id uuid, row_number integer, row_data jsonb, product jsonb,
    trigger_text text, attempt integer, retry_count integer, max_retries integer, checkpoint jsonb
)
LANGUAGE plpgsql
-- Its statements take parameters (the limit, the batch) whose values would make PostgreSQL plan each one afresh
-- on every call (a custom plan looks cheaper than the generic one for a limit of 10): planning cost more than
-- the claim. Their generic plans read the pending index in order and the picked rows by key.
SET plan_cache_mode = force_generic_plan
AS $$
#variable_conflict use_column
DECLARE
    v_batches uuid[];
    v_owners uuid[];
    v_mappings jsonb[];
    v_queued boolean[];
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
    -- Reclaim only when some claim is old enough (a look at the in-flight index by claim time): usually none is,
    -- and the call costs more than the look. A negative timeout goes to the call, which refuses it.
    IF p_timeout_minutes < 0
       OR EXISTS (SELECT 1 FROM csv_row_jobs j
                  WHERE j.status IN ('claimed', 'processing')
                    AND j.claimed_at < now() - make_interval(
                        secs => (coalesce(p_timeout_minutes, 5) * 60)::double precision)) THEN
        PERFORM csv_reclaim_timed_out_jobs(coalesce(p_timeout_minutes, 5));
    END IF;

    -- Batches that can hand out work (a short list, from csv_batches_active_idx).
    SELECT array_agg(b.id ORDER BY b.created_at, b.id), array_agg(b.user_id ORDER BY b.created_at, b.id),
           array_agg(b.column_mapping ORDER BY b.created_at, b.id),
           array_agg(b.status = 'queued' ORDER BY b.created_at, b.id)
      INTO v_batches, v_owners, v_mappings, v_queued
      FROM csv_batches b
     WHERE b.status IN ('queued', 'processing')
       AND (p_batch_id IS NULL OR b.id = p_batch_id)
       AND (p_user_id IS NULL OR b.user_id = p_user_id)
       AND b.processing_mode = coalesce(p_mode, 'sync')
       -- csv_batch_has_pending_jobs, written out: a function call per batch costs more than its query
       AND (SELECT p.id + 0 FROM csv_row_jobs p WHERE p.batch_id = b.id AND p.status = 'pending'
            ORDER BY p.id + 0 LIMIT 1) IS NOT NULL;
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
            WITH claimed AS (
                UPDATE csv_row_jobs j SET
                    status = CASE WHEN p_start THEN 'processing' ELSE 'claimed' END,
                    claimed_by = p_worker_id,
                    claimed_at = now(),
                    attempt = j.attempt + 1,
                    updated_at = now()
                -- (= ANY of the picked ids, not a join: the generic plan then reads them by key)
                WHERE j.id = ANY (ARRAY(
                    SELECT p.id FROM csv_row_jobs p
                    WHERE p.batch_id = v_batches[i] AND p.status = 'pending'
                      -- a row that reuses another's images waits until that row has finished
                      AND (p.depends_on IS NULL OR csv_dependency_done(p.depends_on))
                    ORDER BY p.id + 0  -- only csv_row_jobs_pending_idx has this order (see tables.sql)
                    LIMIT v_want
                    FOR UPDATE SKIP LOCKED))
                RETURNING j.id, j.batch_id, j.row_number, j.row_data, j.product, j.trigger_text, j.attempt,
                          j.retry_count, j.max_retries, j.checkpoint
            )
            SELECT c.id, c.batch_id, v_owners[i], c.row_number, c.row_data::jsonb,
                   csv_row_job_product(c.row_data, c.product, v_mappings[i]), c.trigger_text,
                   c.attempt, c.retry_count, c.max_retries, c.checkpoint
            FROM claimed c ORDER BY c.id;
            GET DIAGNOSTICS v_got = ROW_COUNT;
            IF v_got > 0 THEN
                IF v_queued[i] THEN
                    PERFORM csv_start_batch(v_batches[i], p_worker_id);
                END IF;
                v_remaining := v_remaining - v_got;
            END IF;
            EXIT WHEN v_remaining <= 0;
        END LOOP;
        EXIT WHEN v_remaining <= 0;
    END LOOP;
END
$$;

-- The contract's single-job claim: the next pending job (optionally of one batch) or no row, with its claim
-- token (attempt). With one batch handing out work (the common case) it claims the row in one statement of its
-- own, without claim_csv_row_jobs' sharing out of slots among batches (with one batch there is nothing to share,
-- and a worker calling once a row pays it once a row). With several, it is claim_csv_row_jobs.
-- Locks: as claim_csv_row_jobs.
CREATE OR REPLACE FUNCTION claim_next_csv_row_job(
    p_worker_id text,
    p_batch_id uuid DEFAULT NULL,
    p_timeout_minutes numeric DEFAULT 5
) RETURNS TABLE (
    job_id bigint, batch_id uuid, user_id uuid, row_number integer, row_data jsonb, product jsonb,
    trigger_text text, attempt integer, retry_count integer, max_retries integer, checkpoint jsonb
)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_batch record;
    v_job record;
    v_batches integer := 0;
BEGIN
    IF p_worker_id IS NULL OR p_worker_id = '' THEN
        RAISE EXCEPTION 'claim_next_csv_row_job: a worker id is required' USING ERRCODE = '22023';
    END IF;
    PERFORM csv_reclaim_timed_out_jobs(coalesce(p_timeout_minutes, 5));
    FOR v_job IN
        SELECT b.id, b.user_id, b.status, b.column_mapping FROM csv_batches b
         WHERE b.status IN ('queued', 'processing') AND b.processing_mode = 'sync'
           AND (p_batch_id IS NULL OR b.id = p_batch_id)
           AND csv_batch_has_pending_jobs(b.id)
         LIMIT 2
    LOOP
        v_batches := v_batches + 1;
        v_batch := v_job;
    END LOOP;
    IF v_batches = 0 THEN
        RETURN;
    ELSIF v_batches > 1 THEN
        RETURN QUERY SELECT * FROM claim_csv_row_jobs(p_worker_id, p_batch_id, p_timeout_minutes, 1);
        RETURN;
    END IF;

    UPDATE csv_row_jobs j SET
        status = 'claimed', claimed_by = p_worker_id, claimed_at = now(), attempt = j.attempt + 1, updated_at = now()
    WHERE j.id = (
        SELECT p.id FROM csv_row_jobs p
        WHERE p.batch_id = v_batch.id AND p.status = 'pending'
          AND (p.depends_on IS NULL OR csv_dependency_done(p.depends_on))
        ORDER BY p.id + 0
        LIMIT 1
        FOR UPDATE SKIP LOCKED)
    RETURNING j.id, j.batch_id, j.row_number, j.row_data, j.product, j.trigger_text, j.attempt, j.retry_count,
              j.max_retries, j.checkpoint
    INTO v_job;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    IF v_batch.status = 'queued' THEN
        PERFORM csv_start_batch(v_batch.id, p_worker_id);
    END IF;
    RETURN QUERY SELECT v_job.id, v_job.batch_id, v_batch.user_id, v_job.row_number, v_job.row_data::jsonb,
                        csv_row_job_product(v_job.row_data, v_job.product, v_batch.column_mapping),
                        v_job.trigger_text, v_job.attempt, v_job.retry_count, v_job.max_retries, v_job.checkpoint;
END
$$;

-- Internal: fold a batch's counter shards (csv_batch_counters) into its row, and tell watchers. The caller holds
-- the batch row (FOR NO KEY UPDATE). p_wait false leaves out shards another transaction is writing (the periodic
-- fold must never wait); true waits for them (a user's action, which then changes the counters itself).
-- Locks: the batch's counter shards.
CREATE OR REPLACE FUNCTION csv_fold_batch_counters(p_batch_id uuid, p_wait boolean DEFAULT true)
RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_shards smallint[];
BEGIN
    IF p_wait THEN
        SELECT array_agg(c.shard) INTO v_shards FROM (
            SELECT c.shard FROM csv_batch_counters c WHERE c.batch_id = p_batch_id ORDER BY c.shard FOR UPDATE
        ) c;
    ELSE
        SELECT array_agg(c.shard) INTO v_shards FROM (
            SELECT c.shard FROM csv_batch_counters c WHERE c.batch_id = p_batch_id ORDER BY c.shard
            FOR UPDATE SKIP LOCKED
        ) c;
    END IF;
    WITH gone AS (
        DELETE FROM csv_batch_counters c
        WHERE c.batch_id = p_batch_id AND c.shard = ANY (coalesce(v_shards, '{}'))
        RETURNING c.successful_rows, c.failed_rows, c.cost_usd
    ), s AS (
        SELECT coalesce(sum(g.successful_rows), 0)::integer AS ok, coalesce(sum(g.failed_rows), 0)::integer AS bad,
               coalesce(sum(g.cost_usd), 0) AS cost
        FROM gone g
    )
    UPDATE csv_batches b SET
        successful_rows = b.successful_rows + s.ok,
        failed_rows = b.failed_rows + s.bad,
        processed_rows = b.processed_rows + s.ok + s.bad,
        cost_usd = b.cost_usd + s.cost,
        processing_rate_rows_per_minute = CASE
            WHEN b.started_at IS NULL OR clock_timestamp() <= b.started_at THEN 0
            ELSE round((b.processed_rows + s.ok + s.bad) / (extract(epoch FROM clock_timestamp() - b.started_at) / 60.0), 2)
        END,
        updated_at = now()
    FROM s
    WHERE b.id = p_batch_id;
    PERFORM pg_notify('csv_batch_progress', p_batch_id::text);
END
$$;

-- Internal: add finished rows to a batch's counters and complete the batch when its last row is done.
-- While rows of the batch are still waiting, the counts go to this backend's counter shard, so finishing workers
-- never queue on the batch row; about once a second one of them folds the shards into it. The end is exact: a
-- finisher that sees no waiting row takes the batch row, so the last few finishers go one at a time, and each
-- looks at the other rows only once those before it have committed; the one that finds every row done completes
-- the batch. A waiting row that another transaction is claiming does not count as waiting (SKIP LOCKED): that
-- claim's row may finish, and its finisher look, before this transaction commits.
-- Locks: a waiting job row (FOR KEY SHARE, skipping locked ones), then either this backend's counter shard, or
-- the batch row (FOR NO KEY UPDATE) and then its counter shards, until the caller's transaction ends.
CREATE OR REPLACE FUNCTION csv_add_batch_results(
    p_batch_id uuid,
    p_successful integer,
    p_failed integer,
    p_cost_usd numeric DEFAULT 0
) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_batch csv_batches;
BEGIN
    PERFORM 1 FROM csv_row_jobs p WHERE p.batch_id = p_batch_id AND p.status = 'pending'
     ORDER BY p.id + 0 LIMIT 1 FOR KEY SHARE SKIP LOCKED;
    IF FOUND THEN
        INSERT INTO csv_batch_counters AS c (batch_id, shard, successful_rows, failed_rows, cost_usd)
        VALUES (p_batch_id, (pg_backend_pid() % 16)::smallint, p_successful, p_failed, coalesce(p_cost_usd, 0))
        ON CONFLICT (batch_id, shard) DO UPDATE SET
            successful_rows = c.successful_rows + excluded.successful_rows,
            failed_rows = c.failed_rows + excluded.failed_rows,
            cost_usd = c.cost_usd + excluded.cost_usd;
        -- Fold about once a second, by whoever gets the batch row without waiting for it.
        PERFORM 1 FROM csv_batches b
         WHERE b.id = p_batch_id AND b.updated_at < now() - interval '1 second'
           FOR NO KEY UPDATE SKIP LOCKED;
        IF FOUND THEN
            PERFORM csv_fold_batch_counters(p_batch_id, false);
        END IF;
        RETURN;
    END IF;

    PERFORM 1 FROM csv_batches b WHERE b.id = p_batch_id FOR NO KEY UPDATE;
    UPDATE csv_batches b SET
        successful_rows = b.successful_rows + p_successful,
        failed_rows = b.failed_rows + p_failed,
        processed_rows = b.processed_rows + p_successful + p_failed,
        cost_usd = b.cost_usd + coalesce(p_cost_usd, 0),
        updated_at = now()
    WHERE b.id = p_batch_id;
    IF csv_batch_has_pending_jobs(p_batch_id)
       OR EXISTS (SELECT 1 FROM csv_row_jobs f
                  WHERE f.batch_id = p_batch_id AND f.status IN ('claimed', 'processing')) THEN
        PERFORM pg_notify('csv_batch_progress', p_batch_id::text);
        RETURN;
    END IF;
    -- Every row is done and every finisher has committed: the shards hold their final counts.
    PERFORM csv_fold_batch_counters(p_batch_id, true);
    UPDATE csv_batches b SET status = 'completed', completed_at = coalesce(b.completed_at, now())
     WHERE b.id = p_batch_id AND b.status IN ('queued', 'processing', 'paused')
    RETURNING * INTO v_batch;
    IF FOUND THEN
        INSERT INTO csv_processing_logs (batch_id, log_level, message, operation, details)
        VALUES (p_batch_id, 'INFO',
                format('batch completed: %s of %s rows succeeded, %s failed',
                       v_batch.successful_rows, v_batch.total_rows, v_batch.failed_rows),
                'batch_completed',
                jsonb_build_object('successful_rows', v_batch.successful_rows,
                                   'failed_rows', v_batch.failed_rows,
                                   'cost_usd', v_batch.cost_usd));
    END IF;
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
        -- Each job as it was before this update (the update clears claimed_by, replaces images): for the log
        -- line, and to keep an image a new version replaces.
        -- (= ANY of an array, not a join with input: the planner, guessing 100 input rows, hashes the whole
        -- job table for a join)
        SELECT j.id, j.claimed_by, j.generated_images, j.review, j.checkpoint -> 'regenerate' AS regenerate
        FROM csv_row_jobs j WHERE j.id = ANY (ARRAY(SELECT i.job_id FROM input i))
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
            updated_at = now(),
            -- A redone image is new: its review starts afresh, and the request is done.
            review = CASE WHEN i.status = 'completed' AND j.checkpoint ? 'regenerate'
                          THEN nullif(j.review - ARRAY(SELECT jsonb_object_keys(j.checkpoint -> 'regenerate')), '{}')
                          ELSE j.review END,
            -- (only a redone row's: rewriting every row's checkpoint would copy it on every completion)
            checkpoint = CASE WHEN i.status = 'completed' AND j.checkpoint ? 'regenerate'
                              THEN j.checkpoint - 'regenerate' ELSE j.checkpoint END
        FROM input i
        WHERE j.id = i.job_id
          AND j.status IN ('claimed', 'processing')
          AND (p_worker_id IS NULL
               OR (j.claimed_by = p_worker_id AND (i.attempt IS NULL OR j.attempt = i.attempt)))
        RETURNING j.id, j.batch_id, j.row_number, j.status, j.error_message, j.retry_count,
                  j.processing_time_seconds, coalesce(i.cost_usd, 0) AS cost, j.generated_images
    ), kept AS (
        -- An image replaced by a new one (a redo) is kept as a version, with its review and the request.
        INSERT INTO csv_image_versions (batch_id, row_job_id, row_number, style, version, image, review,
                                        replaced_note, replaced_by)
        SELECT u.batch_id, u.id, u.row_number, old.value ->> 'style',
               1 + (SELECT count(*) FROM csv_image_versions v
                    WHERE v.row_job_id = u.id AND v.style = old.value ->> 'style'),
               old.value, coalesce(h.review -> (old.value ->> 'style') ->> 'state', 'unreviewed'),
               h.regenerate -> (old.value ->> 'style') ->> 'note',
               (h.regenerate -> (old.value ->> 'style') ->> 'by')::uuid
        FROM upd u
        JOIN held h ON h.id = u.id
        CROSS JOIN LATERAL jsonb_array_elements(
            CASE WHEN jsonb_typeof(h.generated_images) = 'array' THEN h.generated_images ELSE '[]' END) AS old
        WHERE u.status = 'completed' AND h.generated_images IS NOT NULL
          AND old.value ->> 'style' IN ('lifestyle_emotional', 'single_white_background')
          AND NOT EXISTS (
              SELECT 1 FROM jsonb_array_elements(
                  CASE WHEN jsonb_typeof(u.generated_images) = 'array' THEN u.generated_images ELSE '[]' END) AS new
              WHERE new.value ->> 'style' = old.value ->> 'style'
                AND new.value ->> 'storage_path' = old.value ->> 'storage_path')
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
        -- the counts not yet folded into the batch row (at most 16 shard rows; see csv_batch_counters)
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

-- Internal: the batch, locked, if the caller owns it (or is the service role); otherwise "no such batch", the same
-- answer as for a batch that does not exist, so ids of other users' batches reveal nothing. Its counter shards
-- are folded in first, so the counters it returns (and the action then changes) are the whole count.
-- Locks: the batch row, then its counter shards.
CREATE OR REPLACE FUNCTION csv_lock_owned_batch(p_batch_id uuid)
RETURNS public.csv_batches
LANGUAGE plpgsql AS $$
DECLARE
    v_batch public.csv_batches;
BEGIN
    SELECT * INTO v_batch FROM public.csv_batches b WHERE b.id = p_batch_id FOR UPDATE;
    IF NOT FOUND OR (v_batch.user_id IS DISTINCT FROM auth.uid() AND NOT public.csv_caller_is_service()) THEN
        RAISE EXCEPTION 'no such batch: %', p_batch_id USING ERRCODE = 'P0002';
    END IF;
    PERFORM public.csv_fold_batch_counters(p_batch_id, true);
    SELECT * INTO v_batch FROM public.csv_batches b WHERE b.id = p_batch_id;
    RETURN v_batch;
END
$$;

ALTER TABLE csv_batch_counters ENABLE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS csv_batch_counters_select_own ON csv_batch_counters;
CREATE POLICY csv_batch_counters_select_own ON csv_batch_counters FOR SELECT TO authenticated
    USING (EXISTS (SELECT 1 FROM csv_batches b WHERE b.id = csv_batch_counters.batch_id
                                                 AND b.user_id = (SELECT auth.uid())));
DROP POLICY IF EXISTS csv_batch_counters_service ON csv_batch_counters;
CREATE POLICY csv_batch_counters_service ON csv_batch_counters FOR ALL TO service_role USING (true) WITH CHECK (true);
REVOKE ALL ON csv_batch_counters FROM PUBLIC, anon, authenticated, service_role;
GRANT SELECT ON csv_batch_counters TO authenticated;
GRANT SELECT, INSERT, UPDATE, DELETE ON csv_batch_counters TO service_role;
REVOKE ALL ON FUNCTION csv_fold_batch_counters(uuid, boolean), csv_delete_rows_of_deleted_batches(),
    claim_csv_row_jobs(text, uuid, numeric, integer, uuid, text, boolean), csv_dependency_done(bigint),
    csv_start_batch(uuid, text) FROM PUBLIC, anon, authenticated, service_role;
GRANT EXECUTE ON FUNCTION csv_fold_batch_counters(uuid, boolean),
    claim_csv_row_jobs(text, uuid, numeric, integer, uuid, text, boolean), csv_dependency_done(bigint),
    csv_start_batch(uuid, text) TO service_role;
