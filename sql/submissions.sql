-- submissions.sql: CSV batches processed through OpenAI's Batch API (csv_batches.processing_mode = 'openai_batch').
-- Their rows are never handed to the synchronous claim; a worker's OpenAI batch driver (queue/submission_loop.py)
-- claims them with p_mode 'openai_batch' and gives them to a submission: one row of csv_openai_submissions per input
-- file, and so per OpenAI batch (one endpoint, at most 50,000 requests and 200 MB). Everything needed to resume
-- is here, so that a driver killed at any point is replaced by any other without submitting or paying twice:
--
--   preparing -> uploaded -> submitted -> done
--   (rows held; file not yet uploaded) (input_file_id known; batch not yet created: it is looked up by its
--   submission_key, kept in the OpenAI batch's metadata, before another is created) (openai_batch_id known;
--   polled until OpenAI says it is over) (output collected; no row held any more)
--
-- A row given to a submission is held by it: claimed_by is 'openai-batch:<id>' and claimed_at is NULL, so the
-- claim timeout (which looks at claimed_at) and `cleanup` (which looks for dead workers) never take it back while
-- OpenAI works on it; the submission hands every row on (to step 2, a result, or back to pending) before it is
-- done. A driver works on a submission under a lease (locked_by, locked_until) that it renews while it works;
-- a lease of a dead worker expires, or `cleanup` frees it.
--
-- Lock order: job rows, then submission rows, then batch rows (the row functions below lock rows first).

-- Internal: the worker id a submission holds its rows under.
CREATE OR REPLACE FUNCTION csv_openai_submission_holder(p_id bigint)
RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT 'openai-batch:' || p_id;
$$;

-- Internal: move rows held by p_from (a worker, or a submission) to a new submission of p_batch_id at p_step, in
-- the given order; only rows p_from still holds move. Returns the new submission's id, or NULL when none moved.
-- Locks: the job rows, then the new submission row.
CREATE OR REPLACE FUNCTION csv_openai_submission_take_rows(p_from text, p_batch_id uuid, p_step text, p_job_ids bigint[])
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
    INSERT INTO csv_openai_submissions (batch_id, step, row_job_ids)
    VALUES (p_batch_id, p_step, v_ids)
    RETURNING id INTO v_id;
    UPDATE csv_row_jobs j
       SET claimed_by = csv_openai_submission_holder(v_id), claimed_at = NULL, status = 'processing', updated_at = now()
     WHERE j.id = ANY (v_ids);
    RETURN v_id;
END
$$;

-- A driver gives rows it claimed (as worker p_worker_id) to a new submission at p_step ('prompts' or 'images').
-- Returns the submission's id, or NULL when the worker no longer held any of them.
-- Locks: as csv_openai_submission_take_rows.
CREATE OR REPLACE FUNCTION open_csv_openai_submission(p_worker_id text, p_batch_id uuid, p_step text, p_job_ids bigint[])
RETURNS bigint
LANGUAGE sql AS $$
    SELECT csv_openai_submission_take_rows(p_worker_id, p_batch_id, p_step, p_job_ids);
$$;

