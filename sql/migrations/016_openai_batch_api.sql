-- 016: OpenAI's Batch API. csv_batches.processing_mode says how a batch's rows are processed; the claim takes a
-- p_mode, so that the synchronous claim (and the contract's single-job claim) never hands out a row of an
-- 'openai_batch' batch; csv_openai_batches records every submission to OpenAI, with the functions a driver uses
-- to open, lease, advance, split and finish one; cleanup frees a dead worker's leases and leaves rows waiting on
-- OpenAI alone; dedicated workers are for synchronous batches only; csv_outstanding_jobs can count one mode.

ALTER TABLE csv_batches ADD COLUMN IF NOT EXISTS processing_mode text NOT NULL DEFAULT 'sync'
    CHECK (processing_mode IN ('sync', 'openai_batch'));

DROP FUNCTION IF EXISTS claim_csv_row_jobs(text, uuid, numeric, integer, uuid);
DROP FUNCTION IF EXISTS csv_outstanding_jobs(uuid, uuid);

-- Claim up to p_limit pending jobs for a worker, fairly across batches: slots go one by one to the batch with
-- the fewest jobs in flight (counting the slots already given), so a small batch uploaded beside a huge one gets
-- its rows in flight at once instead of waiting behind it. Optionally only one batch (dedicated workers) or one
-- user's batches. Never hands out jobs of a batch that is not queued or processing (cancelled, paused,
-- completed). p_mode picks the batches by processing mode: 'sync' (the default, and the only one the single-job
-- claim sees) or 'openai_batch' (the OpenAI batch driver's claim). Reclaims timed-out claims first. The first claim moves a batch to processing.
-- Locks: the claimed job rows (FOR UPDATE SKIP LOCKED, so claimers never wait on each other); a batch row only
-- on its first claim.
CREATE OR REPLACE FUNCTION claim_csv_row_jobs(
    p_worker_id text,
    p_batch_id uuid DEFAULT NULL,
    p_timeout_minutes numeric DEFAULT 5,
    p_limit integer DEFAULT 1,
    p_user_id uuid DEFAULT NULL,
    p_mode text DEFAULT 'sync'
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
       AND b.processing_mode = coalesce(p_mode, 'sync')
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
    UPDATE csv_openai_batches o SET locked_by = NULL, locked_until = NULL, updated_at = now()
     WHERE o.state <> 'done' AND o.locked_by IS NOT NULL
       AND EXISTS (SELECT 1 FROM csv_processing_workers w WHERE w.instance_id = o.locked_by AND w.status = 'stopped');
    RETURN QUERY SELECT v_workers, v_released, v_failed;
END
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

CREATE TABLE IF NOT EXISTS csv_openai_batches (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    batch_id        uuid NOT NULL REFERENCES csv_batches (id) ON DELETE CASCADE,
    -- prompts: one chat completion per row; images: two image requests per row (generations, or edits of the
    -- product photo)
    step            text NOT NULL CHECK (step IN ('prompts', 'images')),
    endpoint        text,
    state           text NOT NULL DEFAULT 'preparing'
                        CHECK (state IN ('preparing', 'uploaded', 'submitted', 'done')),
    -- Sent as the OpenAI batch's metadata: finds a batch whose creation was not recorded (a kill in between).
    submission_key  uuid NOT NULL DEFAULT gen_random_uuid(),
    row_job_ids     bigint[] NOT NULL,
    request_count   integer,
    input_file_id   text,
    openai_batch_id text UNIQUE,
    -- OpenAI's word for the batch: validating, in_progress, finalizing, completed, failed, expired, cancelling,
    -- cancelled; and its request counts {total, completed, failed}
    openai_status   text,
    request_counts  jsonb,
    output_file_id  text,
    error_file_id   text,
    error_message   text,
    -- What the collection did: {completed, moved, retried, requeued, failed} rows
    outcome         jsonb,
    locked_by       text,
    locked_until    timestamptz,
    next_check_at   timestamptz NOT NULL DEFAULT now(),
    created_at      timestamptz NOT NULL DEFAULT now(),
    submitted_at    timestamptz,
    done_at         timestamptz,
    updated_at      timestamptz NOT NULL DEFAULT now()
);

-- Submissions still to advance, by when they are next due (a short list: done ones leave it).
CREATE INDEX IF NOT EXISTS csv_openai_batches_due_idx ON csv_openai_batches (next_check_at) WHERE state <> 'done';
CREATE INDEX IF NOT EXISTS csv_openai_batches_batch_idx ON csv_openai_batches (batch_id, id);

-- Internal: the worker id a submission holds its rows under.
CREATE OR REPLACE FUNCTION csv_openai_batch_holder(p_id bigint)
RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT 'openai-batch:' || p_id;
$$;

-- Internal: move rows held by p_from (a worker, or a submission) to a new submission of p_batch_id at p_step, in
-- the given order; only rows p_from still holds move. Returns the new submission's id, or NULL when none moved.
-- Locks: the job rows, then the new submission row.
CREATE OR REPLACE FUNCTION csv_openai_batch_take_rows(p_from text, p_batch_id uuid, p_step text, p_job_ids bigint[])
RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    v_ids bigint[];
    v_id bigint;
BEGIN
    SELECT array_agg(t.id ORDER BY t.n) INTO v_ids FROM (
        SELECT j.id, k.n FROM csv_row_jobs j
        JOIN unnest(p_job_ids) WITH ORDINALITY AS k(id, n) ON k.id = j.id
        WHERE j.claimed_by = p_from AND j.batch_id = p_batch_id AND j.status IN ('claimed', 'processing')
        ORDER BY j.id
        FOR UPDATE OF j
    ) t;
    IF v_ids IS NULL THEN
        RETURN NULL;
    END IF;
    INSERT INTO csv_openai_batches (batch_id, step, row_job_ids)
    VALUES (p_batch_id, p_step, v_ids)
    RETURNING id INTO v_id;
    UPDATE csv_row_jobs j
       SET claimed_by = csv_openai_batch_holder(v_id), claimed_at = NULL, status = 'processing', updated_at = now()
     WHERE j.id = ANY (v_ids);
    RETURN v_id;
END
$$;

-- A driver gives rows it claimed (as worker p_worker_id) to a new submission at p_step ('prompts' or 'images').
-- Returns the submission's id, or NULL when the worker no longer held any of them.
-- Locks: as csv_openai_batch_take_rows.
CREATE OR REPLACE FUNCTION open_csv_openai_batch(p_worker_id text, p_batch_id uuid, p_step text, p_job_ids bigint[])
RETURNS bigint
LANGUAGE sql AS $$
    SELECT csv_openai_batch_take_rows(p_worker_id, p_batch_id, p_step, p_job_ids);
$$;

-- Lease up to p_limit submissions that are due (not done, next_check_at passed, lease free or already this
-- worker's) for p_lease_seconds; optionally only those of one batch or one user's batches.
-- Locks: the submission rows (SKIP LOCKED: drivers never wait on each other).
CREATE OR REPLACE FUNCTION lease_csv_openai_batches(
    p_worker_id text,
    p_lease_seconds numeric,
    p_limit integer DEFAULT 10,
    p_batch_id uuid DEFAULT NULL,
    p_user_id uuid DEFAULT NULL
) RETURNS SETOF csv_openai_batches
LANGUAGE sql AS $$
    WITH due AS (
        SELECT o.id FROM csv_openai_batches o
        JOIN csv_batches b ON b.id = o.batch_id
        WHERE o.state <> 'done' AND o.next_check_at <= now()
          AND (o.locked_until IS NULL OR o.locked_until < now() OR o.locked_by = p_worker_id)
          AND (p_batch_id IS NULL OR o.batch_id = p_batch_id)
          AND (p_user_id IS NULL OR b.user_id = p_user_id)
        ORDER BY o.next_check_at, o.id
        LIMIT p_limit
        FOR UPDATE OF o SKIP LOCKED
    )
    UPDATE csv_openai_batches o
       SET locked_by = p_worker_id,
           locked_until = now() + make_interval(secs => p_lease_seconds::double precision),
           updated_at = now()
      FROM due
     WHERE o.id = due.id
    RETURNING o.*;
$$;

-- Record what a driver learnt or did (keys of p_changes: state, endpoint, request_count, input_file_id,
-- openai_batch_id, openai_status, request_counts, output_file_id, error_file_id, error_message; absent keys keep
-- their value), renew its lease, and set when the submission is next due (p_next_check_seconds from now; NULL
-- keeps it). Fenced: false when the lease is no longer this worker's (another driver took over).
-- Locks: the submission row.
CREATE OR REPLACE FUNCTION update_csv_openai_batch(
    p_id bigint,
    p_worker_id text,
    p_changes jsonb,
    p_lease_seconds numeric DEFAULT 300,
    p_next_check_seconds numeric DEFAULT NULL
) RETURNS boolean
LANGUAGE sql AS $$
    WITH upd AS (
        UPDATE csv_openai_batches o SET
            state = coalesce(p_changes ->> 'state', o.state),
            endpoint = coalesce(p_changes ->> 'endpoint', o.endpoint),
            request_count = coalesce((p_changes ->> 'request_count')::integer, o.request_count),
            input_file_id = coalesce(p_changes ->> 'input_file_id', o.input_file_id),
            openai_batch_id = coalesce(p_changes ->> 'openai_batch_id', o.openai_batch_id),
            openai_status = coalesce(p_changes ->> 'openai_status', o.openai_status),
            request_counts = coalesce(p_changes -> 'request_counts', o.request_counts),
            output_file_id = coalesce(p_changes ->> 'output_file_id', o.output_file_id),
            error_file_id = coalesce(p_changes ->> 'error_file_id', o.error_file_id),
            error_message = coalesce(p_changes ->> 'error_message', o.error_message),
            submitted_at = CASE WHEN p_changes ->> 'state' = 'submitted' THEN coalesce(o.submitted_at, now())
                                ELSE o.submitted_at END,
            locked_until = now() + make_interval(secs => p_lease_seconds::double precision),
            next_check_at = CASE WHEN p_next_check_seconds IS NULL THEN o.next_check_at
                                 ELSE now() + make_interval(secs => p_next_check_seconds::double precision) END,
            updated_at = now()
        WHERE o.id = p_id AND o.locked_by = p_worker_id AND o.state <> 'done'
        RETURNING 1
    )
    SELECT EXISTS (SELECT 1 FROM upd);
$$;

-- Move rows of a submission (that it still holds) to a new one: the rows that did not fit its input file, rows
-- for another endpoint, or rows whose prompts arrived and now need their images (p_step 'images'). Fenced by the
-- lease. Returns the new submission's id (NULL when no row moved).
-- Locks: the submission row, then as csv_openai_batch_take_rows.
CREATE OR REPLACE FUNCTION split_csv_openai_batch(p_id bigint, p_worker_id text, p_step text, p_job_ids bigint[])
RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    v_batch uuid;
BEGIN
    SELECT o.batch_id INTO v_batch FROM csv_openai_batches o
     WHERE o.id = p_id AND o.locked_by = p_worker_id AND o.state <> 'done';
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    RETURN csv_openai_batch_take_rows(csv_openai_batch_holder(p_id), v_batch, p_step, p_job_ids);
END
$$;

-- Put rows of a submission back to pending: p_retry ones count a retry (their request failed), p_requeue ones do
-- not (OpenAI never ran them: the batch expired or was cancelled). Fenced by the lease. Returns how many went
-- back, and how many failed for good (past max_retries).
-- Locks: the job rows, then batch rows in id order (csv_release_jobs).
CREATE OR REPLACE FUNCTION release_csv_openai_batch_rows(
    p_id bigint, p_worker_id text, p_job_ids bigint[], p_count_retry boolean, p_reason text
) RETURNS TABLE (released integer, failed integer)
LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM csv_openai_batches o
                   WHERE o.id = p_id AND o.locked_by = p_worker_id AND o.state <> 'done') THEN
        RETURN QUERY SELECT 0, 0;
        RETURN;
    END IF;
    RETURN QUERY SELECT * FROM csv_release_jobs(
        ARRAY(SELECT j.id FROM csv_row_jobs j
              WHERE j.id = ANY (p_job_ids) AND j.claimed_by = csv_openai_batch_holder(p_id)),
        p_count_retry, p_reason);
END
$$;

-- A submission is over: any row it still holds goes back to pending without a retry (a safety net: the driver
-- hands every row on before this), and it is done. Fenced by the lease.
-- Locks: the job rows, then batch rows, then the submission row.
CREATE OR REPLACE FUNCTION finish_csv_openai_batch(p_id bigint, p_worker_id text, p_outcome jsonb)
RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM csv_openai_batches o
                   WHERE o.id = p_id AND o.locked_by = p_worker_id AND o.state <> 'done') THEN
        RETURN false;
    END IF;
    PERFORM csv_release_jobs(
        ARRAY(SELECT j.id FROM csv_row_jobs j
              WHERE j.claimed_by = csv_openai_batch_holder(p_id) AND j.status IN ('claimed', 'processing')),
        false, 'its OpenAI batch ended without a result for it');
    UPDATE csv_openai_batches o
       SET state = 'done', outcome = p_outcome, done_at = now(), locked_by = NULL, locked_until = NULL,
           updated_at = now()
     WHERE o.id = p_id;
    RETURN true;
END
$$;

-- Let go of a worker's leases (its clean shutdown, or `cleanup` after it died), so another driver goes on at once.
CREATE OR REPLACE FUNCTION release_csv_openai_batch_leases(p_worker_id text)
RETURNS integer
LANGUAGE sql AS $$
    WITH upd AS (
        UPDATE csv_openai_batches o SET locked_by = NULL, locked_until = NULL, updated_at = now()
        WHERE o.locked_by = p_worker_id AND o.state <> 'done'
        RETURNING 1
    )
    SELECT count(*)::integer FROM upd;
$$;

ALTER TABLE csv_openai_batches ENABLE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS csv_openai_batches_select_own ON csv_openai_batches;
CREATE POLICY csv_openai_batches_select_own ON csv_openai_batches FOR SELECT TO authenticated
    USING (EXISTS (SELECT 1 FROM csv_batches b WHERE b.id = csv_openai_batches.batch_id
                                                 AND b.user_id = (SELECT auth.uid())));
DROP POLICY IF EXISTS csv_openai_batches_service ON csv_openai_batches;
CREATE POLICY csv_openai_batches_service ON csv_openai_batches FOR ALL TO service_role USING (true) WITH CHECK (true);
REVOKE ALL ON csv_openai_batches FROM PUBLIC, anon, authenticated, service_role;
GRANT SELECT ON csv_openai_batches TO authenticated;
GRANT SELECT, INSERT, UPDATE, DELETE ON csv_openai_batches TO service_role;
REVOKE ALL ON SEQUENCE csv_openai_batches_id_seq FROM PUBLIC, anon, authenticated, service_role;
REVOKE ALL ON FUNCTION
    claim_csv_row_jobs(text, uuid, numeric, integer, uuid, text),
    csv_outstanding_jobs(uuid, uuid, text),
    csv_openai_batch_holder(bigint),
    csv_openai_batch_take_rows(text, uuid, text, bigint[]),
    open_csv_openai_batch(text, uuid, text, bigint[]),
    lease_csv_openai_batches(text, numeric, integer, uuid, uuid),
    update_csv_openai_batch(bigint, text, jsonb, numeric, numeric),
    split_csv_openai_batch(bigint, text, text, bigint[]),
    release_csv_openai_batch_rows(bigint, text, bigint[], boolean, text),
    finish_csv_openai_batch(bigint, text, jsonb),
    release_csv_openai_batch_leases(text)
FROM PUBLIC, anon, authenticated, service_role;
GRANT EXECUTE ON FUNCTION
    claim_csv_row_jobs(text, uuid, numeric, integer, uuid, text),
    csv_outstanding_jobs(uuid, uuid, text),
    csv_openai_batch_holder(bigint),
    csv_openai_batch_take_rows(text, uuid, text, bigint[]),
    open_csv_openai_batch(text, uuid, text, bigint[]),
    lease_csv_openai_batches(text, numeric, integer, uuid, uuid),
    update_csv_openai_batch(bigint, text, jsonb, numeric, numeric),
    split_csv_openai_batch(bigint, text, text, bigint[]),
    release_csv_openai_batch_rows(bigint, text, bigint[], boolean, text),
    finish_csv_openai_batch(bigint, text, jsonb),
    release_csv_openai_batch_leases(text)
TO service_role;
