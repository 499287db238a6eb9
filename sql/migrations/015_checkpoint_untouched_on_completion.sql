-- 015: completing a row rewrites its checkpoint only when a redo request is to be cleared from it; 014 copied
-- every completed row's checkpoint (prompts and image records included) to remove a key it did not have.

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
        SELECT j.id, j.claimed_by, j.generated_images, j.review, j.checkpoint -> 'regenerate' AS regenerate
        FROM csv_row_jobs j JOIN input i ON i.job_id = j.id
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