-- Lease up to p_limit submissions that are due (not done, next_check_at passed, lease free or already this
-- worker's) for p_lease_seconds; optionally only those of one batch or one user's batches.
-- Locks: the submission rows (SKIP LOCKED: drivers never wait on each other).
CREATE OR REPLACE FUNCTION lease_csv_openai_submissions(
    p_worker_id text,
    p_lease_seconds numeric,
    p_limit integer DEFAULT 10,
    p_batch_id uuid DEFAULT NULL,
    p_user_id uuid DEFAULT NULL
) RETURNS SETOF csv_openai_submissions
LANGUAGE sql AS $$
    WITH due AS (
        SELECT o.id FROM csv_openai_submissions o
        JOIN csv_batches b ON b.id = o.batch_id
        WHERE o.state <> 'done' AND o.next_check_at <= now()
          AND (o.locked_until IS NULL OR o.locked_until < now() OR o.locked_by = p_worker_id)
          AND (p_batch_id IS NULL OR o.batch_id = p_batch_id)
          AND (p_user_id IS NULL OR b.user_id = p_user_id)
        ORDER BY o.next_check_at, o.id
        LIMIT p_limit
        FOR UPDATE OF o SKIP LOCKED
    )
    UPDATE csv_openai_submissions o
       SET locked_by = p_worker_id,
           locked_until = now() + make_interval(secs => p_lease_seconds::double precision),
           updated_at = now()
      FROM due
     WHERE o.id = due.id
    RETURNING o.*;
$$;

-- Record what a driver learnt or did (keys of p_changes: state, endpoint, request_count, input_file_id,
-- openai_batch_id, openai_status, request_counts, output_file_id, error_file_id, error_message, prepared_rows,
-- collected_rows, completed_rows (the first collected_rows starts collecting_since); absent keys keep their
-- value), renew its lease, and set when the submission is next due (p_next_check_seconds from now; NULL keeps it).
-- Fenced: false when the lease is no longer this worker's (another driver took over).
-- Locks: the submission row.
CREATE OR REPLACE FUNCTION update_csv_openai_submission(
    p_id bigint,
    p_worker_id text,
    p_changes jsonb,
    p_lease_seconds numeric DEFAULT 300,
    p_next_check_seconds numeric DEFAULT NULL
) RETURNS boolean
LANGUAGE sql AS $$
    WITH upd AS (
        UPDATE csv_openai_submissions o SET
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
            prepared_rows = coalesce((p_changes ->> 'prepared_rows')::integer, o.prepared_rows),
            collected_rows = coalesce((p_changes ->> 'collected_rows')::integer, o.collected_rows),
            completed_rows = coalesce((p_changes ->> 'completed_rows')::integer, o.completed_rows),
            collecting_since = CASE WHEN p_changes ? 'collected_rows' THEN coalesce(o.collecting_since, now())
                                    ELSE o.collecting_since END,
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
-- Locks: the submission row, then as csv_openai_submission_take_rows.
CREATE OR REPLACE FUNCTION split_csv_openai_submission(p_id bigint, p_worker_id text, p_step text, p_job_ids bigint[])
RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    v_batch uuid;
BEGIN
    SELECT o.batch_id INTO v_batch FROM csv_openai_submissions o
     WHERE o.id = p_id AND o.locked_by = p_worker_id AND o.state <> 'done';
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    RETURN csv_openai_submission_take_rows(csv_openai_submission_holder(p_id), v_batch, p_step, p_job_ids);
END
$$;

-- Put rows of a submission back to pending: p_retry ones count a retry (their request failed), p_requeue ones do
-- not (OpenAI never ran them: the batch expired or was cancelled). Fenced by the lease. Returns how many went
-- back, and how many failed for good (past max_retries).
-- Locks: the job rows, then batch rows in id order (csv_release_jobs).
CREATE OR REPLACE FUNCTION release_csv_openai_submission_rows(
    p_id bigint, p_worker_id text, p_job_ids bigint[], p_count_retry boolean, p_reason text
) RETURNS TABLE (released integer, failed integer)
LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM csv_openai_submissions o
                   WHERE o.id = p_id AND o.locked_by = p_worker_id AND o.state <> 'done') THEN
        RETURN QUERY SELECT 0, 0;
        RETURN;
    END IF;
    RETURN QUERY SELECT * FROM csv_release_jobs(
        ARRAY(SELECT j.id FROM csv_row_jobs j
              WHERE j.id = ANY (p_job_ids) AND j.claimed_by = csv_openai_submission_holder(p_id)),
        p_count_retry, p_reason);
END
$$;

-- A submission is over: any row it still holds goes back to pending without a retry (a safety net: the driver
-- hands every row on before this), and it is done. Fenced by the lease.
-- Locks: the job rows, then batch rows, then the submission row.
CREATE OR REPLACE FUNCTION finish_csv_openai_submission(p_id bigint, p_worker_id text, p_outcome jsonb)
RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM csv_openai_submissions o
                   WHERE o.id = p_id AND o.locked_by = p_worker_id AND o.state <> 'done') THEN
        RETURN false;
    END IF;
    PERFORM csv_release_jobs(
        ARRAY(SELECT j.id FROM csv_row_jobs j
              WHERE j.claimed_by = csv_openai_submission_holder(p_id) AND j.status IN ('claimed', 'processing')),
        false, 'its OpenAI batch ended without a result for it');
    UPDATE csv_openai_submissions o
       SET state = 'done', outcome = p_outcome, done_at = now(), locked_by = NULL, locked_until = NULL,
           updated_at = now()
     WHERE o.id = p_id;
    RETURN true;
END
$$;

-- Let go of a worker's leases (its clean shutdown, or `cleanup` after it died), so another driver goes on at once.
CREATE OR REPLACE FUNCTION release_csv_openai_submission_leases(p_worker_id text)
RETURNS integer
LANGUAGE sql AS $$
    WITH upd AS (
        UPDATE csv_openai_submissions o SET locked_by = NULL, locked_until = NULL, updated_at = now()
        WHERE o.locked_by = p_worker_id AND o.state <> 'done'
        RETURNING 1
    )
    SELECT count(*)::integer FROM upd;
$$;
