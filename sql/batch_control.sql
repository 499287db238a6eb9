-- batch_control.sql: steering batches as their owner: retry failed rows, cancel, pause and resume. Users may not
-- update jobs or batches directly (that would let them forge results), so these are SECURITY DEFINER functions
-- that check ownership with auth.uid() exactly as the policies do, and change only what the action means.

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

-- Internal: take rows that are pending again (a retry, a redo) out of a batch's finished counts, and reopen a
-- completed or failed batch. The caller holds the batch row (csv_lock_owned_batch, which folded its shards).
-- Locks: the batch row.
CREATE OR REPLACE FUNCTION csv_reopen_batch(p_batch_id uuid, p_successful integer, p_failed integer)
RETURNS void
LANGUAGE sql AS $$
    UPDATE public.csv_batches SET
        successful_rows = successful_rows - p_successful,
        failed_rows = failed_rows - p_failed,
        processed_rows = processed_rows - p_successful - p_failed,
        status = CASE WHEN status IN ('completed', 'failed') THEN 'processing' ELSE status END,
        completed_at = NULL,
        updated_at = now()
    WHERE id = p_batch_id;
$$;

-- Put failed rows of a batch back to pending (all of them, or only p_rows), keeping their checkpoints so nothing
-- already paid for is paid again. Returns how many rows were reset.
-- Locks: the batch row, then the reset job rows.
CREATE OR REPLACE FUNCTION retry_csv_batch_rows(p_batch_id uuid, p_rows integer[] DEFAULT NULL)
RETURNS integer
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = public, pg_temp
AS $$
DECLARE
    v_batch public.csv_batches;
    v_count integer;
BEGIN
    v_batch := public.csv_lock_owned_batch(p_batch_id);
    IF v_batch.status = 'cancelled' THEN
        RAISE EXCEPTION 'batch % is cancelled; its rows cannot be retried', p_batch_id USING ERRCODE = '55000';
    END IF;
    WITH reset AS (
        UPDATE public.csv_row_jobs j
           SET status = 'pending', retry_count = 0, error_message = NULL, completed_at = NULL, updated_at = now()
         WHERE j.batch_id = p_batch_id AND j.status = 'failed'
           AND (p_rows IS NULL OR j.row_number = ANY (p_rows))
        RETURNING 1
    )
    SELECT count(*) INTO v_count FROM reset;
    IF v_count > 0 THEN
        PERFORM public.csv_reopen_batch(p_batch_id, 0, v_count);
        INSERT INTO public.csv_processing_logs (batch_id, log_level, message, operation, details)
        VALUES (p_batch_id, 'INFO', format('%s failed row(s) put back to pending', v_count), 'batch_retry',
                jsonb_build_object('rows', p_rows, 'count', v_count));
        PERFORM pg_notify('csv_row_jobs', p_batch_id::text);
        PERFORM pg_notify('csv_batch_progress', p_batch_id::text);
    END IF;
    RETURN v_count;
END
$$;

-- Change a batch's status for cancel / pause / resume. Cancelled and paused batches hand out no rows (the claim
-- only takes queued and processing batches); rows already in flight finish or are released as usual.
-- Locks: the batch row.
CREATE OR REPLACE FUNCTION set_csv_batch_state(p_batch_id uuid, p_action text)
RETURNS text
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = public, pg_temp
AS $$
DECLARE
    v_batch public.csv_batches;
    v_new text;
BEGIN
    v_batch := public.csv_lock_owned_batch(p_batch_id);
    IF p_action = 'cancel' THEN
        IF v_batch.status IN ('completed', 'cancelled') THEN
            RAISE EXCEPTION 'batch % is already %', p_batch_id, v_batch.status USING ERRCODE = '55000';
        END IF;
        v_new := 'cancelled';
    ELSIF p_action = 'pause' THEN
        IF v_batch.status NOT IN ('queued', 'processing') THEN
            RAISE EXCEPTION 'batch % is %; only a queued or processing batch can be paused', p_batch_id,
                v_batch.status USING ERRCODE = '55000';
        END IF;
        v_new := 'paused';
    ELSIF p_action = 'resume' THEN
        IF v_batch.status <> 'paused' THEN
            RAISE EXCEPTION 'batch % is %, not paused', p_batch_id, v_batch.status USING ERRCODE = '55000';
        END IF;
        v_new := CASE WHEN v_batch.started_at IS NULL THEN 'queued' ELSE 'processing' END;
    ELSE
        RAISE EXCEPTION 'unknown action %', p_action USING ERRCODE = '22023';
    END IF;
    UPDATE public.csv_batches SET status = v_new, updated_at = now(), pause_reason = NULL,
           completed_at = CASE WHEN v_new = 'cancelled' THEN now() ELSE completed_at END
     WHERE id = p_batch_id;
    INSERT INTO public.csv_processing_logs (batch_id, log_level, message, operation)
    VALUES (p_batch_id, 'INFO', format('batch %s (was %s)', v_new, v_batch.status), 'batch_' || p_action);
    PERFORM pg_notify('csv_batch_progress', p_batch_id::text);
    IF v_new IN ('queued', 'processing') THEN
        PERFORM pg_notify('csv_row_jobs', p_batch_id::text);
    END IF;
    RETURN v_new;
END
$$;
