-- results.sql: what happens when a worker reports. Results are fenced (only the holder of a job's current claim
-- may report it, unless the single-result call is made without a worker id), stored, and added to the batch's
-- counters in the same transaction; the last row completes the batch. Also: step checkpoints, and putting jobs
-- back to pending (a retry, a shutdown, a dead worker).
--
-- Lock order, shared with claim.sql: job rows first, then batch rows in ascending id order (csv_add_batch_results
-- is only ever called in that order), then a batch's counter shards.

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
    v_in_flight boolean;
    v_pending boolean;
BEGIN
    PERFORM 1 FROM csv_row_jobs p WHERE p.batch_id = p_batch_id AND p.status = 'pending'
     ORDER BY p.id + 0 LIMIT 1 FOR KEY SHARE SKIP LOCKED;
    -- Only while the batch hands out rows: a paused or cancelled batch has no crowd of finishers, and its table
    -- row must be current once its last rows in flight are done (below).
    IF FOUND AND EXISTS (SELECT 1 FROM csv_batches a WHERE a.id = p_batch_id AND a.status IN ('queued', 'processing'))
    THEN
        INSERT INTO csv_batch_counters AS c (batch_id, shard, successful_rows, failed_rows, cost_usd)
        -- Each backend its own shard (its pid within smallint's range: two live backends share one only when
        -- their pids are 32,768 apart). With 16 shards by pid, 16 connections shared shards often, and a report
        -- then waited for another's commit (2.5 ms a report in a profile of 16 one-row reporters).
        VALUES (p_batch_id, (pg_backend_pid() % 32768)::smallint, p_successful, p_failed, coalesce(p_cost_usd, 0))
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
    -- Rows in flight and rows pending, read in one statement (one snapshot): read apart, a row a claim moved from
    -- pending to claimed between the two looks was in neither, and the batch was completed under it (its last
    -- rows then could never be claimed).
    SELECT EXISTS (SELECT 1 FROM csv_row_jobs f
                    WHERE f.batch_id = p_batch_id AND f.status IN ('claimed', 'processing')),
           csv_batch_has_pending_jobs(p_batch_id)
      INTO v_in_flight, v_pending;
    IF v_in_flight THEN
        PERFORM pg_notify('csv_batch_progress', p_batch_id::text);
        RETURN;
    END IF;
    IF v_pending THEN
        -- Nothing of the batch is in flight (it is paused, or cancelled, or between workers): its table row
        -- holds every count, for whoever reads it directly.
        PERFORM csv_fold_batch_counters(p_batch_id, true);
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
        SELECT j.id, j.claimed_by, j.generated_images, j.checkpoint -> 'regenerate' AS regenerate,
               (SELECT r.review FROM csv_row_reviews r WHERE r.row_job_id = j.id) AS review
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
            -- A redone row's request is done (only a redone row's: rewriting every row's checkpoint would copy it
            -- on every completion).
            checkpoint = CASE WHEN i.status = 'completed' AND j.checkpoint ? 'regenerate'
                              THEN j.checkpoint - 'regenerate' ELSE j.checkpoint END
        FROM input i
        -- Read by primary key only: the ids also as = ANY of an array, and the status test written so that no
        -- partial index matches it. Otherwise the planner reads the in-flight index (alone, or ANDed with the key)
        -- and rechecks its dead entries, one for every row finished since the last vacuum, on every report.
        WHERE j.id = i.job_id
          AND j.id = ANY (ARRAY(SELECT i.job_id FROM input i))
          AND CASE WHEN j.status IN ('claimed', 'processing') THEN true ELSE false END
          AND (p_worker_id IS NULL
               OR (j.claimed_by = p_worker_id AND (i.attempt IS NULL OR j.attempt = i.attempt)))
        RETURNING j.id, j.batch_id, j.row_number, j.status, j.error_message, j.retry_count,
                  j.processing_time_seconds, coalesce(i.cost_usd, 0) AS cost, j.generated_images
    ), cleared AS (
        -- A redone image is new: its review starts afresh (the old one's is kept with it, below).
        UPDATE csv_row_reviews r
           SET review = r.review - ARRAY(SELECT jsonb_object_keys(h.regenerate))
          FROM upd u JOIN held h ON h.id = u.id
         WHERE r.row_job_id = u.id AND u.status = 'completed' AND jsonb_typeof(h.regenerate) = 'object'
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
           OR EXISTS (SELECT 1 FROM csv_row_jobs d WHERE d.reuses_job = ANY (v_ids) AND d.status = 'pending') THEN
            PERFORM pg_notify('csv_row_jobs', '');
        END IF;
    END IF;

    RETURN QUERY
    SELECT i.job_id, t.id IS NOT NULL, t.status
    FROM jsonb_to_recordset(p_results) AS i(job_id bigint)
    LEFT JOIN unnest(v_ids, v_statuses) AS t(id, status) ON t.id = i.job_id;
END
$$;

-- The single-result call, positionally as the contract writes it:
--   update_csv_row_job_result(job_id, status, trigger_text, prompts, images, tags, processing_time_seconds
--                             [, error_message [, worker_id [, attempt]]])
-- status is 'completed', 'failed', 'pending' (retry later) or 'processing' (the worker has started on the row).
-- Returns true when the change was made, false when the job is not (or no longer) held as the call says: with a
-- worker id, by that worker (and attempt, if given); without one, by anyone (an unfenced call, logged as such).
-- Locks: as update_csv_row_job_results (for 'processing': the job row only).
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
LANGUAGE plpgsql AS $$
BEGIN
    IF p_status = 'processing' THEN
        PERFORM 1 FROM csv_row_jobs j
         WHERE j.id = p_job_id AND j.status IN ('claimed', 'processing')
           AND (p_worker_id IS NULL
                OR (j.claimed_by = p_worker_id AND (p_attempt IS NULL OR j.attempt = p_attempt)))
           FOR UPDATE;
        IF NOT FOUND THEN
            RETURN false;
        END IF;
        UPDATE csv_row_jobs j SET status = 'processing', updated_at = now()
         WHERE j.id = p_job_id AND j.status = 'claimed';
        RETURN true;
    END IF;
    RETURN coalesce((
        SELECT r.applied FROM update_csv_row_job_results(
            p_worker_id,
            jsonb_build_array(jsonb_build_object(
                'job_id', p_job_id, 'attempt', p_attempt, 'status', p_status, 'trigger_text', p_trigger_text,
                'generated_prompts', p_generated_prompts, 'generated_images', p_generated_images,
                'generated_tags', p_generated_tags, 'processing_time_seconds', p_processing_time_seconds,
                'error_message', p_error_message))) r
    ), false);
END
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
