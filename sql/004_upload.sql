-- Upload: turning a staged CSV into row jobs. The CLI creates the batch as the user (row-level security checks
-- that it is theirs), COPYs the validated rows into a temporary table pg_temp.csv_upload_rows (COPY cannot write to
-- a table with row-level security, and a temp table costs no WAL), then calls enqueue_csv_upload_rows in the same
-- transaction. Everything commits together or not at all.

-- Move the staged rows of the caller's session into csv_row_jobs for a batch the caller owns and has just
-- created, and queue the batch. SECURITY DEFINER because the caller may not insert jobs directly; it checks
-- ownership itself with auth.uid(), exactly as the policies would.
-- Locks: the batch row.
CREATE OR REPLACE FUNCTION enqueue_csv_upload_rows(
    p_batch_id uuid,
    p_skipped_rows integer DEFAULT 0,
    p_max_retries integer DEFAULT 3
)
RETURNS integer
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = public, pg_temp
AS $$
DECLARE
    v_owner uuid;
    v_status text;
    v_rows integer;
BEGIN
    SELECT b.user_id, b.status INTO v_owner, v_status FROM public.csv_batches b WHERE b.id = p_batch_id FOR UPDATE;
    IF NOT FOUND OR v_owner IS DISTINCT FROM auth.uid() THEN
        RAISE EXCEPTION 'no such batch: %', p_batch_id USING ERRCODE = '42501';
    END IF;
    IF v_status <> 'uploaded' THEN
        RAISE EXCEPTION 'batch % is %, not uploaded: rows can be added only once', p_batch_id, v_status
            USING ERRCODE = '55000';
    END IF;

    INSERT INTO public.csv_row_jobs (batch_id, row_number, row_data, product, trigger_text, max_retries)
    SELECT p_batch_id, s.row_number, s.row_data, s.product, s.trigger_text, greatest(p_max_retries, 0)
    FROM pg_temp.csv_upload_rows s;
    GET DIAGNOSTICS v_rows = ROW_COUNT;

    UPDATE public.csv_batches SET
        total_rows = v_rows,
        skipped_rows = greatest(p_skipped_rows, 0),
        status = CASE WHEN v_rows = 0 THEN 'completed' ELSE 'queued' END,
        completed_at = CASE WHEN v_rows = 0 THEN now() END,
        updated_at = now()
    WHERE id = p_batch_id;

    INSERT INTO public.csv_processing_logs (batch_id, log_level, message, operation, details)
    VALUES (p_batch_id, 'INFO', format('batch queued with %s rows (%s skipped)', v_rows, p_skipped_rows),
            'batch_queued', jsonb_build_object('total_rows', v_rows, 'skipped_rows', p_skipped_rows));
    PERFORM pg_notify('csv_row_jobs', p_batch_id::text);
    RETURN v_rows;
END
$$;
